"""score-variants: VCF/TSV reading with line numbers, outputs, resume, mismatch modes, and the same
scores as the server."""
from __future__ import annotations

import gzip
import json
from pathlib import Path

import h5py
import numpy as np
import pytest

from epiformer.cli import main
from epiformer.genome.reader import Genome
from epiformer.inference.predictor import open_predictor
from epiformer.inference.runners import LocalRunner
from epiformer.inference.settings import InferenceError, InferenceSettings, ModelSetOptions, ScoringSettings
from epiformer.io.reading import read_table, sha256_file
from epiformer.variants.alleles import Variant, VariantError, make_variant
from epiformer.variants.effects import SCORE_FIELDS
from epiformer.variants.score_job import ScoreOptions, score_variant_file
from epiformer.variants.scorer import VariantScorer
from epiformer.variants.vcf import Skipped, VariantRecord, VcfError, read_variants

from .helpers import make_model_app

HEADER = "##fileformat=VCFv4.2\n#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO\n"


def base(demo_data, chrom, pos):
    with Genome(demo_data / "genome.fa") as genome:
        return genome.sequence(chrom, pos - 1, pos).upper()


def other(b):
    return "ACGT"[("ACGT".index(b) + 1) % 4]


@pytest.fixture
def vcf(demo_data, tmp_path):
    b1, b2, b3 = base(demo_data, "chr1", 100_001), base(demo_data, "chr1", 100_050), base(demo_data, "chr2", 50_001)
    lines = [
        f"chr1\t100001\trs1\t{b1}\t{other(b1)},{other(other(b1))}\t.\tPASS\t.",     # multi-allelic
        f"chr1\t100001\trs1b\t{b1}\t{other(b1)}\t.\tPASS\t.",                      # duplicate of line 3
        f"chr1\t100050\t.\t{b2}\t<DEL>\t.\tPASS\tSVTYPE=DEL",                     # symbolic
        "chr1\tnotanumber\t.\tA\tG\t.\tPASS\t.",                                  # malformed
        "chr1\t100060",                                                           # too few columns
        f"chrUn_x\t100050\t.\t{b2}\t{other(b2)}\t.\tPASS\t.",                     # contig the genome lacks
        f"chr2\t50001\tmm\t{other(b3)}\t{b3}\t.\tPASS\t.",                        # REF/ALT swapped
        f"chr1\t100050\tdel\t{b2}{base(demo_data, 'chr1', 100_051)}\t{b2}\t.\tPASS\t.",  # deletion
    ]
    path = tmp_path / "in.vcf"
    path.write_text(HEADER + "\n".join(lines) + "\n")
    return path


def test_reading_reports_each_skipped_line(vcf):
    entries = list(read_variants(vcf))
    kept = [e for e in entries if isinstance(e, VariantRecord)]
    skipped = {e.line: e.reason for e in entries if isinstance(e, Skipped)}
    assert [e.line for e in kept] == [3, 3, 8, 9, 10]
    assert [e.id for e in kept] == [f"rs1:{kept[0].variant.alt}", f"rs1:{kept[1].variant.alt}", str(kept[2].variant),
                                    "mm", "del"], "a multi-allelic record gives one variant per allele"
    assert skipped[4].startswith("duplicate of line 3")
    assert "symbolic" in skipped[5]
    assert "positive integer" in skipped[6]
    assert "expected CHROM POS ID REF ALT" in skipped[7]


def test_gzip_and_tsv_inputs(vcf, tmp_path):
    packed = tmp_path / "in.vcf.gz"
    packed.write_bytes(gzip.compress(vcf.read_bytes()))
    assert [str(e.variant) for e in read_variants(packed) if isinstance(e, VariantRecord)] == \
        [str(e.variant) for e in read_variants(vcf) if isinstance(e, VariantRecord)]
    tsv = tmp_path / "in.tsv"
    tsv.write_text("chrom\tpos\tref\talt\nchr1\t5\tA\tG\nchr1 6 C -\n")
    assert [str(e.variant) for e in read_variants(tsv)] == ["chr1:5:A:G", "chr1:6:C:"]
    with pytest.raises(VcfError, match="no such file"):
        list(read_variants(tmp_path / "missing.vcf"))


def open_demo(precomputed, demo_data, **settings):
    return open_predictor(ModelSetOptions((str(precomputed.parent / "model.pth.tar"),)), demo_data / "genome.fa",
                          InferenceSettings(device="cpu", conservation=str(demo_data / "conservation.bw"), **settings))


@pytest.fixture
def predictor(precomputed, demo_data):
    with open_demo(precomputed, demo_data) as opened:
        yield opened


def run(predictor, vcf, out, shard=(0, 1), chunk=ScoreOptions.chunk, **scoring):
    return score_variant_file(VariantScorer(predictor, ScoringSettings(**scoring)), vcf, out,
                              ScoreOptions(progress=False, log=lambda _: None, chunk=chunk), shard=shard)


def table(path):
    """A TSV output's settings record (which it must have) and its rows (header first)."""
    assert path.read_text().startswith("#epiformer_settings=")
    return read_table(path)


def test_outputs_and_mismatch_modes(predictor, vcf, tmp_path):
    result = run(predictor, vcf, tmp_path / "s")
    assert result["scored"] == 3 and result["skipped"] == 6
    settings, skipped = table(tmp_path / "s.skipped.tsv")
    assert all(len(row) == 3 for row in skipped), "a malformed line's tabs stay inside its column"
    assert ["7", "chr1\\t100060"] == skipped[[r[0] for r in skipped].index("7")][:2]
    assert any("chromosome 'chrUn_x' is not in genome.fa" in r[2] for r in skipped) and \
        any("reference mismatch" in r[2] for r in skipped)
    settings, rows = table(tmp_path / "s.tsv")
    assert settings["score_bp"] == 1024 and settings["precision"] == "fp32" and settings["reverse_complement"]
    assert settings["conservation"]["file"] == "conservation.bw" and len(settings["conservation"]["sha256"]) == 64
    assert settings["checkpoints"][0]["file"] == "model.pth.tar" and settings["percentiles"].startswith("not given")
    assert rows[0][:6] == ["id", "chrom", "pos", "ref", "alt", "flag"] and len(rows[0]) == 6 + 8 * len(SCORE_FIELDS)
    with h5py.File(tmp_path / "s.h5") as f:
        assert list(f.attrs["targets"]) == predictor.target_names
        assert json.loads(f.attrs["settings"]) == settings
        sad = f["scores/sad"][:]
        assert sad.shape == (3, 8)
        np.testing.assert_allclose(sad[:, 0], [float(r[6 + SCORE_FIELDS.index("sad")]) for r in rows[1:]], rtol=1e-5)
        assert [v.decode() if isinstance(v, bytes) else v for v in f["variants/flag"][:]] == ["ok"] * 3
    vcf_lines = (tmp_path / "s.vcf").read_text().splitlines()
    assert json.loads(next(l for l in vcf_lines if l.startswith("##epiformer_settings=")).split("=", 1)[1]) == settings
    annotated = [line for line in vcf_lines if not line.startswith("##")]
    assert "EPI_SAD_HIP=" in annotated[1] and annotated[1].count("EPI_FLAG=ok,ok") == 1
    assert "EPI_" not in annotated[3], "a symbolic record is left as it was"


def test_swapped_variants_keep_the_inputs_orientation_in_the_vcf(predictor, vcf, tmp_path):
    """--on-mismatch swap scores ALT -> REF; the TSV writes the alleles as scored, the annotated VCF
    gives Σalt − Σref of the line's own REF and ALT: the opposite sign."""
    swapped = run(predictor, vcf, tmp_path / "w", on_mismatch="swap")
    assert swapped["scored"] == 4
    _, rows = table(tmp_path / "w.tsv")
    row = next(r for r in rows[1:] if r[5] == "swapped")
    sad = float(row[6 + SCORE_FIELDS.index("sad")])
    log2fc = float(row[6 + SCORE_FIELDS.index("log2fc")])
    line = next(l for l in (tmp_path / "w.vcf").read_text().splitlines() if "\tmm\t" in l)
    fields, info = line.split("\t"), dict(kv.split("=") for kv in line.split("\t")[7].split(";"))
    assert (fields[3], fields[4]) == (row[4], row[3]), "the input's REF and ALT are the scored ALT and REF"
    assert info["EPI_FLAG"] == "swapped"
    assert float(info["EPI_SAD_HIP"]) == pytest.approx(-sad, rel=1e-3, abs=1e-6)
    assert float(info["EPI_LOG2FC_HIP"]) == pytest.approx(-log2fc, rel=1e-3, abs=1e-6)


def test_resume_redoes_only_missing_parts(predictor, vcf, tmp_path):
    run(predictor, vcf, tmp_path / "a", chunk=3)
    first = (tmp_path / "a.tsv").read_text()
    parts = sorted((tmp_path / "a.parts").glob("part-*.npz"))
    assert len(parts) == 3, "nine entries, three to a part"
    parts[1].unlink()
    again = run(predictor, vcf, tmp_path / "a", chunk=3)
    assert again["resumed_parts"] == 2 and (tmp_path / "a.tsv").read_text() == first
    with pytest.raises(VcfError, match="holds another scoring run .* --restart"):
        run(predictor, vcf, tmp_path / "a", chunk=3, score_bp=10)
    restarted = score_variant_file(VariantScorer(predictor, ScoringSettings(score_bp=10)), vcf, tmp_path / "a",
                                   ScoreOptions(progress=False, chunk=3, log=lambda _: None), restart=True)
    assert restarted["resumed_parts"] == 0 and (tmp_path / "a.tsv").read_text() != first


@pytest.mark.parametrize("precision, shifts", [("fp32", (0,)), ("bf16", (0,)), ("fp32", (-1, 0, 1))])
def test_cli_and_server_give_the_same_numbers(precomputed, demo_data, vcf, tmp_path, capsys, precision, shifts):
    """The same variants and region through score-variants / predict and /api/variants /
    /api/predict, with the same settings (bf16 is autocast on the CPU too): the same scores, bins
    and values, and the same settings record."""
    model = str(precomputed.parent / "model.pth.tar")
    flags = ["-m", model, "--fa", str(demo_data / "genome.fa"), "--seqcons", str(demo_data / "conservation.bw"),
             "--device", "cpu", "--precision", precision, f"--shifts={','.join(map(str, shifts))}"]
    assert main(["score-variants", *flags, "--vcf", str(vcf), "-o", str(tmp_path / "cli"), "-q"]) == 0
    assert "scored 3 variants, skipped 6" in capsys.readouterr().out
    settings, rows = table(tmp_path / "cli.tsv")
    assert main(["predict", *flags, "-r", "chr1:100,001-100,200", "-o", str(tmp_path / "region"), "--format", "tsv"]) == 0
    region_settings, region = table(tmp_path / "region.tsv")
    app = make_model_app(precomputed, tmp_path / "hub", models=[model], precision=precision, shifts=list(shifts))
    client = app.test_client()
    body = client.post("/api/variants", json={"variants": [
        {"chrom": r[1], "pos": int(r[2]), "ref": r[3].replace("-", ""), "alt": r[4].replace("-", "")}
        for r in rows[1:]]}).json
    tracks = client.post("/api/predict", json={"region": "chr1:100,001-100,200"}).json
    app.config["PREDICTOR"].close()
    ignore = ("threads", "code_version", "percentiles", "device")
    assert {k: v for k, v in body["settings"].items() if k not in ignore} == \
        {k: v for k, v in settings.items() if k not in ignore}
    assert body["settings"]["precision"] == precision and body["settings"]["shifts"] == list(shifts)
    for row, result in zip(rows[1:], body["results"]):
        for t, name in enumerate(body["targets"]):
            for f in ("sad", "log2fc", "d1"):
                cli = float(row[6 + t * len(SCORE_FIELDS) + SCORE_FIELDS.index(f)])
                assert cli == pytest.approx(result["scores"][name][f], rel=1e-4, abs=1e-5)
    assert json.loads(json.dumps(body))["problems"] == []
    assert {k: v for k, v in tracks["settings"].items() if k not in ignore} == \
        {k: v for k, v in region_settings.items() if k not in ignore}
    starts = [int(r[1]) for r in region[1:]]
    assert starts == [tracks["start"] + 128 * k for k in range(len(starts))], "the same bins"
    for t, name in enumerate(tracks["targets"]):
        np.testing.assert_allclose([float(r[3 + t]) for r in region[1:]], tracks["tracks"]["reference"][name],
                                   rtol=1e-4, atol=1e-5)


def test_missing_inputs_are_named(precomputed, demo_data, tmp_path, capsys):
    model = str(precomputed.parent / "model.pth.tar")
    assert main(["score-variants", "-m", model, "--fa", str(demo_data / "genome.fa"), "--vcf",
                 str(tmp_path / "none.vcf"), "-o", str(tmp_path / "x"), "-q"]) == 2
    assert "trained with conservation (if_cons true)" in capsys.readouterr().err
    assert main(["score-variants", "-m", model, "--fa", str(demo_data / "genome.fa"), "--no-conservation", "--vcf",
                 str(tmp_path / "none.vcf"), "-o", str(tmp_path / "x"), "-q"]) == 2
    assert "no such file" in capsys.readouterr().err


def test_calibration_gives_percentiles_in_cli_and_server(precomputed, demo_data, vcf, tmp_path, capsys):
    import shutil

    from epiformer.variants.calibration import Calibration, background_snvs, calibration_path

    model = tmp_path / "model.pth.tar"
    shutil.copy(precomputed.parent / "model.pth.tar", model)
    with Genome(demo_data / "genome.fa") as genome:
        background, _ = background_snvs(genome, 50, 8192, seed=1)
        assert all(genome.sequence(v.chrom, v.start, v.end).upper() == v.ref for v in background)
    common = ["--fa", str(demo_data / "genome.fa"), "--seqcons", str(demo_data / "conservation.bw"), "--device", "cpu",
              "-q"]
    assert main(["calibrate", "-m", str(model), "-n", "64", *common]) == 0
    assert "calibrated on 64 random SNVs" in capsys.readouterr().out
    calibration = Calibration.load(calibration_path([str(model)]))
    assert calibration.size == 64 and calibration.targets[0] == "HIP"
    assert np.all(np.diff(calibration.background["sad"], axis=1) >= 0)
    scores = np.zeros((1, 8, len(SCORE_FIELDS)))
    middle = calibration.background["sad"][:, 31]
    scores[0, :, SCORE_FIELDS.index("sad")] = -middle
    background = calibration.background["sad"]
    below, equal = (background < middle[:, None]).sum(axis=1), (background == middle[:, None]).sum(axis=1)
    assert calibration.percentiles(scores)[0, :, 0] == pytest.approx(100 * (below + equal / 2) / 64)
    assert np.all(np.abs(calibration.percentiles(scores)[0, :, 0] - 50) <= 50 * equal / 64 + 1), "the middle, ties aside"
    assert calibration.settings["score_bp"] == 1024 and calibration.settings["precision"] == "fp32"
    assert main(["score-variants", "-m", str(model), "--vcf", str(vcf), "-o", str(tmp_path / "s"), *common]) == 0
    settings, rows = table(tmp_path / "s.tsv")
    header = rows[0]
    # the random demo model's SNV effects are float rounding (|SAD| ~1e-6, as its background's), which
    # any change of batch moves across percentile steps: compare a variant whose effect stands out
    row = max(rows[1:], key=lambda r: abs(float(r[header.index("HIP.sad")])))
    assert abs(float(row[header.index("HIP.sad")])) > 1e-4
    assert "HIP.sad_pct" in header and "ET.d2_pct" in header and settings["percentiles"] == "given"
    assert "HIP.sad_signed_q" in header and "ET.max_diff_signed_q" in header and "HIP.d1_signed_q" not in header
    signed = float(row[header.index("HIP.sad_signed_q")])
    assert -1 <= signed <= 1 and np.sign(signed) == np.sign(float(row[header.index("HIP.sad")])), \
        "a large effect lies beyond the background's median on its own side"
    with h5py.File(tmp_path / "s.h5") as h5:
        assert h5["signed_quantiles/sad"].shape == h5["percentiles/sad"].shape
    app = make_model_app(precomputed, tmp_path / "hub", models=[str(model)])
    body = app.test_client().post("/api/variants", json={"variants": [f"{row[1]}:{row[2]}:{row[3]}:{row[4]}"]}).json
    app.config["PREDICTOR"].close()
    assert body["results"][0]["scores"]["HIP"]["percentiles"]["sad"] == pytest.approx(
        float(row[header.index("HIP.sad_pct")]), abs=1e-4)
    assert body["results"][0]["scores"]["HIP"]["signed_quantiles"]["sad"] == pytest.approx(signed, abs=1e-4)
    capsys.readouterr()
    for flags, differs in ((["--score-bp", "100"], "score_bp differs (1024 there, 100 here)"),
                           (["--no-rc"], "reverse_complement differs"), (["--bf16"], "precision differs"),
                           (["--shifts=-1,0,1"], "shifts differs")):
        out = tmp_path / differs.split()[0]
        assert main(["score-variants", "-m", str(model), "--vcf", str(vcf), "-o", str(out), *flags, *common]) == 0
        assert f"no percentiles: the calibration was made with other settings: {differs}" in capsys.readouterr().out
        settings, rows = table(Path(f"{out}.tsv"))
        assert not any(c.endswith("_pct") for c in rows[0]) and differs in settings["percentiles"]
    app = make_model_app(precomputed, tmp_path / "hub2", models=[str(model)], reverse_complement=False)
    body = app.test_client().post("/api/variants", json={"variants": [f"{row[1]}:{row[2]}:{row[3]}:{row[4]}"]}).json
    app.config["PREDICTOR"].close()
    assert "percentiles" not in body["results"][0]["scores"]["HIP"]
    assert "reverse_complement differs" in body["percentiles_missing"]


def test_calibration_on_the_users_variants(precomputed, demo_data, vcf, tmp_path, capsys):
    import shutil

    from epiformer.variants.calibration import Calibration

    model = tmp_path / "model.pth.tar"
    shutil.copy(precomputed.parent / "model.pth.tar", model)
    common = ["-m", str(model), "--fa", str(demo_data / "genome.fa"), "--seqcons", str(demo_data / "conservation.bw"),
              "--device", "cpu", "-q", "-o", str(tmp_path / "common.npz")]
    assert main(["calibrate", "--background", str(vcf), *common]) == 0
    out = capsys.readouterr().out
    assert f"calibrated on 3 variants of {vcf}" in out
    assert "note: 6 line(s) of" in out and "are not in the background: line 4: " in out
    calibration = Calibration.load(tmp_path / "common.npz")
    background = calibration.settings["background"]
    assert (background["kind"], background["file"], background["variants"], background["skipped"]) == \
        ("variants of a file", "in.vcf", 3, 6)
    assert background["sha256"] == sha256_file(vcf) and calibration.size == 3
    assert calibration.signed["sad"].shape == (8, 3) and np.all(np.diff(calibration.signed["sad"], axis=1) >= 0)
    assert main(["calibrate", "--background", str(vcf), "-n", "10", *common]) == 2
    assert "with --background the file's variants are the background" in capsys.readouterr().err
    empty = tmp_path / "empty.vcf"
    empty.write_text("##fileformat=VCFv4.2\n#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO\n")
    assert main(["calibrate", "--background", str(empty), *common]) == 2
    assert "holds no variant that could be scored" in capsys.readouterr().err


def test_indel_predictions_are_mapped_back_to_reference_bins():
    from epiformer.variants.alleles import Variant
    from epiformer.variants.effects import to_reference_bins

    alt = np.arange(10, dtype=np.float32)[None] * 10          # one target, bins starting at 1000
    insertion = Variant("chr1", 1000 + 3 * 128 + 1, "A", "A" + "C" * 128)   # shifts the right side one bin
    mapped = to_reference_bins(alt, 1000, 128, insertion)
    np.testing.assert_allclose(mapped[0, :4], alt[0, :4])
    np.testing.assert_allclose(mapped[0, 4:9], alt[0, 5:10])
    deletion = Variant("chr1", 1000 + 3 * 128 + 1, "A" * 65, "A")          # 64 bp shorter
    mapped = to_reference_bins(alt, 1000, 128, deletion)
    np.testing.assert_allclose(mapped[0, 5:], (alt[0, 4:9] + alt[0, 5:10]) / 2)
    snv = Variant("chr1", 1500, "A", "G")
    assert to_reference_bins(alt, 1000, 128, snv) is alt


def test_shards_write_the_same_outputs(predictor, vcf, tmp_path):
    run(predictor, vcf, tmp_path / "one", chunk=2)
    first = run(predictor, vcf, tmp_path / "two", chunk=2, shard=(1, 2))
    assert first["files"] == [] and first["missing_parts"] == 3
    second = run(predictor, vcf, tmp_path / "two", chunk=2, shard=(0, 2))
    assert len(second["files"]) == 4
    for suffix in (".tsv", ".skipped.tsv", ".vcf"):
        assert (tmp_path / f"two{suffix}").read_text() == (tmp_path / f"one{suffix}").read_text()


def test_shift_ensembling_averages_shifted_windows(precomputed, demo_data, vcf):
    from epiformer.genome.encoding import encode_codes
    from epiformer.variants.alleles import apply_edits
    from epiformer.variants.effects import score_arrays, score_bins

    records = [e for e in read_variants(vcf) if isinstance(e, VariantRecord)][:1]
    v = records[0].variant
    with open_demo(precomputed, demo_data, shifts=(-2, 0, 2)) as shifted, open_demo(precomputed, demo_data) as plain:
        got = VariantScorer(shifted).score([v])[0].scores
        start = VariantScorer(plain).window_for(v)
        ref, alt = (np.mean([plain.engine.predict(encode_codes(*apply_edits(plain.genome, v.chrom, start + d, 8192, edits))[None])[0]
                             for d in (-2, 0, 2)], axis=0) for edits in ([], [v]))
    output_start = start + plain.engine.output_offset
    expected = score_arrays(ref, alt, score_bins(output_start, 128, 48, v, 1024), output_start, 128)
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-6)


def test_score_bp_0_scores_the_whole_output(precomputed, demo_data, vcf):
    from epiformer.variants.effects import score_bins

    v = next(e for e in read_variants(vcf) if isinstance(e, VariantRecord)).variant
    assert score_bins(1000, 128, 48, v, 0) == slice(0, 48)
    with pytest.raises(VariantError, match="score_bp must be 0 .* or positive"):
        score_bins(1000, 128, 48, v, -5)
    with open_demo(precomputed, demo_data) as predictor:
        whole, near = VariantScorer(predictor, ScoringSettings(score_bp=0)).score([v])[0], VariantScorer(predictor).score([v])[0]
    assert whole.bins == slice(0, 48) and near.bins.stop - near.bins.start == 17, "±1,024 bp of an SNV: 17 bins"
    sad = SCORE_FIELDS.index("sad")
    np.testing.assert_allclose(whole.scores[:, sad], (whole.alternate - whole.reference).sum(axis=1), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(whole.reference, near.reference)


def variant_mix(demo_data) -> list[Variant]:
    """SNVs (two in one bin, one by the N run at the chromosome's start), an MNV, an insertion and a deletion."""
    with Genome(demo_data / "genome.fa") as genome:
        ref = lambda pos, n=1: genome.sequence("chr1", pos - 1, pos - 1 + n).upper()   # noqa: E731
        near_start = next(pos for pos in range(500, 50_000) if ref(pos) in "ACGT")   # its window holds Ns
        snvs = [make_variant("chr1", pos, ref(pos), other(ref(pos))) for pos in (near_start, 100_001, 100_003, 120_500)]
        mnv = make_variant("chr1", 130_001, ref(130_001, 3), "".join(other(b) for b in ref(130_001, 3)))
        insertion = make_variant("chr1", 140_001, ref(140_001), ref(140_001) + "GAT")
        deletion = make_variant("chr1", 150_001, ref(150_001, 4), ref(150_001))
    return [*snvs, mnv, insertion, deletion]


@pytest.mark.parametrize("settings", [{}, {"shifts": (-1, 0, 1), "batch_size": 3}, {"reverse_complement": False}],
                         ids=["plain", "shifts", "no-rc"])
def test_incremental_alternates_equal_whole_windows(precomputed, demo_data, tiny_checkpoint, settings):
    """SNVs and MNVs run the tower only near their bases (indels run whole): the scores and
    tracks equal scoring every alternate as a whole window, for a model set too."""
    variants = variant_mix(demo_data)
    sets = [(str(precomputed.parent / "model.pth.tar"),), (str(precomputed.parent / "model.pth.tar"), str(tiny_checkpoint))]
    for models in sets:
        with open_predictor(ModelSetOptions(models), demo_data / "genome.fa",
                            InferenceSettings(device="cpu", conservation=str(demo_data / "conservation.bw"),
                                              **settings)) as predictor:
            fast = VariantScorer(predictor, cache_windows=0).score(variants)
            whole = VariantScorer(predictor, cache_windows=0, incremental=False).score(variants)
        for a, b in zip(fast, whole):
            np.testing.assert_allclose(a.reference, b.reference, rtol=1e-4, atol=1e-5)
            np.testing.assert_allclose(a.alternate, b.alternate, rtol=1e-4, atol=1e-5)
            where = SCORE_FIELDS.index("max_diff_start")
            others = [i for i in range(len(SCORE_FIELDS)) if i != where]
            np.testing.assert_allclose(a.scores[:, others], b.scores[:, others], rtol=1e-4, atol=1e-5)
            clear = np.abs(a.scores[:, SCORE_FIELDS.index("max_diff")]) > 1e-3   # not an argmax of rounding noise
            np.testing.assert_array_equal(a.scores[clear, where], b.scores[clear, where])
            assert np.abs(a.alternate - a.reference).max() > 0, f"{a.variant} changed nothing"


def test_nearby_variants_share_a_window_within_share_bins(predictor):
    """Windows are centred on every (2K+1)-th bin: a variant is at most K bins from its window's
    centre, variants of those bins share one reference, and K = 0 is a window centred on each."""
    engine = predictor.engine
    cfg, k = engine.config, engine.default_share_bins()
    assert k == cfg.n_output_bins // 16 == 3
    block = (2 * k + 1) * cfg.bin_size
    starts = {engine.variant_window(pos, k) for pos in range(block * 700, block * 701)}
    assert len(starts) == 1, "one block of 2K+1 bins, one window"
    for pos in range(block * 700 - 300, block * 702, 37):
        centre = engine.variant_window(pos, k) + cfg.seq_len // 2
        assert abs(pos // cfg.bin_size - centre // cfg.bin_size) <= k
        assert engine.variant_window(pos, 0) == engine.window_for(pos)


def test_a_cluster_of_variants_costs_one_reference_per_window(predictor, demo_data):
    """40 SNVs in one block of 2K+1 bins run one reference; the same SNVs centred each on its own
    bin run one per bin."""

    class CountingRunner(LocalRunner):
        def __init__(self, engine):
            super().__init__(engine)
            self.groups = 0

        def predict_groups(self, groups):
            self.groups += len(groups)
            return super().predict_groups(groups)

    engine = predictor.engine
    block = (2 * engine.default_share_bins() + 1) * engine.config.bin_size
    first = (120_000 // block) * block
    with Genome(demo_data / "genome.fa") as genome:
        cluster = [make_variant("chr1", pos + 1, genome.sequence("chr1", pos, pos + 1).upper(),
                                other(genome.sequence("chr1", pos, pos + 1).upper()))
                   for pos in range(first, first + block, block // 40)][:40]
    shared, centred = CountingRunner(engine), CountingRunner(engine)
    VariantScorer(predictor, runner=shared).score(cluster)
    VariantScorer(predictor, ScoringSettings(share_bins=0), runner=centred).score(cluster)
    assert shared.groups == 1
    assert centred.groups == len({v.start // engine.config.bin_size for v in cluster}) > 1


def test_shared_windows_change_scores_little(predictor, demo_data):
    """Against a window centred on each variant, the demo model's reference and alternate sums
    over the scored bins move by under 3% (1.3% at most when measured)."""
    with Genome(demo_data / "genome.fa") as genome:
        variants = [make_variant("chr1", pos, genome.sequence("chr1", pos - 1, pos).upper(),
                                 other(genome.sequence("chr1", pos - 1, pos).upper()))
                    for pos in range(100_001, 200_000, 997) if genome.sequence("chr1", pos - 1, pos).upper() in "ACGT"]
    shared, centred = VariantScorer(predictor).score(variants), VariantScorer(predictor, ScoringSettings(share_bins=0)).score(variants)
    moved = 0
    for a, b in zip(shared, centred):
        for field in ("ref_sum", "alt_sum"):
            i = SCORE_FIELDS.index(field)
            np.testing.assert_allclose(a.scores[:, i], b.scores[:, i], rtol=0.03)
        moved += a.window_start != b.window_start
    assert moved > len(variants) // 2, "most variants are scored off-centre"
    with pytest.raises(InferenceError, match="--share-bins must be from 0 to 12"):
        VariantScorer(predictor, ScoringSettings(share_bins=13))


@pytest.mark.slow
def test_torchrun_ranks_share_the_scoring(precomputed, demo_data, vcf, tmp_path):
    import os
    import subprocess
    import sys

    import torch

    model = str(precomputed.parent / "model.pth.tar")
    args = ["-m", "epiformer.cli", "score-variants", "-m", model, "--fa", str(demo_data / "genome.fa"), "--seqcons",
            str(demo_data / "conservation.bw"), "--vcf", str(vcf), "--chunk", "2", "-q"]
    env = {**os.environ, "OMP_NUM_THREADS": str(torch.get_num_threads())}
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                           *args, "-o", str(tmp_path / "ranks")], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    single = subprocess.run([sys.executable, *args, "-o", str(tmp_path / "one")], capture_output=True, text=True,
                            env=env, timeout=300)
    assert single.returncode == 0, single.stderr[-3000:]
    assert (tmp_path / "ranks.tsv").read_text() == (tmp_path / "one.tsv").read_text()
