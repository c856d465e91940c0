"""targets.txt (the table of tracks to learn) and turning bigWig signal and peaks into per-bin values."""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from epiformer.errors import UserError
from epiformer.genome.chrom_names import ChromNames
from epiformer.genome.interval_index import IntervalIndex
from epiformer.genome.intervals import read_bed_intervals

SUM_STATS = ("mean", "median", "sum")
MISSING_RULES = ("zero", "nan")
REQUIRED_COLUMNS = ("identifier", "file", "clip", "sum_stat", "description")


class TargetsError(UserError, ValueError):
    """A targets table that cannot be used, with a message naming the file, line or column."""


@dataclass(frozen=True)
class Target:
    """One row of targets.txt: a signal bigWig, how to bin it, and an optional peak BED."""

    index: int
    identifier: str
    file: Path
    clip: float
    sum_stat: str
    description: str
    peak: Path | None = None
    scale: float = 1.0

    def to_dict(self) -> dict:
        return {"index": self.index, "identifier": self.identifier, "file": str(self.file),
                "clip": self.clip, "scale": self.scale, "sum_stat": self.sum_stat,
                "description": self.description, "peak": str(self.peak) if self.peak else None}


def _resolve(value: str, folder: Path) -> Path:
    """A path as written, or relative to the targets file's folder when that is where it exists."""
    path = Path(value).expanduser()
    if path.is_absolute() or path.exists():
        return path
    beside = folder / path
    return beside if beside.exists() else path


def read_targets(path: str | os.PathLike) -> list[Target]:
    """Read a tab-separated targets.txt with a header line.

    Columns (any order): an optional ``index`` (or unnamed first column), ``identifier``,
    ``file``, ``clip``, ``sum_stat`` (mean, median or sum), ``description``, and optional
    ``peak`` (a BED of peaks, for per-bin labels) and ``scale`` (a multiplier applied before the
    clip). Relative paths are taken as written or, failing that, beside targets.txt.
    """
    path = Path(path)
    if not path.is_file():
        raise TargetsError(f"targets file {path}: no such file")
    raw = path.read_bytes()
    try:
        lines = raw.decode("utf-8-sig").splitlines()        # a byte-order mark, as Excel writes, is dropped
    except UnicodeDecodeError as err:
        line_no = raw[:err.start].count(b"\n") + 1
        raise TargetsError(f"{path}, line {line_no}: not UTF-8 text (save it as tab-separated UTF-8 text)") from None
    rows = [(n, line) for n, line in enumerate(lines, 1) if line.strip()]
    if not rows:
        raise TargetsError(f"targets file {path} is empty")
    header_no, header_line = rows[0]
    header = [h.strip() for h in header_line.split("\t")]
    if header and header[0] == "":
        header[0] = "index"
    missing = [c for c in REQUIRED_COLUMNS if c not in header]
    if missing:
        raise TargetsError(f"{path}, line {header_no}: missing column{'s' if len(missing) > 1 else ''} "
                           f"{', '.join(missing)} (the header has: {', '.join(header)}; columns are "
                           f"tab-separated)")
    targets: list[Target] = []
    for line_no, line in rows[1:]:
        fields = line.split("\t")
        if len(fields) != len(header):
            raise TargetsError(f"{path}, line {line_no}: expected {len(header)} tab-separated fields "
                               f"({', '.join(header)}), found {len(fields)}")
        row = dict(zip(header, (f.strip() for f in fields)))
        where = f"{path}, line {line_no}"
        try:
            clip = float(row["clip"])
        except ValueError:
            raise TargetsError(f"{where}: clip must be a number, got {row['clip']!r}") from None
        try:
            scale = float(row.get("scale") or 1.0)
        except ValueError:
            raise TargetsError(f"{where}: scale must be a number, got {row['scale']!r}") from None
        if row["sum_stat"] not in SUM_STATS:
            raise TargetsError(f"{where}: sum_stat must be one of {', '.join(SUM_STATS)}, "
                               f"got {row['sum_stat']!r}")
        if not row["identifier"]:
            raise TargetsError(f"{where}: empty identifier")
        if clip <= 0:
            raise TargetsError(f"{where}: clip must be positive, got {row['clip']}")
        peak = row.get("peak") or ""
        targets.append(Target(
            index=len(targets), identifier=row["identifier"], file=_resolve(row["file"], path.parent),
            clip=clip, sum_stat=row["sum_stat"], description=row["description"],
            peak=_resolve(peak, path.parent) if peak not in ("", ".", "NA") else None, scale=scale))
    if not targets:
        raise TargetsError(f"targets file {path} lists no targets below its header")
    seen: set[str] = set()
    for target in targets:
        if target.identifier in seen:
            raise TargetsError(f"{path}: identifier {target.identifier!r} appears twice")
        seen.add(target.identifier)
    return targets


def fill_missing(values: np.ndarray, missing: str, without_data: np.ndarray | None = None) -> np.ndarray:
    """Per-base bigWig values with the bases that have no data (NaN) counted as 0
    (``missing="zero"``, the convention of deepTools and basenji, so a bigWig that omits
    zero-coverage stretches gives the same targets as one that writes them) or left NaN
    (``"nan"``: left out of their bin's statistic; a bin without any data is masked). Zeros are
    written into ``values`` itself; ``without_data`` is its NaN mask when the caller has it."""
    if missing not in MISSING_RULES:
        raise ValueError(f"missing must be one of {MISSING_RULES}, got {missing!r}")
    if missing == "zero":
        values[np.isnan(values) if without_data is None else without_data] = 0.0
    return values


def bins_without_data(missing: np.ndarray, bin_size: int) -> int:
    """How many bins of a per-base mask of bases without data (L,) have no base with data."""
    return int(missing.reshape(-1, bin_size).all(axis=1).sum())


def bin_values(values: np.ndarray, bin_size: int, sum_stat: str, clip: float,
               scale: float = 1.0) -> np.ndarray:
    """Per-bin statistic of per-base values (..., L) -> (..., L / bin_size) float32.

    Bases without data (NaN) are left out of the statistic; a bin with no data at all is NaN
    (masked in training). The statistic is multiplied by ``scale`` and clipped to [0, clip].
    """
    values = np.asarray(values, dtype=np.float32)
    if values.shape[-1] % bin_size:
        raise ValueError(f"length {values.shape[-1]} is not a multiple of bin_size {bin_size}")
    bins = values.reshape(*values.shape[:-1], values.shape[-1] // bin_size, bin_size)
    if sum_stat not in SUM_STATS:
        raise ValueError(f"sum_stat must be one of {SUM_STATS}, got {sum_stat!r}")
    if not np.isnan(bins).any():
        stat = {"sum": np.sum, "mean": np.mean, "median": np.median}[sum_stat](bins, axis=-1)
        return np.clip(stat * scale, 0.0, clip).astype(np.float32)
    present = ~np.isnan(bins)
    count = present.sum(axis=-1)
    if sum_stat == "sum":
        stat = np.where(present, bins, 0.0).sum(axis=-1)
    elif sum_stat == "mean":
        stat = np.where(present, bins, 0.0).sum(axis=-1) / np.maximum(count, 1)
    else:
        stat = np.nanmedian(np.where(count[..., None] > 0, bins, 0.0), axis=-1)
    stat = np.clip(stat * scale, 0.0, clip)
    return np.where(count > 0, stat, np.nan).astype(np.float32)


class PeakSet:
    """Peaks of one BED file, per chromosome, for labelling bins that overlap a peak."""

    def __init__(self, path: str | os.PathLike, names: ChromNames | None = None) -> None:
        """``names`` maps the BED's chromosome names onto the genome's (peaks on a chromosome it
        cannot map are skipped, counted there); without it they are taken as written."""
        self.path = Path(path)
        intervals = read_bed_intervals(self.path, "peak file")
        self._index = IntervalIndex(names.intervals(intervals) if names else list(intervals))

    @property
    def chroms(self) -> set[str]:
        return self._index.chroms

    def labels(self, chrom: str, start: int, end: int, bin_size: int) -> np.ndarray:
        """(bins,) uint8: 1 where the bin overlaps any peak by at least one base."""
        starts = start + bin_size * np.arange((end - start) // bin_size)
        return self._index.overlaps(chrom, starts, starts + bin_size).astype(np.uint8)
