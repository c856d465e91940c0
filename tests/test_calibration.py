"""Calibration backgrounds: where random SNVs are drawn, and signed quantiles."""
import numpy as np
import pytest

from epiformer.genome.reader import Genome
from epiformer.variants.calibration import Calibration, CalibrationError, allowed_intervals, background_snvs
from epiformer.variants.effects import SCORE_FIELDS, SIGNED

from .helpers import write_fasta

SEQ_LEN = 8192


@pytest.fixture
def genome(tmp_path):
    rng = np.random.default_rng(0)
    seqs = {"chrA": "".join(rng.choice(list("ACGT"), 60_000)), "chrB": "".join(rng.choice(list("acgt"), 20_000)),
            "chrShort": "".join(rng.choice(list("ACGT"), SEQ_LEN - 1))}
    seqs["chrA"] = seqs["chrA"][:30_000] + "N" * 500 + seqs["chrA"][30_500:]       # a gap
    seqs["chrB"] = seqs["chrB"][:9_000] + "n" + seqs["chrB"][9_001:]                # one unknown base
    write_fasta(tmp_path / "g.fa", seqs)
    (tmp_path / "blacklist.bed").write_text("chrA\t10000\t10100\n")
    with Genome(tmp_path / "g.fa") as g:
        yield g, tmp_path / "blacklist.bed"


def test_random_snvs_keep_their_window_inside_the_chromosome_and_clear_of_gaps(genome):
    g, blacklist = genome
    half = SEQ_LEN // 2
    allowed = allowed_intervals(g, SEQ_LEN, blacklist)
    assert allowed == {
        "chrA": [(half, 10_000 - half + 1), (10_100 + half, 30_000 - half + 1), (30_500 + half, 60_000 - half + 1)],
        "chrB": [(half, 9_000 - half + 1), (9_001 + half, 20_000 - half + 1)],
    }, "chrShort is shorter than a window"
    variants, rule = background_snvs(g, 3000, SEQ_LEN, blacklist, seed=2)
    assert len(variants) == 3000 and rule["allowed_bp"] == sum(b - a for spans in allowed.values() for a, b in spans)
    assert rule["blacklist"]["file"] == "blacklist.bed" and rule["chroms"] == 2 and rule["count"] == 3000
    for v in variants:
        window = g.sequence(v.chrom, v.start - half, v.start + half).upper()
        assert v.start - half >= 0 and v.start + half <= g.chrom_sizes[v.chrom] and "N" not in window
        assert not (v.chrom == "chrA" and v.start + half > 10_000 and v.start - half < 10_100), "the blacklist"
        assert v.ref == window[half] and v.alt in "ACGT" and v.alt != v.ref
    counts = {c: sum(v.chrom == c for v in variants) for c in ("chrA", "chrB")}
    share = sum(b - a for a, b in allowed["chrB"]) / rule["allowed_bp"]
    assert counts["chrB"] / 3000 == pytest.approx(share, abs=0.03), "uniform over the allowed bases"
    assert background_snvs(g, 3000, SEQ_LEN, blacklist, seed=2)[0] == variants, "seeded"
    without = allowed_intervals(g, SEQ_LEN)
    assert without["chrA"][0] == (half, 30_000 - half + 1)
    with pytest.raises(CalibrationError, match="no position of the genome has a whole window of 100,000 bp"):
        background_snvs(g, 10, 100_000)


def test_signed_quantiles_place_a_score_among_the_signed_background():
    rng = np.random.default_rng(0)
    scores = np.zeros((101, 2, len(SCORE_FIELDS)))
    scores[:, 0, SCORE_FIELDS.index("sad")] = np.arange(-50, 51)            # symmetric
    scores[:, 1, SCORE_FIELDS.index("sad")] = rng.random(101)                 # all gains
    calibration = Calibration.from_scores(["a", "b"], scores, {})
    query = np.zeros((4, 2, len(SCORE_FIELDS)))
    query[:, :, SCORE_FIELDS.index("sad")] = np.array([0.0, 60.0, -60.0, -0.5])[:, None]
    signed = calibration.signed_quantiles(query)[..., SIGNED.index("sad")]
    np.testing.assert_allclose(signed[:, 0], [0.0, 1.0, -1.0, -1 / 101], atol=1e-6)
    assert signed[3, 1] == -1.0, "a loss is below every gain of target b"
    pct = calibration.percentiles(query)[..., 0]
    assert pct[1, 0] == pct[2, 0] == 100.0, "the absolute percentile does not see the sign"
