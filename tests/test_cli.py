"""The epiformer command: help, the demo, checkpoint inspection and clear errors."""
import json
import subprocess
import sys

from epiformer.cli import main


def test_help_lists_subcommands():
    result = subprocess.run([sys.executable, "-m", "epiformer.cli", "--help"],
                            capture_output=True, text=True, check=True)
    for command in ("demo", "demo-data", "generate-datasets", "inspect"):
        assert command in result.stdout


def test_console_script_is_installed():
    import shutil
    from pathlib import Path

    script = shutil.which("epiformer") or str(Path(sys.executable).parent / "epiformer")
    result = subprocess.run([script, "--version"], capture_output=True, text=True, check=True)
    assert result.stdout.startswith("epiformer ")


def test_demo_prints_shapes(tmp_path, capsys):
    assert main(["demo", "-o", str(tmp_path / "demo"), "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert "input       (1, 4, 8192)" in out
    assert "targets     (1, 8, 64)" in out
    assert "prediction  (1, 8, 48)" in out
    assert (tmp_path / "demo" / "data" / "genome.fa").is_file()
    assert (tmp_path / "demo" / "datasets" / "demo.json").is_file()


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
