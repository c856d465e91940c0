"""Model sets, reverse-complement ensembling, region tiling and `epiformer predict`."""
import json

import numpy as np
import pyBigWig
import pytest
import torch

from epiformer import load_model, save_checkpoint
from epiformer.cli import main
from epiformer.genome.intervals import parse_region
from epiformer.genome.reader import Genome, GenomeError
from epiformer.inference.engine import Engine
from epiformer.model.config import preset
from epiformer.model.model_set import ModelSetError, load_model_set, parse_model_specs
from epiformer.model.network import Epiformer

from .helpers import single_output_original, write_fasta


@pytest.fixture
def genome(tmp_path):
    rng = np.random.default_rng(4)
    fasta = write_fasta(tmp_path / "g.fa", {"chr1": "".join(rng.choice(list("ACGT"), 60_000)),
                                            "chr2": "".join(rng.choice(list("ACGT"), 20_000))})
    with Genome(fasta) as g:
        yield g


def test_region_strings_are_one_based_inclusive():
    assert parse_region("chr1:1,000,001-1,100,000") == ("chr1", 1_000_000, 1_100_000)
    assert parse_region("chrUn_KI270302v1:5-5") == ("chrUn_KI270302v1", 4, 5)
    assert parse_region("chr2:10") == ("chr2", 9, 10)
    for bad in ("chr1", "chr1:0-10", "chr1:20-10", "chr1:a-b", ":1-2"):
        with pytest.raises(GenomeError):
            parse_region(bad)


def test_model_specs(tmp_path):
    table = tmp_path / "models.tsv"
    table.write_text("name\tcheckpoint\toutput\nMGC\tm1.pth.tar\t\nOPC\t/abs/m2.pth.tar\t2\n")
    specs = parse_model_specs(["a.pth.tar", "VIP=b.pth.tar", str(table)])
    assert [(s.name, s.path.name, s.output) for s in specs] == [
        (None, "a.pth.tar", None), ("VIP", "b.pth.tar", None), ("MGC", "m1.pth.tar", None), ("OPC", "m2.pth.tar", 2)]
    assert specs[2].path == tmp_path / "m1.pth.tar"
    table.write_text("MGC\tm1.pth.tar\tx\n")
    with pytest.raises(ModelSetError, match="line 1: output index must be an integer"):
        parse_model_specs([str(table)])


def test_two_original_single_output_checkpoints_match_each_alone(compat_checkpoint, compat_io, tmp_path):
    a = single_output_original(compat_checkpoint, tmp_path / "a.pth.tar", 0)
    b = single_output_original(compat_checkpoint, tmp_path / "b.pth.tar", 2)
    pair = load_model_set([f"MGC={a}", f"OPC={b}"])
    assert pair.target_names == ["MGC", "OPC"]
    x = compat_io["model_input"]
    together = Engine(pair, device="cpu").predict(x)
    alone = [Engine(load_model_set([f"T={p}"]), device="cpu").predict(x) for p in (a, b)]
    np.testing.assert_allclose(together[:, 0], alone[0][:, 0], atol=1e-6)
    np.testing.assert_allclose(together[:, 1], alone[1][:, 0], atol=1e-6)
    expected = compat_io["expected_output"]
    no_rc = Engine(pair, device="cpu", reverse_complement=False).predict(x)
    np.testing.assert_allclose(no_rc[:, 0], expected[:, 0], atol=1e-4)
    np.testing.assert_allclose(no_rc[:, 1], expected[:, 2], atol=1e-4)


def test_names_for_original_checkpoints(compat_checkpoint, tmp_path):
    single = single_output_original(compat_checkpoint, tmp_path / "s.pth.tar", 1)
    with pytest.raises(ModelSetError, match="carries no target names .* -m NAME="):
        load_model_set([str(single)])
    targets = tmp_path / "targets.txt"
    targets.write_text("index\tidentifier\tfile\tclip\tsum_stat\tdescription\n"
                       "0\tHIP\th.bw\t32\tmean\thip\n1\tMGC\tm.bw\t32\tmean\tmicroglia\n2\tOPC\to.bw\t32\tmean\topc\n")
    assert load_model_set([str(single)], targets=targets, index=1).target_names == ["MGC"]
    assert load_model_set([str(compat_checkpoint)], targets=targets).target_names == ["HIP", "MGC", "OPC"]
    with pytest.raises(ModelSetError, match="names one output, but .* has 3"):
        load_model_set([f"X={compat_checkpoint}"])


def test_replicates_are_averaged_only_when_asked(compat_checkpoint, compat_io, tmp_path):
    a = single_output_original(compat_checkpoint, tmp_path / "a.pth.tar", 0)
    b = single_output_original(compat_checkpoint, tmp_path / "b.pth.tar", 1)
    with pytest.raises(ModelSetError, match="'MGC' is predicted by 2 checkpoints: pass --average"):
        load_model_set([f"MGC={a}", f"MGC={b}"])
    averaged = load_model_set([f"MGC={a}", f"MGC={b}"], average=True)
    assert averaged.target_names == ["MGC"]
    out = Engine(averaged, device="cpu", reverse_complement=False).predict(compat_io["model_input"])
    expected = compat_io["expected_output"][:, :2].mean(axis=1)
    np.testing.assert_allclose(out[:, 0], expected, atol=1e-4)


def test_set_members_must_share_window_geometry(compat_checkpoint, tmp_path):
    other = save_checkpoint(tmp_path / "other.pth.tar", Epiformer(preset("tiny", seq_len=4096, multiout_dim=1), ["VIP"]))
    single = single_output_original(compat_checkpoint, tmp_path / "s.pth.tar", 0)
    with pytest.raises(ModelSetError, match="must share seq_len, bin_size and crop_size"):
        load_model_set([f"HIP={single}", str(other)])


def test_reverse_complement_ensemble_is_strand_symmetric(tiny_model):
    x = np.random.default_rng(0).random((2, 4, 8192), dtype=np.float32)
    engine = Engine(tiny_model, device="cpu")
    forward = engine.predict(x)
    reverse = engine.predict(x[:, ::-1, ::-1].copy())
    np.testing.assert_allclose(forward, reverse[:, :, ::-1], atol=1e-5)
    plain = Engine(tiny_model, device="cpu", reverse_complement=False).predict(x)
    with torch.inference_mode():
        np.testing.assert_allclose(plain, tiny_model(torch.from_numpy(x)).numpy(), atol=1e-6)


def test_windows_tile_regions_without_gaps(tiny_model, genome):
    engine = Engine(tiny_model, device="cpu", batch_size=3)
    span, offset = engine.output_span, engine.output_offset
    assert (span, offset) == (48 * 128, 8 * 128)
    assert engine.region_windows(10_000, 10_100) == [(10_050 // 128) * 128 - 4096], "centred, on the grid"
    starts = engine.region_windows(5_000, 5_000 + 3 * span + 1)
    assert len(starts) == 4 and starts[0] + offset == 4_992, "tiles start at the bin holding the region's start"
    assert all(b - a == span for a, b in zip(starts, starts[1:]))
    track = engine.predict_region(genome, "chr1", 5_000, 25_000)
    assert track.start == 4_992 and track.end >= 25_000 and track.end - 25_000 < 128
    direct = engine.predict_intervals(genome, [("chr1", s) for s in engine.region_windows(5_000, 25_000)])
    np.testing.assert_allclose(track.values, np.concatenate(list(direct), axis=1)[:, : track.values.shape[1]])
    short = engine.predict_region(genome, "chr2", 100, 200)
    assert short.values.shape == (8, 48) and short.start == 128 - 4096 + offset


def test_one_window_rule_on_the_bin_grid(tiny_model):
    """Every window lies on the precomputed tracks' bin grid; a region one output can hold gets one
    window that holds it (moved off centre by whole bins when needed), a longer one is tiled."""
    engine = Engine(tiny_model, device="cpu")
    span, offset = engine.output_span, engine.output_offset
    for start, end in [(0, 1), (64, 64 + span - 64), (130, 131), (5_000, 5_000 + span - 128), (64, 64 + span),
                       (1_000, 1_000 + 2 * span)]:
        starts = engine.region_windows(start, end)
        assert all((s + offset) % 128 == 0 for s in starts)
        assert starts[0] + offset <= start and starts[-1] + offset + span >= end
        assert len(starts) == (1 if (start // 128) * 128 + span >= end else -(-(end - (start // 128) * 128) // span))
    assert engine.region_windows(130, 131) == [engine.window_for(130)], "a base gets its variant window"
    assert engine.region_windows(64, 64 + span - 64) == [-offset], "moved by whole bins to hold the region"


def test_shift_ensemble_averages_shifted_windows(tiny_model, genome):
    engine = Engine(tiny_model, device="cpu", shifts=(-1, 0, 1))
    one = Engine(tiny_model, device="cpu")
    got = engine.predict_intervals(genome, [("chr1", 20_000)])
    expected = np.mean([one.predict_intervals(genome, [("chr1", 20_000 + s)]) for s in (-1, 0, 1)], axis=0)
    np.testing.assert_allclose(got, expected, atol=1e-6)


def test_predict_command_outputs_agree(tmp_path, genome, capsys):
    model = Epiformer(preset("tiny"), [f"CT{i}" for i in range(8)]).eval()
    ckpt = save_checkpoint(tmp_path / "m.pth.tar", model)
    fa = str(genome.fasta_path)
    base = ["predict", "-m", str(ckpt), "-d", fa, "-r", "chr1:10,001-30,000", "-r", "chr2:1-100", "--no-conservation"]
    assert main(base[:-1] + ["-o", str(tmp_path / "p")]) == 2
    assert "trained with conservation (if_cons true): give its track with --seqcons" in capsys.readouterr().err
    assert main(base + ["-o", str(tmp_path / "p"), "--format", "tsv"]) == 0
    lines = (tmp_path / "p.tsv").read_text().splitlines()
    settings = json.loads(lines[0].removeprefix("#epiformer_settings="))
    assert settings["conservation"] == "none" and settings["precision"] == "fp32" and settings["shifts"] == [0]
    rows = [line.split("\t") for line in lines[1:]]
    assert rows[0] == ["chrom", "start", "end"] + [f"CT{i}" for i in range(8)]
    assert rows[1][:3] == ["chr1", "9984", "10112"], "bins on the 128 bp grid of the precomputed tracks"
    assert main(base + ["-o", str(tmp_path / "p"), "--format", "bigwig"]) == 0
    with pyBigWig.open(str(tmp_path / "p.CT3.bw")) as bw:
        assert bw.chroms() == {"chr1": 60_000, "chr2": 20_000}
        first = [r for r in rows[1:] if r[0] == "chr1"]
        values = bw.values("chr1", 10_000, int(first[-1][2]))
        np.testing.assert_allclose(values[::128], [float(r[6]) for r in first], rtol=1e-4)
        chr2 = bw.intervals("chr2")
        assert chr2[0][:2] == (0, 128), "bins lie on the 128 bp grid from the chromosome start"
        assert all(b[0] == a[1] for a, b in zip(chr2, chr2[1:]))
    assert main(base + ["-o", str(tmp_path / "p"), "--format", "bedgraph"]) == 0
    bedgraph = (tmp_path / "p.CT0.bedGraph").read_text().splitlines()
    assert bedgraph[0].startswith("#epiformer_settings=") and bedgraph[1].startswith("track type=bedGraph")
    assert json.loads((tmp_path / "p.settings.json").read_text()) == settings
    capsys.readouterr()
    assert main(base + ["-o", str(tmp_path / "x"), "--seqlen", "98304"]) == 2
    assert "--seqlen 98304 does not match the model, which takes 8192" in capsys.readouterr().err
    assert main(["predict", "-m", str(ckpt), "-d", fa, "-r", "chr9:1-100", "-o", str(tmp_path / "x"),
                 "--no-conservation"]) == 2
    assert "chromosome 'chr9' is not in" in capsys.readouterr().err


def test_predict_against_observed(tmp_path, demo_data, capsys):
    model = Epiformer(preset("tiny", multiout_dim=3), ["HIP", "MGC", "Other"]).eval()
    ckpt = save_checkpoint(tmp_path / "m.pth.tar", model)
    code = main(["predict", "-m", str(ckpt), "-d", str(demo_data / "genome.fa"), "-s", str(demo_data / "conservation.bw"),
                 "-r", "chr1:20,001-40,000", "-o", str(tmp_path / "p"), "-t", str(demo_data / "targets.txt")])
    assert code == 0
    out = capsys.readouterr().out
    assert "HIP        Pearson R (log2) against observed" in out and ", cell-type-specific R " in out
    assert "Other      Pearson" not in out, "targets not in targets.txt are not compared"
    assert "mean       Pearson R (log2) against observed" in out and "bins where a target is at least 0.5)" in out
    assert (tmp_path / "p.predicted_vs_observed.png").read_bytes()[:4] == b"\x89PNG"
    assert load_model(ckpt).target_names == ["HIP", "MGC", "Other"]


def test_a_set_uses_one_encoding(compat_checkpoint, tmp_path):
    with_cons = single_output_original(compat_checkpoint, tmp_path / "a.pth.tar", 0)
    ckpt = torch.load(with_cons, weights_only=True)
    ckpt["param"]["if_cons"] = False
    torch.save(ckpt, tmp_path / "b.pth.tar")
    with pytest.raises(ModelSetError, match="disagree on conservation"):
        load_model_set([f"A={with_cons}", f"B={tmp_path / 'b.pth.tar'}"])


def test_shift_flag_is_parsed_once_for_every_command(capsys):
    from epiformer.cli import build_parser

    for command in (["predict", "-r", "chr1:1-2", "-o", "o"], ["precompute", "-o", "o"], ["score-variants", "--vcf", "v", "-o", "o"]):
        args = build_parser().parse_args(command + ["-m", "m", "--fa", "f", "--shifts=-2,0,2"])
        assert args.shifts == (-2, 0, 2)
        with pytest.raises(SystemExit):
            build_parser().parse_args(command + ["-m", "m", "--fa", "f", "--shifts=a,b"])
        assert "expected comma-separated whole numbers" in capsys.readouterr().err


@pytest.fixture
def original_layout_folder(tmp_path, demo_data, precomputed):
    """The original pred_signals.py's working folder over the demo genome: genome/demo.fa,
    genome/demo.phastCons.bw, targets/demo.targets.txt and the tiny eight-target model."""
    import shutil

    for sub in ("genome", "targets", "pred"):
        (tmp_path / sub).mkdir()
    shutil.copy(demo_data / "genome.fa", tmp_path / "genome" / "demo.fa")
    shutil.copy(demo_data / "conservation.bw", tmp_path / "genome" / "demo.phastCons.bw")
    header, *rows = [line.split("\t") for line in (demo_data / "targets.txt").read_text().splitlines()]
    paths = [header.index("file"), header.index("peak")]
    rows = [[str(demo_data / v) if i in paths else v for i, v in enumerate(row)] for row in rows]
    (tmp_path / "targets" / "demo.targets.txt").write_text("".join("\t".join(r) + "\n" for r in [header, *rows]))
    shutil.copy(precomputed.parent / "model.pth.tar", tmp_path / "model.pth.tar")
    return tmp_path


def test_pred_signals_takes_the_originals_flags_and_writes_its_files(original_layout_folder, capsys, monkeypatch):
    import pysam

    monkeypatch.chdir(original_layout_folder)
    flags = ["pred-signals", "-m", "model.pth.tar", "-s", "demo", "-r", "chr1:100001-105000", "-d", "./",
             "--seqlen", "8192", "--binsize", "128", "--device", "cpu"]
    assert main([*flags, "--index", "4", "-o", "pred/MGC"]) == 0
    assert "Model_Corr (MGC" in capsys.readouterr().out
    prefix = original_layout_folder / "pred" / "MGC.demo.chr1:100001-105000"
    predicted, observed = (np.loadtxt(f"{prefix}.{k}_signals.tsv", ndmin=2) for k in ("pred", "true"))
    assert predicted.shape == observed.shape == (1, 48)
    with pyBigWig.open(f"{prefix}.MGC.bw") as bw:
        np.testing.assert_allclose(predicted[0], [v for _, _, v in bw.intervals("chr1")], rtol=1e-6)
    assert main([*flags, "-o", "pred/all"]) == 0                 # no --index: every output, one row each
    assert np.loadtxt(original_layout_folder / "pred" / "all.demo.chr1:100001-105000.pred_signals.tsv").shape == (8, 48)

    (original_layout_folder / "genome" / "demo.phastCons.bw").unlink()
    fasta = original_layout_folder / "genome" / "demo.fa"
    pysam.tabix_compress(str(fasta), f"{fasta}.gz")          # bgzip
    fasta.unlink()
    assert main([*flags, "--index", "4", "-o", "pred/nocons"]) == 0          # genome/demo.fa.gz, as it shipped
    assert "no genome/demo.phastCons.bw" in capsys.readouterr().out
    for extra, message in ((["--index", "99", "-o", "pred/x"], "--index 99 is out of range"),
                           (["-s", "mouse", "-o", "pred/x"], "no genome FASTA"),
                           (["--seqlen", "98304", "-o", "pred/x"], "--seqlen 98304 does not match the model")):
        assert main([*flags, *extra]) == 2
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err, err
