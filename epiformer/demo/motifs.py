"""Transcription-factor motifs: JASPAR matrices, sampling binding sites and scoring them."""
from __future__ import annotations

import os
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np

from epiformer.genome.encoding import BASES, sequence_codes


@dataclass(frozen=True)
class Motif:
    """A position frequency matrix (4 x width, rows A, C, G, T) with its JASPAR id and factor name."""

    matrix_id: str
    name: str
    counts: np.ndarray

    @property
    def width(self) -> int:
        return self.counts.shape[1]

    @property
    def probabilities(self) -> np.ndarray:
        """Base probabilities per position, with a pseudocount of 1% of the column spread evenly."""
        counts = self.counts + 0.0025 * self.counts.sum(axis=0, keepdims=True)
        return counts / counts.sum(axis=0, keepdims=True)

    @property
    def log_odds(self) -> np.ndarray:
        """log2(p / 0.25) per position and base."""
        return np.log2(self.probabilities / 0.25)

    @property
    def max_score(self) -> float:
        return float(self.log_odds.max(axis=0).sum())

    def sample(self, rng: np.random.Generator, min_relative_score: float = 0.0) -> str:
        """A binding site drawn base by base from the matrix, redrawn (up to 100 times) until it
        scores at least ``min_relative_score`` times the best possible score."""
        cumulative = self.probabilities.cumsum(axis=0)
        for _ in range(100):
            codes = (rng.random(self.width)[None, :] > cumulative).sum(axis=0).clip(0, 3)
            site = "".join(BASES[c] for c in codes)
            if self.score(site) >= min_relative_score * self.max_score:
                break
        return site

    def score(self, site: str) -> float:
        """Log-odds score of a site of the motif's width (N and other letters score 0)."""
        codes = sequence_codes(site)
        if len(codes) != self.width:
            raise ValueError(f"site of length {len(codes)} for motif {self.name} of width {self.width}")
        known = codes < 4
        return float(self.log_odds[codes[known], np.flatnonzero(known)].sum())

    def most_informative_position(self) -> int:
        return int(self.probabilities.max(axis=0).argmax())


def read_jaspar(path: str | os.PathLike) -> dict[str, Motif]:
    """Read matrices in JASPAR format (``>ID NAME`` then four ``X [ counts ]`` rows), keyed by name."""
    path = Path(path)
    motifs: dict[str, Motif] = {}
    lines = [line.strip() for line in path.read_text().splitlines() if line.strip()]
    for i in range(0, len(lines), 5):
        header = lines[i]
        if not header.startswith(">") or i + 4 >= len(lines):
            raise ValueError(f"{path}, line {i + 1}: expected '>ID NAME' followed by four rows")
        matrix_id, _, name = header[1:].partition("\t") if "\t" in header else header[1:].partition(" ")
        rows = []
        for offset, base in enumerate(BASES, 1):
            row = lines[i + offset]
            if not row.startswith(base) or "[" not in row:
                raise ValueError(f"{path}, line {i + offset + 1}: expected the {base} row")
            rows.append([float(v) for v in row[row.index("[") + 1: row.index("]")].split()])
        motifs[name.strip()] = Motif(matrix_id.strip(), name.strip(), np.array(rows))
    return motifs


def demo_motifs() -> dict[str, Motif]:
    """The demo genome's JASPAR 2024 matrices (see epiformer/demo/data/README.md)."""
    return read_jaspar(Path(str(resources.files("epiformer.demo") / "data" / "demo_motifs.jaspar")))


def packaged_motifs() -> dict[str, Motif]:
    """Every matrix the package ships: the demo's and one per further factor family, from which
    drawn grammars choose (epiformer.demo.grammar)."""
    drawn = read_jaspar(Path(str(resources.files("epiformer.demo") / "data" / "drawn_motifs.jaspar")))
    return {**drawn, **demo_motifs()}
