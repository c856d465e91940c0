"""The model's encoding of DNA: base codes, one-hot columns scaled by conservation, coded windows
and the reverse complement."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch

BASES = "ACGT"


# Byte -> row of the one-hot table: A, C, G, T (either case) -> 0..3; everything else -> 4 (zeros).
_CODE = np.full(256, 4, dtype=np.uint8)


for _i, _b in enumerate(BASES):
    _CODE[ord(_b)] = _CODE[ord(_b.lower())] = _i


_ONE_HOT = np.vstack([np.eye(4, dtype=np.float32), np.zeros((1, 4), dtype=np.float32)])


CONSERVATION_DTYPE = np.float16     # conservation as windows travel to the device (phastCons 0..1: steps of 2^-11)


_COMPLEMENT = str.maketrans(
    "ACGTRYKMBDHVNSWacgtrykmbdhvnsw",
    "TGCAYRMKVHDBNSWtgcayrmkvhdbnsw",
)


def sequence_codes(seq: str | bytes) -> np.ndarray:
    """Base codes (uint8: A=0, C=1, G=2, T=3, anything else=4) of a sequence, case-insensitive."""
    raw = seq.encode("latin-1", errors="replace") if isinstance(seq, str) else bytes(seq)
    return _CODE[np.frombuffer(raw, dtype=np.uint8)]


def one_hot(seq: str | bytes) -> np.ndarray:
    """(4, L) float32 one-hot in A, C, G, T order; N, IUPAC codes and other letters are zero columns."""
    return one_hot_codes(sequence_codes(seq))


def one_hot_codes(codes: np.ndarray) -> np.ndarray:
    """(4, L) float32 one-hot of base codes from :func:`sequence_codes`."""
    return _ONE_HOT[codes].T.copy()


def encode(seq: str | bytes, conservation: np.ndarray | None = None) -> np.ndarray:
    """The model input for one sequence: one-hot (4, L) times exp(conservation) per base."""
    return encode_codes(sequence_codes(seq), conservation)


def encode_codes(codes: np.ndarray, conservation: np.ndarray | None = None) -> np.ndarray:
    """The model input from base codes (:func:`sequence_codes`): one-hot times exp(conservation)."""
    x = one_hot_codes(codes)
    if conservation is not None:
        cons = np.asarray(conservation, dtype=np.float32)
        if cons.shape != (x.shape[1],):
            raise ValueError(f"conservation has shape {cons.shape}, sequence length is {x.shape[1]}")
        x *= np.exp(np.nan_to_num(cons, nan=0.0))
    return x


@dataclass(frozen=True)
class CodedWindows:
    """Windows as they travel to the model's device: base codes (uint8, :func:`sequence_codes`)
    and conservation (``CONSERVATION_DTYPE``, or None without a track), each (N, length); numpy
    arrays or, after a DataLoader, tensors. :func:`encode_tensor` makes the model input of them
    on the device. An engine's windows are longer than the model's by the span of its shifts
    (:meth:`epiformer.inference.engine.Engine.coded_length`)."""

    codes: np.ndarray
    conservation: np.ndarray | None

    def __len__(self) -> int:
        return len(self.codes)

    def __getitem__(self, rows: slice) -> "CodedWindows":
        return CodedWindows(self.codes[rows], None if self.conservation is None else self.conservation[rows])

    @staticmethod
    def concatenate(parts: Sequence["CodedWindows"]) -> "CodedWindows":
        """The windows of ``parts`` in order (all with conservation, or all without)."""
        codes = np.concatenate([np.asarray(p.codes) for p in parts])
        if any(p.conservation is None for p in parts):
            return CodedWindows(codes, None)
        return CodedWindows(codes, np.concatenate([np.asarray(p.conservation) for p in parts]))

    @staticmethod
    def of(codes: np.ndarray, conservation: np.ndarray | None) -> "CodedWindows":
        """One window's codes and conservation (float32 is rounded to ``CONSERVATION_DTYPE``)."""
        cons = None if conservation is None else np.asarray(conservation).astype(CONSERVATION_DTYPE)[None]
        return CodedWindows(np.asarray(codes, np.uint8)[None], cons)


_ONE_HOT_TABLES: dict[torch.device, torch.Tensor] = {}      # _ONE_HOT, once per device


def encode_tensor(codes: torch.Tensor, conservation: torch.Tensor | None = None) -> torch.Tensor:
    """The model input, on the tensors' device: one-hot of base codes (N, L) in A, C, G, T order
    (code 4, N and the rest, a zero column) times exp(conservation) -> (N, 4, L) float32. The
    result is a transposed view of (N, L, 4), the layout the model's tower reads fastest."""
    table = _ONE_HOT_TABLES.get(codes.device)
    if table is None:
        table = _ONE_HOT_TABLES[codes.device] = torch.as_tensor(_ONE_HOT, device=codes.device)
    x = table[codes.long()]
    if conservation is not None:
        x *= torch.exp(conservation.float())[..., None]
    return x.transpose(-1, -2)


def reverse_complement(seq: str) -> str:
    """Reverse complement, keeping case; IUPAC codes map to their complements."""
    return seq.translate(_COMPLEMENT)[::-1]


def reverse_complement_encoded(x: np.ndarray) -> np.ndarray:
    """Reverse complement of encoded DNA (..., 4, L): A<->T, C<->G is a flip of the channel axis."""
    return x[..., ::-1, ::-1].copy()


def reverse_track(values: np.ndarray) -> np.ndarray:
    """Reverse a per-base or per-bin track (conservation, targets) along its last axis."""
    return np.asarray(values)[..., ::-1].copy()
