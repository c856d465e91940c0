"""The epiformer command: help, the demo, checkpoint inspection and clear errors."""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from epiformer.cli import main
from epiformer.demo.variant_truth import read_variant_truth, variant_auroc, variant_sign_metrics
from epiformer.io.reading import read_table

COMMANDS = ["demo", "demo-data", "generate-datasets", "train", "evaluate", "inspect", "predict", "pred-signals",
            "precompute", "precompute-merge", "hub", "serve", "score-variants", "calibrate", "ism", "interpret"]


def test_help_lists_every_subcommand_and_each_has_help_with_examples(capsys):
    result = subprocess.run([sys.executable, "-m", "epiformer.cli", "--help"],
                            capture_output=True, text=True, check=True)
    listed = result.stdout.split("COMMAND\n", 1)[1].split("\noptions:", 1)[0]
    names = [line.split()[0] for line in listed.splitlines() if line.startswith("    ") and not line.startswith("     ")]
    assert names == COMMANDS
    for command in COMMANDS:
        with pytest.raises(SystemExit) as done:
            main([command, "--help"])
        usage = capsys.readouterr().out
        assert done.value.code == 0 and usage.startswith(f"usage: epiformer {command} "), command
        assert "\nexamples:\n  epiformer " in usage or "\nexamples:\n  # " in usage, command


def test_console_script_is_installed():
    import shutil
    from pathlib import Path

    script = shutil.which("epiformer") or str(Path(sys.executable).parent / "epiformer")
    result = subprocess.run([script, "--version"], capture_output=True, text=True, check=True)
    assert result.stdout.startswith("epiformer ")


def motif_contributions_stand_out(demo: Path) -> None:
    """The trained demo model's gradient x input, per planted element in the cell type where it is
    most active, is larger on its motif sites than on the rest of the element."""
    import pyBigWig

    rows = [line.split("\t") for line in (demo / "data" / "elements.bed").read_text().splitlines()]
    rows = [r for r in rows if r[3] in ("enhancer", "promoter", "ctcf") and r[6] != "."][:24]
    bed = demo / "motif_elements.bed"
    bed.write_text("".join(f"{r[0]}\t{r[1]}\t{r[2]}\n" for r in rows))
    data = demo / "data"
    assert main(["interpret", "-m", str(demo / "runs" / "demo.best_corr.pth.tar"), "--fa", str(data / "genome.fa"),
                 "--seqcons", str(data / "conservation.bw"), "--bed", str(bed), "-o", str(demo / "precompute"),
                 "--device", "cpu", "-q", "--restart"]) == 0, "replacing the demo's own interpretation of its peaks"
    names = [line.split("\t")[1] for line in (data / "targets.txt").read_text().splitlines()[1:]]
    ratios = []
    for chrom, start, end, _, _, heights, sites in rows:
        start, end = int(start), int(end)
        target = names[int(np.argmax([float(h) for h in heights.split(",")]))]
        with pyBigWig.open(str(demo / "precompute" / "tracks" / f"{target}.contrib.bw")) as bw:
            contribution = np.abs(bw.values(chrom, start, end, numpy=True))
        on_site = np.zeros(end - start, bool)
        for site in sites.split(","):
            lo, hi = map(int, site.split("-"))
            on_site[lo - start: hi - start] = True
        ratios.append(contribution[on_site].mean() / contribution[~on_site].mean())
    assert len(ratios) >= 10 and np.median(ratios) > 3, np.round(ratios, 2)


@pytest.mark.slow
def test_demo_end_to_end(tmp_path, capsys):
    """make demo's command: data, shards, a few minutes of training, held-out R >= 0.5."""
    assert main(["demo", "-o", str(tmp_path / "demo"), "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert "test chromosome chr4" in out
    runs = tmp_path / "demo" / "runs"
    rows = [line.split("\t") for line in (runs / "demo.test_metrics.tsv").read_text().splitlines()[1:]]
    mean = dict(zip(rows[0], rows[-1]))
    assert mean["target"] == "mean" and float(mean["pearson_log2"]) >= 0.5
    assert float(mean["specific_r"]) >= 0.45, "the cell types' tracks differ where the observed ones do"
    signs = variant_sign_metrics(tmp_path / "demo" / "variants" / "demo.tsv",
                                 tmp_path / "demo" / "data" / "variants.vcf")
    assert signs["sign_accuracy"] >= 0.75 and signs["pairs"] > 200, signs
    assert "SAD has the true change's sign in" in out
    assert (runs / "demo.learning_curves.png").is_file()
    auroc = variant_auroc(tmp_path / "demo" / "variants" / "demo.tsv", tmp_path / "demo" / "data" / "variants.vcf")
    assert auroc["mean"] >= 0.9, auroc
    assert "|SAD| ranks motif-disrupting above neutral variants with AUROC" in out
    settings, rows = read_table(tmp_path / "demo" / "variants" / "demo.tsv")
    assert settings["percentiles"] == "given", "the demo calibrates with the settings it scores with"
    truth = read_variant_truth(tmp_path / "demo" / "data" / "variants.vcf")
    deletions = [r for r in rows[1:] if len(r[3]) > len(r[4]) and truth[r[0]]["kind"] == "disrupting"]
    lowered = [np.mean([float(r[rows[0].index(f"{cell}.sad")]) for cell in truth[r[0]]["effects"]]) < 0
               for r in deletions]
    assert len(deletions) >= 10 and np.mean(lowered) >= 0.7, "deleting a motif lowers predicted accessibility"
    manifest = json.loads((tmp_path / "demo" / "precompute" / "manifest.json").read_text())
    assert manifest["genome"]["name"] == "demo" and len(manifest["tracks"]) == 8
    assert len(manifest["specificity"]["tracks"]) == 8
    assert all((tmp_path / "demo" / "precompute" / t["file"]).stat().st_size == t["bytes"] for t in manifest["tracks"])
    assert manifest["tracks"][0]["description"] != "predicted HIP accessibility", "described from targets.txt"
    assert "interpret   gradient x input over the 100 strongest predicted peaks" in out
    assert json.loads((tmp_path / "demo" / "precompute" / "manifest.json").read_text())["interpretation"]["regions"] > 0
    motif_contributions_stand_out(tmp_path / "demo")
    assert main(["demo", "-o", str(tmp_path / "demo"), "--device", "cpu"]) == 0
    assert "training    reusing" in capsys.readouterr().out


def test_inspect_original_checkpoint(compat_checkpoint, capsys):
    assert main(["inspect", str(compat_checkpoint)]) == 0
    out = capsys.readouterr().out
    assert "original checkpoint, 157,366 parameters" in out
    assert "8,192 bp -> 48 bins of 128 bp" in out
    assert main(["inspect", str(compat_checkpoint), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["targets"] == ["target_0", "target_1", "target_2"]
    assert summary["config"]["embed_size"] == 64


def test_bad_checkpoint_is_one_line_not_a_traceback(tmp_path):
    bad = tmp_path / "model.pth.tar"
    bad.write_text("not a model")
    result = subprocess.run([sys.executable, "-m", "epiformer.cli", "inspect", str(bad)],
                            capture_output=True, text=True)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().count("\n") == 0
    assert f"checkpoint {bad}: not a readable PyTorch checkpoint" in result.stderr


def test_generate_datasets_with_the_original_flags(demo_data, tmp_path, capsys):
    d = demo_data
    code = main(["generate-datasets", "--target", str(d / "targets.txt"), "--seqcons", str(d / "conservation.bw"),
                 "--fa", str(d / "genome.fa"), "--gsize", str(d / "chrom.sizes"),
                 "--blacklist", str(d / "blacklist.bed"), "--seqlen", "8192", "--nchunk", "40",
                 "--binsize", "128", "-o", str(tmp_path / "ds" / "demo"), "--workers", "2", "-q"])
    assert code == 0
    out = capsys.readouterr().out
    assert "train" in out and "valid" in out and "test" in out
    assert f"manifest: {tmp_path / 'ds' / 'demo'}.json" in out
    manifest = json.loads((tmp_path / "ds" / "demo.json").read_text())
    assert manifest["parameters"]["valid_chroms"] == ["chr2"] and manifest["parameters"]["test_chroms"] == ["chr3"]
    assert all(manifest["splits"][s]["windows"] > 0 for s in ("train", "valid", "test"))
    assert manifest["has_conservation"] is True
    assert manifest["parameters"]["conservation"] == str(d / "conservation.bw")


def test_generate_datasets_without_seqcons(demo_data, tmp_path, capsys):
    import h5py

    d = demo_data
    code = main(["generate-datasets", "--target", str(d / "targets.txt"), "--fa", str(d / "genome.fa"),
                 "--gsize", str(d / "chrom.sizes"), "--seqlen", "8192", "--nchunk", "40",
                 "-o", str(tmp_path / "ds" / "demo"), "--workers", "1", "-q"])
    assert code == 0
    assert f"manifest: {tmp_path / 'ds' / 'demo'}.json" in capsys.readouterr().out
    manifest = json.loads((tmp_path / "ds" / "demo.json").read_text())
    assert manifest["has_conservation"] is False and manifest["parameters"]["conservation"] is None
    with h5py.File(tmp_path / "ds" / manifest["splits"]["train"]["shards"][0]) as h5:
        assert not h5.attrs["has_conservation"] and "conservation" not in h5
        assert json.loads(h5.attrs["parameters"])["conservation"] is None


def test_generate_datasets_bad_input_is_one_line(demo_data, tmp_path):
    d = demo_data
    result = subprocess.run(
        [sys.executable, "-m", "epiformer.cli", "generate-datasets", "--target", str(d / "targets.txt"),
         "--seqcons", str(d / "conservation.bw"), "--fa", str(d / "genome.fa"),
         "--gsize", str(tmp_path / "missing.sizes"), "-o", str(tmp_path / "x")],
        capture_output=True, text=True)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert result.stderr.strip() == (f"epiformer generate-datasets: error: chromosome sizes file "
                                     f"{tmp_path / 'missing.sizes'}: no such file")
