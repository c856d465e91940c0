"""What opens a synthetic enhancer in which cell type: the factors' activities and how sites add up.

:data:`BRAIN` is the demo genome's grammar (eight brain cell types, eleven lineage factors and
AP-1). :func:`drawn_grammar` draws grammars of other designs from the packaged JASPAR matrices:
any number of cell types, each with factors of its own too weak to open an element alone, a
factor shared by every cell type, and pairs of factors that act together only when their sites
lie close (cooperativity with spacing). bench/bench_train.py trains on families of such genomes.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from epiformer.demo.motifs import packaged_motifs

BRAIN_CELL_TYPES: dict[str, str] = {
    "HIP": "hippocampal neurons",
    "ASCT": "astrocytes",
    "OPC": "oligodendrocyte precursor cells",
    "OGC": "oligodendrocytes",
    "MGC": "microglia",
    "VIP": "VIP interneurons",
    "ITL23": "L2/3 intratelencephalic neurons",
    "ET": "L5 extratelencephalic neurons",
}

# How strongly a bound factor opens chromatin in each brain cell type (absent = 0).
BRAIN_ACTIVITY: dict[str, dict[str, float]] = {
    "SPI1": {"MGC": 1.0},
    "IRF8": {"MGC": 0.7},
    "SOX10": {"OPC": 0.7, "OGC": 1.0},
    "OLIG2": {"OPC": 1.0, "OGC": 0.4},
    "NFIA": {"ASCT": 1.0, "OPC": 0.2},
    "SOX9": {"ASCT": 0.8, "OPC": 0.2},
    "NEUROD1": {"HIP": 1.0, "ITL23": 0.3, "ET": 0.4},
    "MEF2C": {"HIP": 0.3, "VIP": 0.6, "ITL23": 0.7, "ET": 0.5, "MGC": 0.3},
    "DLX2": {"VIP": 1.0},
    "FEZF2": {"ET": 1.0},
    "RORB": {"ITL23": 1.0},
    "FOS::JUN": {ct: 0.25 for ct in BRAIN_CELL_TYPES},
}

STRUCTURAL = ("CTCF", "SP1", "NRF1")     # the promoters' and insulators' factors, never drawn
DRIVES = 0.15       # a site's contribution from which its factor counts as driving a cell type
MAX_HEIGHT = 2.2    # an element's height saturates here


@dataclass(frozen=True)
class Grammar:
    """Cell types, each factor's activity in them, and the rule from an enhancer's sites to its
    height per cell type: the drive is the sum of activity x site quality; two distinct factors
    that both drive a cell type multiply it by ``synergy`` (with ``spacing``, only when two of
    their sites lie within that many bases); the height is
    ``MAX_HEIGHT * (1 - exp(-1.1 * (drive - threshold)))`` above ``threshold``, else 0.

    Enhancers are planned as ``plan`` says: a primary cell-type factor, more sites of its
    lineage (factors that share a cell type with it) to ``site_counts`` (with ``site_p``), and the
    shared factors with ``shared_p``; with ``spacing``, each further site lands within it of the
    one before with probability ``near_p``."""

    cell_types: dict[str, str]
    activity: dict[str, dict[str, float]]
    shared: tuple[str, ...] = ()
    shared_p: float = 0.3
    site_counts: tuple[int, ...] = (1, 2, 3)
    site_p: tuple[float, ...] = (0.35, 0.4, 0.25)
    threshold: float = 0.0
    synergy: float = 1.6
    spacing: int = 0
    near_p: float = 0.0

    @property
    def specific(self) -> list[str]:
        """The cell-type factors (every factor but the shared ones), in activity order."""
        return [f for f in self.activity if f not in self.shared]

    def plan(self, rng: np.random.Generator) -> list[str]:
        """An enhancer's factors, the primary first."""
        specific = self.specific
        primary = specific[int(rng.integers(len(specific)))]
        lineage = [f for f in specific if set(self.activity[f]) & set(self.activity[primary])]
        n_sites = int(rng.choice(self.site_counts, p=self.site_p))
        factors = [primary] + [str(rng.choice(lineage)) for _ in range(n_sites - 1)]
        if self.shared and rng.random() < self.shared_p:
            factors.extend(self.shared)
        return factors

    def heights(self, factors: list[str], qualities: list[float], starts: list[int] | None = None) -> np.ndarray:
        """An enhancer's peak height per cell type from its sites (factor, quality, start)."""
        heights = np.zeros(len(self.cell_types), dtype=np.float32)
        for i, ct in enumerate(self.cell_types):
            contributions = [self.activity.get(f, {}).get(ct, 0.0) * q for f, q in zip(factors, qualities)]
            drive = sum(contributions)
            driving = [k for k, c in enumerate(contributions) if c > DRIVES]
            if len({factors[k] for k in driving}) >= 2 and self._cooperate(factors, driving, starts):
                drive *= self.synergy
            if drive > self.threshold:
                heights[i] = MAX_HEIGHT * (1.0 - np.exp(-1.1 * (drive - self.threshold)))
        return heights

    def _cooperate(self, factors: list[str], driving: list[int], starts: list[int] | None) -> bool:
        """Whether the driving sites act together: always without spacing; else when two of
        distinct factors lie within ``spacing``."""
        if not self.spacing:
            return True
        if starts is None:
            raise ValueError("this grammar's synergy depends on where the sites lie: give their starts")
        return any(factors[a] != factors[b] and abs(starts[a] - starts[b]) <= self.spacing
                   for n, a in enumerate(driving) for b in driving[n + 1:])


BRAIN = Grammar(BRAIN_CELL_TYPES, BRAIN_ACTIVITY, shared=("FOS::JUN",))


def drawn_grammar(seed: int, cell_types: int = 5, factors_per_cell_type: int = 2, sites_needed: int = 2,
                  spacing: int = 40) -> Grammar:
    """A grammar drawn with ``seed`` from the packaged matrices (structural ones aside).

    Each of ``cell_types`` cell types (3 to 12) gets ``factors_per_cell_type`` factors of its own
    (activity 0.55 to 0.95; about one in four also weakly, 0.3, in another cell type) and one
    factor is shared by all (0.4). A site contributes its factor's activity times its quality (0.6
    to 1), so no site opens an element alone: with ``sites_needed`` 2 the threshold (1.0) needs a
    second site, and with 3 (threshold 1.9) two sites reach it only when two distinct factors lie
    within ``spacing`` bases (their drive then counts x1.6), else a third. Enhancers carry one to
    four sites (and the shared factor's with probability 0.4).
    """
    if not 3 <= cell_types <= 12:
        raise ValueError(f"cell_types must be 3 to 12, got {cell_types}")
    if sites_needed not in (2, 3):
        raise ValueError(f"sites_needed must be 2 or 3, got {sites_needed}")
    if factors_per_cell_type < 1 or spacing < 0:
        raise ValueError("factors_per_cell_type must be at least 1 and spacing at least 0")
    rng = np.random.default_rng([seed, 36])
    pool = sorted(set(packaged_motifs()) - set(STRUCTURAL))
    needed = cell_types * factors_per_cell_type + 1
    if needed > len(pool):
        raise ValueError(f"{cell_types} cell types x {factors_per_cell_type} factors need {needed} motifs; "
                         f"the packaged files hold {len(pool)}")
    chosen = [str(f) for f in rng.choice(pool, needed, replace=False)]
    names = {f"CT{i + 1:02d}": f"drawn cell type {i + 1}" for i in range(cell_types)}
    order = list(names)
    activity: dict[str, dict[str, float]] = {}
    for k, factor in enumerate(chosen[1:]):
        home = order[k // factors_per_cell_type]
        activity[factor] = {home: round(float(rng.uniform(0.55, 0.95)), 3)}
        if rng.random() < 0.25:
            other = order[(order.index(home) + 1 + int(rng.integers(cell_types - 1))) % cell_types]
            activity[factor][other] = 0.3
    activity[chosen[0]] = {ct: 0.4 for ct in names}
    threshold = 1.0 if sites_needed == 2 else 1.9     # one site gives at most 0.95, two at most 1.9
    return Grammar(names, activity, shared=(chosen[0],), shared_p=0.4, site_counts=(1, 2, 3, 4),
                   site_p=(0.3, 0.35, 0.25, 0.1), threshold=threshold, synergy=1.6, spacing=spacing,
                   near_p=0.5 if spacing else 0.0)
