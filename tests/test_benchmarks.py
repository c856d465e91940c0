"""The GPU script runs, in its quick mode on this machine's device, so it cannot rot between the
sessions that have a GPU to run it on."""
from __future__ import annotations

import subprocess

import pytest

from .helpers import ROOT


@pytest.mark.slow
def test_gpu_script_runs_in_quick_mode(tmp_path):
    report = tmp_path / "BENCHMARKS.md"
    run = subprocess.run(["bash", "bench/gpu.sh", "--quick", "--write", str(report)], cwd=ROOT, capture_output=True,
                         text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    table = report.read_text()
    for row in ("forward pass, fp32", "forward pass, bf16", "precompute, 1 Mb synthetic genome",
                "score-variants, 16 dispersed SNVs", "saturation mutagenesis, 10 bp x 3",
                "server variant queries, 1 client", "server variant queries, 16 clients",
                "interpret --method grad, 8 cell types at once", "interpret --method ism, 8 cell types at once"):
        assert f"| {row}" in table, row
    assert "<!-- bench:gpu-quick -->" in table and "windows/s" in table and "hg38 projected" in table
    for row in ("`epiformer precompute", "`epiformer predict", "`epiformer score-variants", "`epiformer ism",
                "`epiformer interpret", "`epiformer hub", "`epiformer serve` (2 workers): launch to ready",
                "first `POST /api/variants`", "first `POST /api/predict`", "first `POST /api/ism`"):
        assert f"| {row}" in table, row
    assert "<!-- bench:paper-cpu-quick -->" in table and "Resident memory per serving worker" in table
