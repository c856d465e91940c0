"""Writing files safely: everything goes to a temporary name and is renamed when complete; bigWig,
bedGraph and TSV writing with the settings record of their numbers."""
from __future__ import annotations

import contextlib
import errno
import json
import os
import struct
import tempfile
from pathlib import Path
from typing import Iterable, Iterator

from epiformer.errors import UserError

BIGWIG_MAGIC, CHROM_TREE_MAGIC, INDEX_MAGIC = 0x888FFC26, 0x78CA8C91, 0x2468ACE0


LOW_SPACE_BYTES = 1 << 20   # a writer failing with less than this free on its disk failed for lack of space


class OutputError(UserError, OSError):
    """An output file that cannot be written, with a message naming it."""


def free_bytes(folder: str | os.PathLike) -> int | None:
    """Bytes this process may still write on the disk holding ``folder`` (None if unknown)."""
    try:
        stats = os.statvfs(folder)
    except OSError:
        return None
    return stats.f_bavail * stats.f_frsize


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` only if the block succeeds.

    A failure (exception, full disk, kill) leaves no file at ``path`` and removes the temporary.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as err:
        raise OutputError(f"cannot write {path}: {err.strerror or err}") from None
    os.close(fd)
    tmp = Path(tmp_name)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)
    try:
        yield tmp
        os.replace(tmp, path)
    except OSError as err:
        tmp.unlink(missing_ok=True)
        raise OutputError(f"cannot write {path}: {err.strerror or err}") from None
    except Exception as err:
        # HDF5 and bigWig writers report a full disk as ValueError or RuntimeError
        free = free_bytes(path.parent)
        tmp.unlink(missing_ok=True)
        if free is not None and free < LOW_SPACE_BYTES:
            raise OutputError(f"cannot write {path}: no space left on the device ({free:,} bytes free; "
                              f"{str(err).splitlines()[0][:200]})") from None
        raise
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


@contextlib.contextmanager
def bigwig_writer(path: str | os.PathLike, chrom_sizes: list[tuple[str, int]], max_zooms: int = 10) -> Iterator:
    """An open pyBigWig writer with its header added; on leaving the block the file is closed,
    checked and renamed onto ``path``. The bigWig library does not report failed writes, so a file
    that is incomplete, or that leaves its disk all but full, is an :class:`OutputError` and
    leaves nothing at ``path``."""
    import pyBigWig

    with atomic_path(path) as tmp:
        writer = pyBigWig.open(str(tmp), "w")
        try:
            writer.addHeader(list(chrom_sizes), maxZooms=max_zooms)
            yield writer
        finally:
            writer.close()
        free = free_bytes(tmp.parent)
        if free is not None and free < LOW_SPACE_BYTES:
            raise OSError(errno.ENOSPC, f"no space left on the device ({free:,} bytes free after writing it)")
        problem = bigwig_problem(tmp)
        if problem:
            raise OSError(errno.EIO, f"the written bigWig is incomplete ({problem})")


def bigwig_problem(path: str | os.PathLike) -> str | None:
    """Why the bigWig at ``path`` is not complete, or None: every structure its header points to
    (chromosome tree, data, indexes, zoom levels, summary) must lie inside the file with its magic
    number, as a truncated write would not leave it."""
    size = os.path.getsize(path)
    with open(path, "rb") as handle:
        def read(offset: int, fmt: str) -> tuple | None:
            length = struct.calcsize(fmt)
            if offset + length > size:
                return None
            handle.seek(offset)
            return struct.unpack(fmt, handle.read(length))

        header = read(0, "<IHHQQQHHQQIQ")
        if header is None or header[0] != BIGWIG_MAGIC:
            return "no bigWig header"
        _, _, zoom_levels, chrom_tree, full_data, full_index, _, _, _, summary, _, _ = header
        if read(chrom_tree, "<I") != (CHROM_TREE_MAGIC,):
            return "chromosome tree missing"
        if full_data >= size or (summary and read(summary, "<Qdddd") is None):
            return "data or summary past the end of the file"
        indexes = [full_index]
        for level in range(zoom_levels):
            zoom = read(64 + 24 * level, "<IIQQ")
            if zoom is None or zoom[2] >= size:
                return f"zoom level {level + 1} past the end of the file"
            indexes.append(zoom[3])
        for offset in indexes:
            tree = read(offset, "<IIQIIIIQII")
            if tree is None or tree[0] != INDEX_MAGIC or tree[7] > size:
                return "index missing or past the end of the file"
            node = read(offset + 48, "<BBH")
            item_size = 32 if node and node[0] else 24
            if node is None or offset + 52 + node[2] * item_size > size:
                return "index node past the end of the file"
    return None


def tsv_field(text: str) -> str:
    """Text kept in one TSV column: backslash, tab and line breaks written as \\, \\t, \\r, \\n."""
    return text.replace("\\", "\\\\").replace("\t", "\\t").replace("\r", "\\r").replace("\n", "\\n")


def settings_lines(settings: dict, prefix: str = "#") -> str:
    """The settings record as header lines, one ``PREFIXepiformer_settings=JSON`` line."""
    return f"{prefix}epiformer_settings={json.dumps(settings, sort_keys=True)}\n"


def bedgraph_text(track: str, rows: Iterable[tuple[str, int, int, float]]) -> str:
    """A bedGraph: its ``track type=bedGraph`` line with ``track`` (name="..." and other settings)
    and one line per (chrom, start, end, value)."""
    return f"track type=bedGraph {track}\n" + "".join(f"{c}\t{lo}\t{hi}\t{v:.5g}\n" for c, lo, hi, v in rows)
