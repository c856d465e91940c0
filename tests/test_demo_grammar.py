"""Genomes of other designs: drawn grammars (cell types, factors too weak alone, a shared factor,
spacing) and weaker, noisier tracks, from ``epiformer demo-data``'s new options."""
import subprocess
import sys

import numpy as np
import pyBigWig
import pytest

from epiformer.demo.grammar import BRAIN, MAX_HEIGHT, drawn_grammar
from epiformer.demo.motifs import demo_motifs, packaged_motifs
from epiformer.demo.synthetic_genome import DemoSpec, make_demo_data
from epiformer.genome.targets import read_targets


def test_the_brain_grammar_opens_with_one_site_and_pairs_act_together():
    """The demo's rule: one site opens its factor's cell types; two distinct lineage factors x1.6."""
    alone = BRAIN.heights(["SPI1"], [1.0])
    assert alone[list(BRAIN.cell_types).index("MGC")] == pytest.approx(MAX_HEIGHT * (1 - np.exp(-1.1)))
    assert np.count_nonzero(alone) == 1
    pair = BRAIN.heights(["SPI1", "IRF8"], [1.0, 1.0])
    assert pair[list(BRAIN.cell_types).index("MGC")] == pytest.approx(MAX_HEIGHT * (1 - np.exp(-1.1 * 1.7 * 1.6)))


@pytest.mark.parametrize("sites_needed", [2, 3])
def test_a_drawn_grammar_needs_more_than_one_site(sites_needed):
    grammar = drawn_grammar(4, cell_types=4, sites_needed=sites_needed, spacing=40)
    assert list(grammar.cell_types) == ["CT01", "CT02", "CT03", "CT04"]
    (shared,) = grammar.shared
    assert set(grammar.activity[shared]) == set(grammar.cell_types), "the shared factor acts in every cell type"
    for factor in grammar.specific:
        assert not grammar.heights([factor], [1.0], [0]).any(), f"{factor} alone opens nothing"
        assert not grammar.heights([shared], [1.0], [0]).any()
    home = {ct: [f for f in grammar.specific if grammar.activity[f].get(ct, 0) > 0.5] for ct in grammar.cell_types}
    pairs = [(grammar.activity[a][ct] + grammar.activity[b][ct], ct, a, b)
             for ct, fs in home.items() for a in fs for b in fs if a < b]
    drive, ct, first, second = max(pairs)
    assert drive * grammar.synergy > grammar.threshold, "the strongest pair opens an element when close"
    row = list(grammar.cell_types).index(ct)
    far = grammar.heights([first, second], [1.0, 1.0], [0, 200])
    close = grammar.heights([first, second], [1.0, 1.0], [0, 30])
    assert close[row] > far[row], "two distinct factors within the spacing act together"
    assert (far[row] > 0) == (drive > grammar.threshold)
    if sites_needed == 3:
        assert far[row] == 0, "two sites far apart stay below the threshold for three"
        third = grammar.heights([first, second, first], [1.0, 1.0, 1.0], [0, 200, 100])
        assert third[row] > 0
    with pytest.raises(ValueError, match="starts"):
        grammar.heights([first, second], [1.0, 1.0])


def test_drawn_grammars_follow_the_seed_and_their_bounds():
    assert drawn_grammar(1) == drawn_grammar(1)
    assert drawn_grammar(1).activity != drawn_grammar(2).activity, "the motif set is drawn with the seed"
    assert len(drawn_grammar(3, cell_types=12).cell_types) == 12
    pool = set(packaged_motifs()) - {"CTCF", "SP1", "NRF1"}
    assert set(drawn_grammar(3, cell_types=12).activity) <= pool
    assert len(packaged_motifs()) > 3 * len(demo_motifs()), "families beyond the demo's factors"
    for bad in ({"cell_types": 2}, {"cell_types": 13}, {"sites_needed": 4}, {"factors_per_cell_type": 0}):
        with pytest.raises(ValueError):
            drawn_grammar(0, **bad)
    with pytest.raises(ValueError, match="motifs"):
        drawn_grammar(0, cell_types=12, factors_per_cell_type=6)


def test_a_drawn_genome_has_its_cell_types_and_single_sites_stay_closed(tmp_path):
    grammar = drawn_grammar(5, cell_types=3, sites_needed=2)
    paths = make_demo_data(tmp_path, DemoSpec.scaled(total_mb=0.6, n_chroms=2, seed=5, grammar=grammar))
    assert [t.identifier for t in read_targets(paths["targets"])] == ["CT01", "CT02", "CT03"]
    enhancers = [line.split("\t") for line in paths["elements"].read_text().splitlines() if "\tenhancer\t" in line]
    heights = {tuple(r[4].split(",")): [float(h) for h in r[5].split(",")] for r in enhancers}
    single = [h for factors, h in heights.items() if len(factors) == 1]
    several = [h for factors, h in heights.items() if len(set(factors) - set(grammar.shared)) >= 2]
    assert single and not any(max(h) for h in single), "one site opens no element"
    assert several and np.mean([max(h) > 0.3 for h in several]) > 0.5
    records = [line.split("\t") for line in paths["variants"].read_text().splitlines() if "TRUTH=disrupting" in line]
    assert records
    cells = {c for r in records for c in r[7].split("CELLTYPES=")[1].split(";")[0].split(",") if c != "."}
    assert cells <= set(grammar.cell_types)


def background_and_peaks(folder, cell_type: str) -> tuple[np.ndarray, float]:
    """The signal far from elements (first 200 kb of chr1 past the gap, elements masked), and the
    mean signal at the enhancers' centres."""
    rows = [line.split("\t") for line in (folder / "elements.bed").read_text().splitlines()]
    with pyBigWig.open(str(folder / f"{cell_type}.bw")) as bw:
        values = bw.values("chr1", 20_000, 220_000, numpy=True)
        for r in rows:
            if r[0] == "chr1" and 20_000 <= int(r[1]) and int(r[2]) <= 220_000:
                values[int(r[1]) - 20_000 - 1000: int(r[2]) - 20_000 + 1000] = np.nan
        peaks = np.mean([np.nanmean(bw.values(r[0], int(r[1]) + 250, int(r[2]) - 250, numpy=True))
                         for r in rows if r[3] == "enhancer"])
    return values[~np.isnan(values)], float(peaks)


def test_depth_and_peak_scale_make_noisier_and_weaker_tracks(tmp_path):
    made = {name: make_demo_data(tmp_path / name, DemoSpec.scaled(total_mb=0.6, n_chroms=2, seed=9, **options))
            for name, options in {"demo": {}, "noisy": {"depth": 5.0}, "weak": {"peak_scale": 0.5}}.items()}
    demo_background, demo_peaks = background_and_peaks(made["demo"]["fasta"].parent, "MGC")
    noisy_background, _ = background_and_peaks(made["noisy"]["fasta"].parent, "MGC")
    _, weak_peaks = background_and_peaks(made["weak"]["fasta"].parent, "MGC")
    # the background is Poisson counts of a low mean: at a lower depth more of its blocks read 0
    zeros = {name: float((b == 0).mean()) for name, b in {"demo": demo_background, "noisy": noisy_background}.items()}
    assert zeros["noisy"] > zeros["demo"] + 0.2, zeros
    assert weak_peaks < 0.7 * demo_peaks, (weak_peaks, demo_peaks)
    with pytest.raises(ValueError, match="depth"):
        DemoSpec(depth=0)


def test_demo_data_draws_a_grammar_and_refuses_bad_options(tmp_path):
    command = [sys.executable, "-m", "epiformer.cli", "demo-data", "-o", str(tmp_path / "drawn"), "--size-mb", "0.3",
               "--chroms", "2", "--grammar", "drawn", "--cell-types", "4", "--sites-needed", "3", "--depth", "8"]
    subprocess.run(command, check=True, capture_output=True)
    assert [t.identifier for t in read_targets(tmp_path / "drawn" / "targets.txt")] == [f"CT0{i}" for i in range(1, 5)]
    for flag, value in [("--cell-types", "13"), ("--depth", "0"), ("--peak-scale", "-1"), ("--sites-needed", "1")]:
        result = subprocess.run(command[:-2] + [flag, value], capture_output=True, text=True)
        assert result.returncode == 2 and flag in result.stderr and "Traceback" not in result.stderr, result.stderr
    demo = [sys.executable, "-m", "epiformer.cli", "demo-data", "-o", str(tmp_path / "demo"), "--cell-types", "4"]
    result = subprocess.run(demo, capture_output=True, text=True)
    assert result.returncode == 2 and "--cell-types" in result.stderr and "--grammar drawn" in result.stderr, \
        "a drawn grammar's option is refused with the demo's grammar, not ignored"
