"""Writing UCSC .2bit files (the genome of an assembly hub; igv.js reads them too), and the plain
FASTA copy of a genome that ships in another form.

Layout (all integers 32-bit little-endian): header (signature 0x1A412743, version 0, sequence
count, reserved 0); an index of (name length byte, name, record offset); then per sequence its
length, N blocks (count, starts, sizes), lower-case mask blocks (count, starts, sizes), a
reserved 0 and the bases packed four to a byte, first base in the high bits, T=0 C=1 A=2 G=3.
Anything other than A/C/G/T is stored as an N block; case is kept through the mask blocks.
"""
from __future__ import annotations

import os
import struct
from pathlib import Path

import numpy as np

from epiformer.genome.reader import BLOCK_BP, TWOBIT_SIGNATURE, Genome, index_fasta
from epiformer.io.writing import OutputError, atomic_path

# Byte -> 2-bit code (T=0, C=1, A=2, G=3); other letters get 0 and are covered by N blocks.
_PACK = np.zeros(256, dtype=np.uint8)
for _base, _code in zip("TCAG", range(4)):
    _PACK[ord(_base)] = _PACK[ord(_base.lower())] = _code
_IS_BASE = np.zeros(256, dtype=bool)
for _base in "ACGTacgt":
    _IS_BASE[ord(_base)] = True
_IS_LOWER = np.zeros(256, dtype=bool)
_IS_LOWER[ord("a"):ord("z") + 1] = True


def _runs(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Starts and lengths of the runs of True in a boolean array."""
    padded = np.concatenate([[False], mask, [False]])
    edges = np.flatnonzero(np.diff(padded.astype(np.int8)))
    starts, ends = edges[0::2], edges[1::2]
    return starts.astype(np.uint32), (ends - starts).astype(np.uint32)


def _blocks(starts: np.ndarray, sizes: np.ndarray) -> bytes:
    return struct.pack("<I", len(starts)) + starts.astype("<u4").tobytes() + sizes.astype("<u4").tobytes()


def encode_record(sequence: bytes | str) -> bytes:
    """One sequence's .2bit record (length, N blocks, mask blocks, reserved, packed bases)."""
    raw = np.frombuffer(sequence.encode("ascii") if isinstance(sequence, str) else bytes(sequence), np.uint8)
    codes = _PACK[raw]
    padded = np.zeros(-(-len(codes) // 4) * 4, dtype=np.uint8)
    padded[: len(codes)] = codes
    quads = padded.reshape(-1, 4)
    packed = (quads[:, 0] << 6) | (quads[:, 1] << 4) | (quads[:, 2] << 2) | quads[:, 3]
    n_starts, n_sizes = _runs(~_IS_BASE[raw])
    mask_starts, mask_sizes = _runs(_IS_LOWER[raw])
    return (struct.pack("<I", len(raw)) + _blocks(n_starts, n_sizes) + _blocks(mask_starts, mask_sizes)
            + struct.pack("<I", 0) + packed.astype(np.uint8).tobytes())


def write_twobit(fasta: str | os.PathLike, out: str | os.PathLike) -> Path:
    """Write every sequence of ``fasta`` (in file order) to ``out`` as .2bit, atomically.

    The records are written one chromosome at a time (memory: one chromosome), then the index
    with their offsets is written over its placeholder at the start."""
    out = Path(out)
    with Genome(fasta) as genome:
        names = list(genome.chrom_sizes)
        for name in names:
            if len(name.encode()) > 255:
                raise OutputError(f"cannot write {out}: sequence name {name[:40]}... is longer than 255 bytes")
        index_size = sum(1 + len(n.encode()) + 4 for n in names)
        with atomic_path(out) as tmp, open(tmp, "wb") as handle:
            handle.write(struct.pack("<IIII", TWOBIT_SIGNATURE, 0, len(names), 0) + bytes(index_size))
            offsets = []
            for name in names:
                offsets.append(handle.tell())
                handle.write(encode_record(genome.sequence(name, 0, genome.chrom_sizes[name])
                                           .encode("ascii", errors="replace")))
            if handle.tell() >= 2 ** 32:
                raise OutputError(f"cannot write {out}: the genome needs a 64-bit .2bit file (over 4 GB)")
            handle.seek(16)
            for name, offset in zip(names, offsets):
                encoded = name.encode()
                handle.write(struct.pack("<B", len(encoded)) + encoded + struct.pack("<I", offset))
    return out


def write_fasta(genome_file: str | os.PathLike, out: str | os.PathLike, width: int = 60) -> Path:
    """Write every sequence of a genome in any form :class:`Genome` reads (a bgzip-compressed
    FASTA, a .2bit) to ``out`` as a plain FASTA, atomically, and index it (``out.fai``); memory:
    ``BLOCK_BP`` bases."""
    out = Path(out)
    step = BLOCK_BP // width * width
    with Genome(genome_file) as genome, atomic_path(out) as tmp, open(tmp, "w") as handle:
        for name, size in genome.chrom_sizes.items():
            handle.write(f">{name}\n")
            for lo in range(0, size, step):
                seq = genome.sequence(name, lo, min(lo + step, size))
                handle.writelines(seq[i: i + width] + "\n" for i in range(0, len(seq), width))
    index_fasta(out)
    return out
