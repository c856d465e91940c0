"""The synthetic demo genome: real transcription-factor motifs drive per-cell-type accessibility.

``make_demo_data`` writes a small genome that behaves like a real one for the model: GC content
that drifts along the chromosomes, N gaps, simple repeats, a blacklist, promoter-like peaks
shared by every cell type, CTCF sites, and enhancers whose height in each cell type depends on
which JASPAR motifs they carry (and their combination), on a weak background with count noise.
GC-rich decoys and conserved elements without motifs carry no signal, so GC or conservation
alone does not predict accessibility.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from epiformer.demo.grammar import BRAIN, Grammar
from epiformer.demo.motifs import Motif, packaged_motifs
from epiformer.genome.encoding import BASES, reverse_complement, sequence_codes
from epiformer.genome.reader import index_fasta
from epiformer.io.writing import atomic_path, bigwig_writer

CELL_TYPES: dict[str, str] = BRAIN.cell_types    # the demo genome's


BLOCK = 10          # signal bigWigs are written in 10 bp steps


DEPTH = 25.0        # pseudo read depth of the demo's count noise


CLIP = 32           # clip written to targets.txt


@dataclass
class DemoSpec:
    """What to generate; densities are per megabase."""

    seed: int = 0
    chrom_sizes: dict[str, int] = field(default_factory=lambda: {
        "chr1": 2_200_000, "chr2": 1_800_000, "chr3": 1_200_000, "chr4": 800_000})
    promoters: float = 40
    ctcf_sites: float = 40
    enhancers: float = 220
    gc_decoys: float = 60
    conserved_decoys: float = 25
    repeats: float = 150
    grammar: Grammar = BRAIN            # cell types, factors and how sites open enhancers
    depth: float = DEPTH                # read depth of the count noise (lower: noisier tracks)
    peak_scale: float = 1.0             # peak heights relative to the background (lower: weaker peaks)

    def __post_init__(self) -> None:
        if self.depth <= 0 or self.peak_scale <= 0:
            raise ValueError(f"depth and peak_scale must be positive, got {self.depth} and {self.peak_scale}")

    @classmethod
    def scaled(cls, total_mb: float = 6.0, n_chroms: int = 4, seed: int = 0, **options: Any) -> "DemoSpec":
        """``n_chroms`` chromosomes of decreasing size adding up to ``total_mb`` megabases (and any
        other field as ``options``)."""
        if n_chroms < 1 or total_mb <= 0:
            raise ValueError("need at least one chromosome and a positive size")
        weights = np.linspace(1.0, 0.4, n_chroms)
        sizes = np.round(weights / weights.sum() * total_mb * 1e6 / 1000).astype(int) * 1000
        return cls(seed=seed, chrom_sizes={f"chr{i + 1}": int(s) for i, s in enumerate(sizes)}, **options)


@dataclass
class Element:
    """A planted element: its kind, centre, the motif sites in it and its height per cell type."""

    kind: str
    chrom: str
    center: int
    heights: np.ndarray
    sites: list[tuple[str, int, str, int]] = field(default_factory=list)  # (factor, start, site, strand)
    qualities: list[float] = field(default_factory=list)  # each site's score relative to its motif's best


class _ChromosomeBuilder:
    """Builds one chromosome's sequence, conservation, elements and signal."""

    def __init__(self, name: str, size: int, spec: DemoSpec, motifs: dict[str, Motif],
                 rng: np.random.Generator) -> None:
        self.name, self.size, self.spec, self.motifs, self.rng = name, size, spec, motifs, rng
        self.grammar = spec.grammar
        self.codes = self._background_sequence()
        self.conservation = self._background_conservation()
        self.occupied = np.zeros(size, dtype=bool)
        self.gaps: list[tuple[int, int]] = []
        self.blacklist: list[tuple[int, int]] = []
        self.elements: list[Element] = []

    def _background_sequence(self) -> np.ndarray:
        """Bases with GC content drifting between about 35% and 60% in 5 kb steps."""
        n_segments = self.size // 5000 + 1
        drift = np.cumsum(self.rng.normal(0, 0.02, n_segments))
        gc = np.clip(0.46 + drift - drift.mean(), 0.34, 0.62)
        gc_per_base = np.repeat(gc, 5000)[: self.size]
        is_gc = self.rng.random(self.size) < gc_per_base
        which = self.rng.random(self.size) < 0.5
        return np.where(is_gc, np.where(which, 1, 2), np.where(which, 0, 3)).astype(np.uint8)

    def _background_conservation(self) -> np.ndarray:
        blocks = self.rng.beta(0.5, 7.0, self.size // 20 + 1)
        smooth = np.convolve(blocks, np.ones(3) / 3, mode="same")
        return np.repeat(smooth, 20)[: self.size].astype(np.float32)

    def _free(self, start: int, end: int) -> bool:
        return start >= 0 and end <= self.size and not self.occupied[start:end].any()

    def _random_free(self, width: int, margin: int = 0) -> int | None:
        """Start of a random free stretch of ``width`` with ``margin`` free on both sides, or None."""
        if self.size - width - margin <= margin:
            return None
        for _ in range(200):
            start = int(self.rng.integers(margin, self.size - width - margin))
            if self._free(start - margin, start + width + margin):
                return start
        return None

    def _write(self, start: int, seq: str) -> None:
        self.codes[start: start + len(seq)] = sequence_codes(seq)

    def add_gaps(self) -> None:
        """N at the start (telomere-like) and a few internal gaps."""
        edge = int(self.rng.integers(5_000, 12_000))
        self.gaps.append((0, edge))
        for _ in range(max(1, self.size // 1_000_000)):
            width = int(self.rng.integers(10_000, 40_000))
            start = self._random_free(width, margin=20_000)
            if start is not None:
                self.gaps.append((start, start + width))
        for start, end in self.gaps:
            self.codes[start:end] = 4
            self.conservation[start:end] = np.nan
            self.occupied[start:end] = True

    def add_blacklist(self) -> None:
        for _ in range(2):
            width = int(self.rng.integers(2_000, 6_000))
            start = self._random_free(width, margin=1_000)
            if start is not None:
                self.blacklist.append((start, start + width))
                self.occupied[start - 1_000: start + width + 1_000] = True

    def _plant(self, factor: str, lo: int, hi: int, conserved_p: float, min_score: float = 0.6) -> tuple | None:
        motif = self.motifs[factor]
        if hi - motif.width <= lo:
            return None
        site = motif.sample(self.rng, min_relative_score=min_score)
        strand = 1 if self.rng.random() < 0.5 else -1
        written = site if strand == 1 else reverse_complement(site)
        for _ in range(30):
            start = int(self.rng.integers(lo, hi - motif.width))
            if not self.occupied[start: start + motif.width].any():
                break
        else:
            return None
        self._write(start, written)
        self.occupied[start: start + motif.width] = True
        if self.rng.random() < conserved_p:
            self.conservation[start: start + motif.width] = self.rng.uniform(0.8, 1.0, motif.width)
        quality = max(motif.score(site) / motif.max_score, 0.0)
        return factor, start, written, strand, quality

    def add_elements(self) -> None:
        spec, mb = self.spec, self.size / 1e6
        kinds = (["promoter"] * int(spec.promoters * mb) + ["ctcf"] * int(spec.ctcf_sites * mb)
                 + ["enhancer"] * int(spec.enhancers * mb) + ["gc_decoy"] * int(spec.gc_decoys * mb)
                 + ["conserved_decoy"] * int(spec.conserved_decoys * mb))
        self.rng.shuffle(kinds)
        for kind in kinds:
            start = self._random_free(600, margin=300)
            if start is None:
                continue
            center = start + 300
            lo, hi = center - 150, center + 150
            heights = np.zeros(len(self.grammar.cell_types), dtype=np.float32)
            element = Element(kind, self.name, center, heights)
            if kind == "promoter":
                gc_rich = self.rng.random(500) < 0.7
                self.codes[center - 250: center + 250] = np.where(
                    gc_rich, self.rng.integers(1, 3, 500), self.rng.choice([0, 3], 500)).astype(np.uint8)
                self.conservation[center - 250: center + 250] = self.rng.uniform(0.3, 0.6, 500)
                planted = [self._plant(f, lo, hi, 0.9) for f in ("SP1", "SP1", "NRF1")]
                strength = sum(p[4] for p in planted if p)
                heights[:] = 1.2 * strength / 2.5 * self.rng.uniform(0.85, 1.15, len(heights))
            elif kind == "ctcf":
                planted = [self._plant("CTCF", lo, hi, 0.9)]
                heights[:] = 0.8 * (planted[0][4] if planted[0] else 0.0)
            elif kind == "enhancer":
                planted = self._plant_enhancer(lo, hi, heights)
            elif kind == "gc_decoy":
                gc_rich = self.rng.random(400) < 0.68
                self.codes[center - 200: center + 200] = np.where(
                    gc_rich, self.rng.integers(1, 3, 400), self.rng.choice([0, 3], 400)).astype(np.uint8)
                planted = []
            else:
                self.conservation[center - 100: center + 100] = self.rng.uniform(0.7, 1.0, 200)
                planted = []
            element.sites = [p[:4] for p in planted if p]
            element.qualities = [p[4] for p in planted if p]
            self.occupied[start: start + 600] = True
            self.elements.append(element)

    def _plant_enhancer(self, lo: int, hi: int, heights: np.ndarray) -> list:
        """The sites the grammar plans (with spacing, each further one near the one before with
        its ``near_p``); heights from the grammar."""
        grammar, planted = self.grammar, []
        for factor in grammar.plan(self.rng):
            near = planted and grammar.spacing and self.rng.random() < grammar.near_p
            start = planted[-1][1] if near else None
            site = self._plant(factor, lo, hi, 0.75) if start is None else self._plant(
                factor, max(lo, start - grammar.spacing), min(hi, start + grammar.spacing + self.motifs[factor].width),
                0.75)
            if site:
                planted.append(site)
        heights[:] = grammar.heights([p[0] for p in planted], [p[4] for p in planted], [p[1] for p in planted])
        return planted

    def add_repeats(self) -> None:
        units = ["CA", "A", "GGAA", "CAG", "TTAGGG", "AT"]
        for _ in range(int(self.spec.repeats * self.size / 1e6)):
            unit = units[int(self.rng.integers(len(units)))]
            length = int(self.rng.integers(20, 200))
            start = self._random_free(length)
            if start is not None:
                self._write(start, (unit * (length // len(unit) + 1))[:length])
                self.occupied[start: start + length] = True

    def signal(self) -> np.ndarray:
        """(cell types, blocks of 10 bp) noisy coverage: background + peaks + blacklist artefacts."""
        n_blocks = -(-self.size // BLOCK)
        n_targets = len(self.grammar.cell_types)
        expected = np.full((n_targets, n_blocks), 0.03, dtype=np.float64)
        expected *= self.rng.uniform(0.7, 1.3, (n_targets, 1))
        offsets = np.arange(-60, 61)
        shape = np.exp(-0.5 * (offsets * BLOCK / 140.0) ** 2)
        for element in self.elements:
            if not element.heights.any():
                continue
            blocks = element.center // BLOCK + offsets
            keep = (blocks >= 0) & (blocks < n_blocks)
            expected[:, blocks[keep]] += self.spec.peak_scale * element.heights[:, None] * shape[keep]
        for start, end in self.blacklist:
            expected[:, start // BLOCK: end // BLOCK] += 3.0 * self.rng.uniform(0.5, 1.5, n_targets)[:, None]
        for start, end in self.gaps:
            expected[:, start // BLOCK: -(-end // BLOCK)] = 0.0
        depth = self.spec.depth
        return (self.rng.poisson(expected * depth) / depth).astype(np.float32)

    def sequence(self) -> str:
        return np.frombuffer(b"ACGTN", np.uint8)[self.codes].tobytes().decode()


def make_demo_data(outdir: str | os.PathLike, spec: DemoSpec | None = None) -> dict[str, Path]:
    """Write the demo genome, tracks, targets.txt and variants into ``outdir``; return the paths."""
    spec = spec or DemoSpec()
    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(spec.seed)
    motifs = packaged_motifs()
    builders = []
    for name, size in spec.chrom_sizes.items():
        builder = _ChromosomeBuilder(name, size, spec, motifs, rng)
        builder.add_gaps()
        builder.add_blacklist()
        builder.add_elements()
        builder.add_repeats()
        builders.append(builder)

    paths = {"fasta": outdir / "genome.fa", "chrom_sizes": outdir / "chrom.sizes",
             "conservation": outdir / "conservation.bw", "blacklist": outdir / "blacklist.bed",
             "targets": outdir / "targets.txt", "variants": outdir / "variants.vcf",
             "elements": outdir / "elements.bed", "annotation": outdir / "annotation.bed"}
    with atomic_path(paths["fasta"]) as tmp, open(tmp, "w") as handle:
        for b in builders:
            seq = b.sequence()
            handle.write(f">{b.name}\n")
            handle.writelines(seq[i: i + 60] + "\n" for i in range(0, len(seq), 60))
    index_fasta(paths["fasta"])
    with atomic_path(paths["chrom_sizes"]) as tmp:
        tmp.write_text("".join(f"{b.name}\t{b.size}\n" for b in builders))
    header = [(b.name, b.size) for b in builders]

    with bigwig_writer(paths["conservation"], header) as bw:
        for b in builders:
            for start, end in _runs(~np.isnan(b.conservation)):
                values = np.round(b.conservation[start:end].astype(np.float64), 3)
                bw.addEntries(b.name, start, values=values, span=1, step=1)

    with atomic_path(paths["blacklist"]) as tmp:
        tmp.write_text("".join(f"{b.name}\t{s}\t{e}\n" for b in builders for s, e in b.blacklist))

    signals = [b.signal() for b in builders]
    target_lines = ["index\tidentifier\tfile\tclip\tsum_stat\tdescription\tpeak"]
    for i, (cell_type, description) in enumerate(spec.grammar.cell_types.items()):
        bigwig, peaks = outdir / f"{cell_type}.bw", outdir / f"{cell_type}.peaks.bed"
        with bigwig_writer(bigwig, header) as bw:
            for b, signal in zip(builders, signals):
                full = b.size // BLOCK
                bw.addEntries(b.name, 0, values=signal[i, :full].astype(np.float64), span=BLOCK, step=BLOCK)
                if b.size % BLOCK:
                    bw.addEntries([b.name], [full * BLOCK], ends=[b.size], values=[float(signal[i, full])])
        with atomic_path(peaks) as tmp:
            tmp.write_text("".join(
                f"{e.chrom}\t{e.center - 250}\t{e.center + 250}\t{e.kind}\t{int(min(e.heights[i], 2.5) * 400)}\n"
                for b in builders for e in b.elements if e.heights[i] >= 0.3))
        target_lines.append(f"{i}\t{cell_type}\t{bigwig.name}\t{CLIP}\tmean\t{description}\t{peaks.name}")
    with atomic_path(paths["targets"]) as tmp:
        tmp.write_text("\n".join(target_lines) + "\n")

    with atomic_path(paths["elements"]) as tmp:
        tmp.write_text("".join(
            f"{e.chrom}\t{e.center - 300}\t{e.center + 300}\t{e.kind}\t"
            f"{','.join(s[0] for s in e.sites) or '.'}\t{','.join(f'{h:.3f}' for h in e.heights)}\t"
            f"{','.join(f'{s[1]}-{s[1] + len(s[2])}' for s in e.sites) or '.'}\n"
            for b in builders for e in sorted(b.elements, key=lambda e: e.center)))

    with atomic_path(paths["annotation"]) as tmp:        # the planted elements, for the hub and the page
        tmp.write_text("".join(
            f"{e.chrom}\t{e.center - 300}\t{e.center + 300}\t{e.kind}{':' + '+'.join(x[0] for x in e.sites) if e.sites else ''}"
            f"\t0\t.\n" for b in builders for e in sorted(b.elements, key=lambda e: e.center)))

    with atomic_path(paths["variants"]) as tmp:
        tmp.write_text(_demo_vcf(builders, motifs, spec.grammar, rng))
    return paths


def _runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """[start, end) runs where ``mask`` is true."""
    padded = np.concatenate([[False], mask, [False]])
    edges = np.flatnonzero(np.diff(padded.astype(np.int8)))
    return list(zip(edges[0::2].tolist(), edges[1::2].tolist()))


def _edited_site_quality(seq: str, motif: Motif, start: int, strand: int, edit: tuple[int, str, str]) -> float:
    """A planted site's quality once a VCF edit (1-based position, ref, alt) is applied: the best
    score relative to the motif's, on the site's strand, of the windows of its width in the edited
    sequence that cover at least half of where the site now lies (an indel beside the site moves
    it whole; one inside breaks it), clipped at 0."""
    width, first, delta = motif.width, edit[0] - 1, len(edit[2]) - len(edit[1])
    ref_end = first + len(edit[1])
    lo = max(0, start - 2 * width)
    local = seq[lo: first] + edit[2] + seq[ref_end: start + 3 * width]

    kept = [x if x <= first else x + delta for x in range(start, start + width) if x <= first or x >= ref_end]
    if not kept:
        return 0.0
    site_lo, site_hi = kept[0] - lo, kept[-1] + 1 - lo          # the site's surviving bases, edited coordinates
    best = 0.0
    for offset in range(max(0, site_lo - width), site_hi):
        window = local[offset: offset + width]
        covered = min(offset + width, site_hi) - max(offset, site_lo)
        if len(window) == width and 2 * covered >= min(width, site_hi - site_lo):
            oriented = window if strand == 1 else reverse_complement(window)
            best = max(best, motif.score(oriented) / motif.max_score)
    return best


def _demo_vcf(builders: list[_ChromosomeBuilder], motifs: dict[str, Motif], grammar: Grammar,
              rng: np.random.Generator) -> str:
    """VCF of motif-disrupting and neutral SNVs and small indels, with the truth in INFO/TRUTH."""
    names = list(grammar.cell_types)
    records = []
    for b in builders:
        seq = b.sequence()
        strong = [e for e in b.elements if e.kind == "enhancer" and e.sites and e.heights.max() >= 0.8]
        rng.shuffle(strong)
        for n, element in enumerate(strong[:40]):
            hit = max(range(len(element.sites)), key=lambda k: max(
                grammar.activity.get(element.sites[k][0], {}).values(), default=0))
            factor, start, site, strand = element.sites[hit]
            motif = motifs[factor]
            active = [i for i, h in enumerate(element.heights) if h >= 0.5]
            core = motif.most_informative_position()
            pos = start + (core if strand == 1 else motif.width - 1 - core)
            kind = n % 4
            if kind < 2:
                probs = motif.probabilities[:, core]
                worst = BASES[int(probs.argmin())]
                alt = worst if strand == 1 else reverse_complement(worst)
                if alt == seq[pos]:
                    continue
                record = (b.name, pos + 1, seq[pos], alt)
            elif kind == 2:
                first = max(start, pos - 2)
                record = (b.name, first, seq[first - 1: first + 4], seq[first - 1])
            else:
                insert = "".join(BASES[i] for i in rng.integers(0, 4, 5))
                record = (b.name, pos, seq[pos - 1], seq[pos - 1] + insert)
            quality = min(element.qualities[hit], _edited_site_quality(seq, motif, start, strand, record[1:]))
            qualities = [quality if k == hit else q for k, q in enumerate(element.qualities)]
            effect = grammar.heights([x[0] for x in element.sites], qualities,
                                     [x[1] for x in element.sites]) - element.heights
            info = (f"TRUTH=disrupting;MOTIF={factor};CELLTYPES={','.join(names[i] for i in active) or '.'};"
                    f"EFFECT={','.join(f'{effect[i]:.3f}' for i in active) or '.'}")
            records.append((*record, info))
        centers = np.array([e.center for e in b.elements])
        neutral = 0
        for _ in range(20_000):
            if neutral == 40:
                break
            pos = int(rng.integers(100, b.size - 100))
            if seq[pos] == "N" or b.occupied[pos] or (centers.size and np.abs(centers - pos).min() < 2_000):
                continue
            info = "TRUTH=neutral;MOTIF=.;CELLTYPES=.;EFFECT=."
            if neutral % 4 == 3:
                records.append((b.name, pos + 1, seq[pos: pos + 3], seq[pos], info))
            else:
                alt = BASES[(BASES.index(seq[pos]) + 1 + int(rng.integers(3))) % 4]
                records.append((b.name, pos + 1, seq[pos], alt, info))
            neutral += 1
    lines = ["##fileformat=VCFv4.2", "##source=epiformer demo-data",
             *(f"##contig=<ID={b.name},length={b.size}>" for b in builders),
             '##INFO=<ID=TRUTH,Number=1,Type=String,Description="disrupting: alters a planted '
             'motif of an active enhancer; neutral: far from any element">',
             '##INFO=<ID=MOTIF,Number=1,Type=String,Description="Motif the variant alters">',
             '##INFO=<ID=CELLTYPES,Number=.,Type=String,Description="Cell types where the element is open">',
             '##INFO=<ID=EFFECT,Number=.,Type=Float,Description="True change of the element\'s peak height in each '
             'of CELLTYPES (the site rescored against its motif after the variant)">',
             "#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO"]
    order = {b.name: i for i, b in enumerate(builders)}
    for i, (chrom, pos, ref, alt, info) in enumerate(sorted(records, key=lambda r: (order[r[0]], r[1]))):
        lines.append(f"{chrom}\t{pos}\tdemo{i + 1}\t{ref}\t{alt}\t.\tPASS\t{info}")
    return "\n".join(lines) + "\n"
