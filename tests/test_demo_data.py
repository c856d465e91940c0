"""The demo genome: deterministic, complete, and with accessibility that follows the motifs."""
import numpy as np
import pyBigWig
import pytest

from epiformer.demo.motifs import demo_motifs, read_jaspar
from epiformer.demo.synthetic_genome import CELL_TYPES, DemoSpec, make_demo_data
from epiformer.genome.reader import Genome
from epiformer.genome.targets import read_targets


def test_default_size_and_chromosomes():
    spec = DemoSpec()
    assert len(spec.chrom_sizes) >= 3 and sum(spec.chrom_sizes.values()) >= 6_000_000
    scaled = DemoSpec.scaled(total_mb=12, n_chroms=5)
    assert len(scaled.chrom_sizes) == 5 and sum(scaled.chrom_sizes.values()) == pytest.approx(12e6, rel=1e-3)
    with pytest.raises(ValueError):
        DemoSpec.scaled(total_mb=0)


def test_files_and_targets_layout(demo_data):
    for name in ("genome.fa", "genome.fa.fai", "chrom.sizes", "conservation.bw", "blacklist.bed",
                 "targets.txt", "variants.vcf", "elements.bed", "annotation.bed"):
        assert (demo_data / name).is_file(), name
    lines = (demo_data / "targets.txt").read_text().splitlines()
    assert lines[0] == "index\tidentifier\tfile\tclip\tsum_stat\tdescription\tpeak"
    targets = read_targets(demo_data / "targets.txt")
    assert [t.identifier for t in targets] == list(CELL_TYPES)
    assert all(t.file.is_file() and t.peak.is_file() for t in targets)


def test_deterministic_from_the_seed(tmp_path):
    spec = DemoSpec.scaled(total_mb=0.3, n_chroms=3, seed=5)
    make_demo_data(tmp_path / "a", spec)
    make_demo_data(tmp_path / "b", spec)
    make_demo_data(tmp_path / "c", DemoSpec.scaled(total_mb=0.3, n_chroms=3, seed=6))
    for name in ("genome.fa", "variants.vcf", "MGC.bw", "conservation.bw", "elements.bed"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name
    assert (tmp_path / "a" / "genome.fa").read_bytes() != (tmp_path / "c" / "genome.fa").read_bytes()


def test_genome_has_gaps_repeats_and_varying_gc(demo_data):
    with Genome(demo_data / "genome.fa", demo_data / "conservation.bw") as genome:
        seq = genome.sequence("chr1", 0, genome.chrom_sizes["chr1"])
        cons = genome.conservation("chr1", 0, genome.chrom_sizes["chr1"])
    assert seq.startswith("N" * 5000), "a telomere-like gap"
    assert seq.count("N") > 10_000
    assert "CACACACACACACACACA" in seq or "AAAAAAAAAAAAAAAAAAAAAA" in seq
    body = np.frombuffer(seq.replace("N", "").encode(), np.uint8)
    gc = np.isin(body, np.frombuffer(b"GC", np.uint8)).astype(float)
    per_20kb = gc[: len(gc) // 20000 * 20000].reshape(-1, 20000).mean(axis=1)
    assert per_20kb.max() - per_20kb.min() > 0.05, "GC content drifts along the chromosome"
    assert cons.min() >= 0 and cons.max() <= 1 and (cons > 0.8).mean() < 0.1


def element_signal(demo_data, kind_filter):
    """Mean signal per cell type over the central 200 bp of matching elements."""
    rows = [line.split("\t") for line in (demo_data / "elements.bed").read_text().splitlines()]
    chosen = [r for r in rows if kind_filter(r)]
    out = {}
    for cell_type in CELL_TYPES:
        with pyBigWig.open(str(demo_data / f"{cell_type}.bw")) as bw:
            out[cell_type] = np.mean([
                np.nanmean(bw.values(r[0], int(r[1]) + 200, int(r[2]) - 200, numpy=True)) for r in chosen])
    return out, len(chosen)


def test_signal_follows_cell_type_motifs(demo_data):
    def only(factors, required):
        return lambda r: r[3] == "enhancer" and set(r[4].split(",")) <= factors and required in r[4]

    spi1, n = element_signal(demo_data, only({"SPI1", "IRF8", "FOS::JUN"}, "SPI1"))
    assert n >= 3
    assert spi1["MGC"] > 3 * max(v for k, v in spi1.items() if k != "MGC"), spi1
    olig, n = element_signal(demo_data, only({"OLIG2", "SOX10", "FOS::JUN"}, "OLIG2"))
    assert n >= 3 and olig["OPC"] > 3 * olig["MGC"], olig
    promoters, _ = element_signal(demo_data, lambda r: r[3] == "promoter")
    decoys, _ = element_signal(demo_data, lambda r: r[3] in ("gc_decoy", "conserved_decoy"))
    for cell_type in CELL_TYPES:
        assert promoters[cell_type] > 5 * decoys[cell_type], "shared promoter peaks; decoys stay flat"
        assert decoys[cell_type] < 0.1


def test_variants_match_the_genome_and_carry_the_truth(demo_data):
    records = [line.split("\t") for line in (demo_data / "variants.vcf").read_text().splitlines()
               if not line.startswith("#")]
    truths = [dict(kv.split("=") for kv in r[7].split(";"))["TRUTH"] for r in records]
    assert {"disrupting", "neutral"} == set(truths)
    with Genome(demo_data / "genome.fa") as genome:
        for chrom, pos, _, ref, alt, *_ in records:
            start = int(pos) - 1
            assert genome.sequence(chrom, start, start + len(ref)) == ref
            assert ref != alt and set(ref + alt) <= set("ACGT")
    kinds = {("snv" if len(r[3]) == len(r[4]) == 1 else "deletion" if len(r[3]) > len(r[4]) else "insertion")
             for r, t in zip(records, truths) if t == "disrupting"}
    assert kinds == {"snv", "deletion", "insertion"}
    positions = [(r[0], int(r[1])) for r in records]
    assert positions == sorted(positions, key=lambda p: (int(p[0][3:]), p[1]))


def test_disrupting_snvs_lower_the_motif_score(demo_data):
    motifs = demo_motifs()
    rows = [line.split("\t") for line in (demo_data / "variants.vcf").read_text().splitlines()
            if not line.startswith("#") and "TRUTH=disrupting" in line]
    snvs = [r for r in rows if len(r[3]) == len(r[4]) == 1]
    assert snvs
    with Genome(demo_data / "genome.fa") as genome:
        for chrom, pos, _, _ref, alt, _, _, info in snvs:
            motif = motifs[dict(kv.split("=") for kv in info.split(";"))["MOTIF"]]
            center = int(pos) - 1
            best_ref = best_alt = -np.inf
            for start in range(center - motif.width + 1, center + 1):
                site = genome.sequence(chrom, start, start + motif.width)
                mutated = site[: center - start] + alt + site[center - start + 1:]
                for s, m in ((site, mutated), (_rc(site), _rc(mutated))):
                    if motif.score(s) > best_ref:
                        best_ref, best_alt = motif.score(s), motif.score(m)
            assert best_alt < best_ref - 1.0


def _rc(seq):
    from epiformer.genome.encoding import reverse_complement
    return reverse_complement(seq)


def test_jaspar_reader(tmp_path):
    motifs = demo_motifs()
    assert {"CTCF", "SPI1", "SOX10", "OLIG2", "NFIA", "NEUROD1", "MEF2C"} <= set(motifs)
    assert motifs["CTCF"].matrix_id == "MA0139.2" and motifs["CTCF"].width == 15
    bad = tmp_path / "bad.jaspar"
    bad.write_text(">MA1 X\nA [ 1 2 ]\nC [ 1 2 ]\nT [ 1 2 ]\nG [ 1 2 ]\n")
    with pytest.raises(ValueError, match="line 4: expected the G row"):
        read_jaspar(bad)


def test_disrupting_variants_carry_their_true_change_per_cell_type(demo_data):
    from epiformer.demo.variant_truth import read_variant_truth

    truth = read_variant_truth(demo_data / "variants.vcf")
    disrupting = {k: v["effects"] for k, v in truth.items() if v["kind"] == "disrupting"}
    assert disrupting and all(truth[k]["effects"] == {} for k in truth if k not in disrupting)
    changes = [e for effects in disrupting.values() for e in effects.values()]
    assert all(cell in CELL_TYPES for effects in disrupting.values() for cell in effects)
    assert max(changes) <= 0, "weakening a site never opens its element"
    assert np.mean(np.array(changes) < -0.05) > 0.5 and min(changes) < -1.0
    lowered = [min(effects.values()) < -0.05 for effects in disrupting.values()]
    assert np.mean(lowered) > 0.9, "nearly every disrupting variant closes its element somewhere"


def test_an_edit_beside_a_site_leaves_it_whole_and_one_inside_breaks_it():
    from epiformer.demo.synthetic_genome import _edited_site_quality

    motif = demo_motifs()["SOX10"]
    rng = np.random.default_rng(0)
    site = motif.sample(rng, min_relative_score=0.9)
    flank = "".join(rng.choice(list("ACGT"), 40))
    seq, start = flank + site + flank, len(flank)
    whole = motif.score(site) / motif.max_score
    beside = (start, seq[start - 1], seq[start - 1] + "GATTC")          # VCF 1-based: after the base before it
    inside = (start + motif.width // 2, seq[start + motif.width // 2 - 1], seq[start + motif.width // 2 - 1] + "GATTC")
    assert _edited_site_quality(seq, motif, start, 1, beside) == pytest.approx(whole)
    assert _edited_site_quality(seq, motif, start, 1, inside) < whole - 0.3
    minus = flank + _rc(site) + flank
    assert _edited_site_quality(minus, motif, start, -1, (start + 1, minus[start], minus[start])) == pytest.approx(whole)


def test_sign_metrics_tell_a_missed_site_from_an_opposite_answer(tmp_path):
    from epiformer.demo.variant_truth import variant_sign_metrics

    vcf = tmp_path / "truth.vcf"
    vcf.write_text("#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO\n" + "".join(
        f"chr1\t{n + 1}\tv{n}\tA\tC\t.\tPASS\tTRUTH=disrupting;MOTIF=M;CELLTYPES=A;EFFECT={effect}\n"
        for n, effect in enumerate([-0.5, -0.5, -0.5, -0.5, -0.01])) +
        "chr1\t9\tn1\tA\tC\t.\tPASS\tTRUTH=neutral;MOTIF=.;CELLTYPES=.;EFFECT=.\n")

    def metrics(sads: list[float]) -> dict:
        scores = tmp_path / "scores.tsv"
        scores.write_text("id\tA.sad\n" + "".join(f"v{n}\t{s}\n" for n, s in enumerate(sads)) + "n1\t0.0\n")
        return variant_sign_metrics(scores, vcf)

    missed = metrics([-0.4, -0.2, -0.3, 0.003, 0.9])      # the last pair's change is too small to sign
    assert missed["sign_accuracy"] == 0.75 and missed["pairs"] == 5
    assert missed["wrong_sign_size"] == pytest.approx(0.01)
    opposite = metrics([-0.4, -0.2, -0.3, 0.3, 0.9])
    assert opposite["wrong_sign_size"] == pytest.approx(1.0)
    assert np.isnan(metrics([-0.4, -0.2, -0.3, -0.1, 0.9])["wrong_sign_size"])
