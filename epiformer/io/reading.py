"""Reading text files as users bring them (gzip, CRLF, byte-order marks), tables with a settings
record, and the checksums of inputs."""
from __future__ import annotations

import gzip
import json
import os
from pathlib import Path


def read_table(path: str | os.PathLike) -> tuple[dict, list[list[str]]]:
    """A TSV written with :func:`settings_lines`: its settings record ({} without one) and its
    rows, the column header first."""
    settings: dict = {}
    rows = []
    for line in Path(path).read_text().splitlines():
        if line.startswith("#epiformer_settings="):
            settings = json.loads(line.split("=", 1)[1])
        elif not line.startswith("#"):
            rows.append(line.split("\t"))
    return settings, rows


_CHECKSUMS: dict[tuple[str, int, int], str] = {}


def open_text(path: str | os.PathLike):
    """A text handle on a plain or gzip/bgzip-compressed file (told by its first bytes, not its name)."""
    with open(path, "rb") as handle:
        magic = handle.read(2)
    if magic == b"\x1f\x8b":
        return gzip.open(path, "rt", newline="")
    return open(path, newline="")


def sha256_file(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a file's bytes, read in 1 MiB blocks; kept for the process while the file's
    size and modification time stay the same (a conservation track can be gigabytes)."""
    import hashlib

    stat = os.stat(path)
    key = (os.path.realpath(path), stat.st_size, stat.st_mtime_ns)
    if key not in _CHECKSUMS:
        digest = hashlib.sha256()
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
        _CHECKSUMS[key] = digest.hexdigest()
    return _CHECKSUMS[key]
