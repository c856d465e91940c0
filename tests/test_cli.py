"""The epiformer command: help, the demo, checkpoint inspection and clear errors."""
import json
import subprocess
import sys

from epiformer.cli import main


def test_help_lists_subcommands():
    result = subprocess.run([sys.executable, "-m", "epiformer.cli", "--help"],
                            capture_output=True, text=True, check=True)
    for command in ("demo", "inspect"):
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
    assert "prediction  (1, 8, 48)" in out
    assert (tmp_path / "demo" / "genome.fa").is_file()
    assert (tmp_path / "demo" / "conservation.bw").is_file()


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
