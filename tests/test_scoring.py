"""score-variants: VCF/TSV reading with line numbers, outputs, resume, mismatch modes, and the same
scores as the server."""
from __future__ import annotations

import gzip
import json

import h5py
import numpy as np
import pytest

from epiformer.cli import main
from epiformer.engine import Engine
from epiformer.genome import Genome
from epiformer.modelset import load_model_set
from epiformer.scoring import ScoreOptions, score_variant_file
from epiformer.variants import SCORE_FIELDS
from epiformer.vcf import Skipped, VariantRecord, VcfError, read_variants

from .conftest import make_model_app

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
        f"1\t100050\t.\t{b2}\t{other(b2)}\t.\tPASS\t.",                           # contig named differently
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


@pytest.fixture
def engine(precomputed):
    return Engine(load_model_set([str(precomputed.parent / "model.pth.tar")]), device="cpu")


def run(engine, demo_data, vcf, out, **options):
    with Genome(demo_data / "genome.fa", demo_data / "conservation.bw") as genome:
        return score_variant_file(engine, genome, vcf, out, ScoreOptions(progress=False, **options))


def test_outputs_and_mismatch_modes(engine, demo_data, vcf, tmp_path):
    result = run(engine, demo_data, vcf, tmp_path / "s")
    assert result["scored"] == 3 and result["skipped"] == 6
    skipped = (tmp_path / "s.skipped.tsv").read_text()
    assert "the genome calls it 'chr1'" in skipped and "reference mismatch" in skipped
    rows = [line.split("\t") for line in (tmp_path / "s.tsv").read_text().splitlines()]
    assert rows[0][:6] == ["id", "chrom", "pos", "ref", "alt", "flag"] and len(rows[0]) == 6 + 8 * len(SCORE_FIELDS)
    with h5py.File(tmp_path / "s.h5") as f:
        assert list(f.attrs["targets"]) == engine.target_names
        sad = f["scores/sad"][:]
        assert sad.shape == (3, 8)
        np.testing.assert_allclose(sad[:, 0], [float(r[6 + SCORE_FIELDS.index("sad")]) for r in rows[1:]], rtol=1e-5)
        assert [v.decode() if isinstance(v, bytes) else v for v in f["variants/flag"][:]] == ["ok"] * 3
    annotated = [line for line in (tmp_path / "s.vcf").read_text().splitlines() if not line.startswith("##")]
    assert "EPI_SAD_HIP=" in annotated[1] and annotated[1].count("EPI_FLAG=ok,ok") == 1
    assert "EPI_" not in annotated[3], "a symbolic record is left as it was"
    swapped = run(engine, demo_data, vcf, tmp_path / "w", on_mismatch="swap")
    assert swapped["scored"] == 4
    assert "\tswapped\t" in (tmp_path / "w.tsv").read_text()


def test_resume_redoes_only_missing_parts(engine, demo_data, vcf, tmp_path):
    run(engine, demo_data, vcf, tmp_path / "a", chunk=3)
    first = (tmp_path / "a.tsv").read_text()
    parts = sorted((tmp_path / "a.parts").glob("part-*.npz"))
    assert len(parts) == 3, "nine entries, three to a part"
    parts[1].unlink()
    again = run(engine, demo_data, vcf, tmp_path / "a", chunk=3)
    assert again["resumed_parts"] == 2 and (tmp_path / "a.tsv").read_text() == first
    with pytest.raises(VcfError, match="holds another scoring run .* --restart"):
        run(engine, demo_data, vcf, tmp_path / "a", chunk=3, score_bp=10)
    with Genome(demo_data / "genome.fa", demo_data / "conservation.bw") as genome:
        restarted = score_variant_file(engine, genome, vcf, tmp_path / "a", ScoreOptions(progress=False, chunk=3,
                                                                                         score_bp=10), restart=True)
    assert restarted["resumed_parts"] == 0 and (tmp_path / "a.tsv").read_text() != first


def test_cli_and_server_give_the_same_scores(precomputed, demo_data, vcf, tmp_path, capsys):

    model = str(precomputed.parent / "model.pth.tar")
    assert main(["score-variants", "-m", model, "--fa", str(demo_data / "genome.fa"), "--seqcons",
                 str(demo_data / "conservation.bw"), "--vcf", str(vcf), "-o", str(tmp_path / "cli"), "-q",
                 "--device", "cpu"]) == 0
    assert "scored 3 variants, skipped 6" in capsys.readouterr().out
    rows = [line.split("\t") for line in (tmp_path / "cli.tsv").read_text().splitlines()]
    app = make_model_app(precomputed, tmp_path / "hub", models=[model])
    body = app.test_client().post("/api/variants", json={"variants": [
        {"chrom": r[1], "pos": int(r[2]), "ref": r[3].replace("-", ""), "alt": r[4].replace("-", "")}
        for r in rows[1:]]}).json
    app.config["PREDICTOR"].close()
    for row, result in zip(rows[1:], body["results"]):
        for t, name in enumerate(body["targets"]):
            for f in ("sad", "log2fc", "d1"):
                cli = float(row[6 + t * len(SCORE_FIELDS) + SCORE_FIELDS.index(f)])
                assert cli == pytest.approx(result["scores"][name][f], rel=1e-4, abs=1e-6)
    assert json.loads(json.dumps(body))["problems"] == []
    assert main(["score-variants", "-m", model, "--fa", str(demo_data / "genome.fa"), "--vcf",
                 str(tmp_path / "none.vcf"), "-o", str(tmp_path / "x"), "-q"]) == 2
    assert "no such file" in capsys.readouterr().err


def test_calibration_gives_percentiles_in_cli_and_server(precomputed, demo_data, vcf, tmp_path, capsys):
    import shutil

    from epiformer.calibration import Calibration, calibration_path, random_snvs

    model = tmp_path / "model.pth.tar"
    shutil.copy(precomputed.parent / "model.pth.tar", model)
    with Genome(demo_data / "genome.fa") as genome:
        background = random_snvs(genome, 50, seed=1)
        assert all(genome.sequence(r.variant.chrom, r.variant.start, r.variant.end).upper() == r.variant.ref
                   for r in background)
    common = ["--fa", str(demo_data / "genome.fa"), "--seqcons", str(demo_data / "conservation.bw"), "--device", "cpu",
              "-q"]
    assert main(["calibrate", "-m", str(model), "-n", "64", *common]) == 0
    assert "calibrated on 64 random SNVs" in capsys.readouterr().out
    calibration = Calibration.load(calibration_path([str(model)]))
    assert calibration.size == 64 and calibration.targets[0] == "HIP"
    assert np.all(np.diff(calibration.background["sad"], axis=1) >= 0)
    scores = np.zeros((1, 8, len(SCORE_FIELDS)))
    scores[0, :, SCORE_FIELDS.index("sad")] = -calibration.background["sad"][:, 31]
    assert calibration.percentiles(scores)[0, :, 0] == pytest.approx(50.0, abs=2)
    assert main(["score-variants", "-m", str(model), "--vcf", str(vcf), "-o", str(tmp_path / "s"), *common]) == 0
    header = (tmp_path / "s.tsv").read_text().splitlines()[0].split("\t")
    assert "HIP.sad_pct" in header and "ET.d2_pct" in header
    row = (tmp_path / "s.tsv").read_text().splitlines()[1].split("\t")
    app = make_model_app(precomputed, tmp_path / "hub", models=[str(model)])
    body = app.test_client().post("/api/variants", json={"variants": [f"{row[1]}:{row[2]}:{row[3]}:{row[4]}"]}).json
    app.config["PREDICTOR"].close()
    assert body["results"][0]["scores"]["HIP"]["percentiles"]["sad"] == pytest.approx(
        float(row[header.index("HIP.sad_pct")]), abs=1e-4)
    assert main(["score-variants", "-m", str(model), "--vcf", str(vcf), "-o", str(tmp_path / "t"), "--score-bp", "100",
                 *common]) == 0
    assert "no percentiles for --score-bp 100" in capsys.readouterr().out


def test_indel_predictions_are_mapped_back_to_reference_bins():
    from epiformer.variants import Variant, to_reference_bins

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


def test_shards_write_the_same_outputs(engine, demo_data, vcf, tmp_path):
    run(engine, demo_data, vcf, tmp_path / "one", chunk=2)
    with Genome(demo_data / "genome.fa", demo_data / "conservation.bw") as genome:
        first = score_variant_file(engine, genome, vcf, tmp_path / "two", ScoreOptions(progress=False, chunk=2,
                                                                                       log=lambda _: None), shard=(1, 2))
        assert first["files"] == [] and first["missing_parts"] == 3
        second = score_variant_file(engine, genome, vcf, tmp_path / "two", ScoreOptions(progress=False, chunk=2),
                                    shard=(0, 2))
    assert len(second["files"]) == 4
    for suffix in (".tsv", ".skipped.tsv", ".vcf"):
        assert (tmp_path / f"two{suffix}").read_text() == (tmp_path / f"one{suffix}").read_text()


def test_shift_ensembling_averages_shifted_windows(precomputed, demo_data, vcf):
    from epiformer.engine import PredictionCache
    from epiformer.scoring import score_chunk
    from epiformer.variants import encode_edited, score_arrays, score_bins, window_start

    model = load_model_set([str(precomputed.parent / "model.pth.tar")])
    shifted = Engine(model, device="cpu", shifts=(-2, 0, 2))
    plain = Engine(model, device="cpu")
    records = [e for e in read_variants(vcf) if isinstance(e, VariantRecord)][:1]
    v = records[0].variant
    with Genome(demo_data / "genome.fa", demo_data / "conservation.bw") as genome:
        got = score_chunk(shifted, genome, records, ScoreOptions(), PredictionCache(0), True)["scores"][0]
        start = window_start(v.start, 8192, 128)
        ref, alt = (np.mean([plain.predict(encode_edited(genome, v.chrom, start + d, 8192, edits)[None])[0]
                             for d in (-2, 0, 2)], axis=0) for edits in ([], [v]))
    output_start = start + plain.output_offset
    expected = score_arrays(ref, alt, score_bins(output_start, 128, 48, v, 1024), output_start, 128)
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-6)


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
