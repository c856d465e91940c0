"""Faults and hardening: a full or read-only disk, a gunicorn worker killed mid-request, Flask's
debug mode and CORS limited to the file routes."""
from __future__ import annotations

import http.client
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from epiformer.io.reading import sha256_file
from epiformer.server import create_app

from .helpers import distinct_window_snvs, gunicorn, make_model_app


def _precompute_command(precomputed: Path, demo_data: Path, out: str) -> str:
    return " ".join([sys.executable, "-m", "epiformer.cli", "precompute", "-m", str(precomputed.parent / "model.pth.tar"),
                     "--fa", str(demo_data / "genome.fa"), "--seqcons", str(demo_data / "conservation.bw"),
                     "--genome", "demo", "-q", "-o", out])


def _in_private_mount(script: str, tmp_path: Path) -> subprocess.CompletedProcess:
    """Run ``script`` (sh) with a private mount namespace, where it may mount a small tmpfs."""
    unshare = shutil.which("unshare")
    if unshare is None:
        pytest.skip("needs unshare (util-linux) to mount a small file system")
    flags = "-m" if os.geteuid() == 0 else "-rm"
    result = subprocess.run([unshare, flags, "sh", "-c", script], cwd=tmp_path, capture_output=True, text=True,
                            timeout=600)
    if result.returncode == 90 or result.stderr.startswith("unshare:"):
        pytest.skip(f"cannot mount a tmpfs here: {result.stderr.strip()[-300:]}")
    return result


def _files(folder: Path) -> dict[str, Path]:
    return {str(p.relative_to(folder)): p for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.slow
@pytest.mark.parametrize("size", ["40k", "160k"])
def test_full_disk_stops_with_a_clear_error_and_no_partial_file(precomputed, demo_data, tmp_path, size):
    """40 kB fills up while the shard is created, 160 kB while the first track is written. Once there
    is room, the same command resumes and its tracks equal those of an uninterrupted run."""
    command = _precompute_command(precomputed, demo_data, "disk/out")
    result = _in_private_mount(f"""
        mkdir -p disk
        mount -t tmpfs -o size={size} tmpfs disk || exit 90
        {command} > full.log 2>&1; echo $? > full.rc
        cp -a disk/. after_full/
        mount -o remount,size=16m disk
        {command} > resumed.log 2>&1; echo $? > resumed.rc
        cp -a disk/. after_resume/
    """, tmp_path)
    assert result.returncode == 0, result.stderr
    log = (tmp_path / "full.log").read_text()
    assert (tmp_path / "full.rc").read_text().strip() == "2", log
    assert "epiformer precompute: error: cannot write disk/out/" in log and "no space left on the device" in log
    assert "Traceback" not in log
    left = _files(tmp_path / "after_full" / "out")
    assert not [name for name in left if name.endswith(".tmp") or Path(name).name.startswith(".")], left
    assert not [name for name in left if name.endswith(".bw")], "a track was written on a full disk"
    assert "manifest.json" not in left
    assert (tmp_path / "resumed.rc").read_text().strip() == "0", (tmp_path / "resumed.log").read_text()
    resumed = _files(tmp_path / "after_resume" / "out" / "tracks")
    expected = _files(precomputed / "tracks")
    assert resumed.keys() == expected.keys() and len(expected) == 8
    assert all(sha256_file(resumed[name]) == sha256_file(expected[name]) for name in expected)


@pytest.mark.slow
def test_read_only_output_is_a_clear_error(precomputed, demo_data, tmp_path):
    result = _in_private_mount(f"""
        mkdir -p disk
        mount -t tmpfs -o size=1m,ro tmpfs disk || exit 90
        {_precompute_command(precomputed, demo_data, "disk/out")} > ro.log 2>&1; echo $? > ro.rc
    """, tmp_path)
    assert result.returncode == 0, result.stderr
    log = (tmp_path / "ro.log").read_text()
    assert (tmp_path / "ro.rc").read_text().strip() == "2"
    assert "epiformer precompute: error: cannot write disk/out" in log and "Read-only file system" in log
    assert "Traceback" not in log


@pytest.mark.slow
def test_a_worker_killed_mid_request_is_replaced_and_the_client_gets_an_error(precomputed, demo_data, tmp_path):
    settings = {"EPIFORMER_PRECOMPUTE_DIR": str(precomputed), "EPIFORMER_HUB_DIR": str(tmp_path / "hub"),
                "EPIFORMER_WORKERS": "1", "EPIFORMER_MODELS": str(precomputed.parent / "model.pth.tar"),
                "EPIFORMER_DEVICE": "cpu", "EPIFORMER_CACHE_WINDOWS": "0"}
    variants = distinct_window_snvs(demo_data, 100)
    with gunicorn(settings, tmp_path / "gunicorn.log") as server:
        [worker] = server.workers()
        host, port = server.base.removeprefix("http://").split(":")
        conn = http.client.HTTPConnection(host, int(port), timeout=60)
        conn.request("POST", "/api/variants", body=json.dumps({"variants": variants}),
                     headers={"Content-Type": "application/json"})
        time.sleep(0.5)
        os.kill(worker, signal.SIGKILL)
        started = time.monotonic()
        with pytest.raises((http.client.RemoteDisconnected, ConnectionError)):
            conn.getresponse().read()
        assert time.monotonic() - started < 10, "the client waited instead of getting an error"
        conn.close()
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not [pid for pid in server.workers() if pid != worker]:
            time.sleep(0.2)
        [replacement] = server.workers()
        assert replacement != worker
        conn = http.client.HTTPConnection(host, int(port), timeout=120)   # waits in the backlog while it boots
        conn.request("POST", "/api/variants", body=json.dumps({"variants": variants[:2]}),
                     headers={"Content-Type": "application/json"})
        response = conn.getresponse()
        assert response.status == 200 and len(json.loads(response.read())["results"]) == 2
        conn.close()
    assert f"Worker (pid:{worker}) was sent SIGKILL" in server.output()


def out_of_memory_above_two(engine) -> None:
    """Make ``engine``'s models run out of device memory on batches of more than two windows, in
    the tower and in the rest alike (whole windows and incremental alternates both use them)."""
    def limited(original):
        def run(batch):
            if len(batch) > 2:
                raise torch.OutOfMemoryError("CUDA out of memory (forced by the test)")
            return original(batch)
        return run

    for model in getattr(engine.model, "members", [engine.model]):
        model.conv.forward = limited(model.conv.forward)
        model.from_tower = limited(model.from_tower)


def test_out_of_memory_splits_the_batch_instead_of_failing_the_request(precomputed, demo_data, tmp_path):
    app = make_model_app(precomputed, tmp_path / "hub", cache_windows=0)
    predictor = app.config["PREDICTOR"]
    query = {"variants": distinct_window_snvs(demo_data, 6)}
    expected = app.test_client().post("/api/variants", json=query).json
    out_of_memory_above_two(predictor.engine)
    response = app.test_client().post("/api/variants", json=query)
    assert response.status_code == 200 and predictor.engine.oom_splits > 0
    for got, want in zip(response.json["results"], expected["results"]):
        for target, scores in want["scores"].items():
            assert got["scores"][target]["sad"] == pytest.approx(scores["sad"], abs=1e-4)
    predictor.close()


def test_debug_mode_is_never_on_and_errors_hide_tracebacks(precomputed, tmp_path, monkeypatch):
    monkeypatch.setenv("FLASK_DEBUG", "1")
    app = create_app({"precompute_dir": str(precomputed), "hub_dir": str(tmp_path / "hub"), "log_requests": False})
    assert app.debug is False and app.config["DEBUG"] is False

    @app.get("/fails")
    def fails():
        raise RuntimeError("secret internals")

    response = app.test_client().get("/fails")
    assert response.status_code == 500 and response.json["error"]["status"] == 500
    assert b"secret internals" not in response.data and b"Traceback" not in response.data


def test_cors_only_on_file_routes(client):
    origin = {"Origin": "http://elsewhere.example"}
    assert client.get("/hub/hub.txt", headers=origin).headers["Access-Control-Allow-Origin"] == "*"
    assert client.get("/hub/missing.bw", headers=origin).headers["Access-Control-Allow-Origin"] == "*"
    for path in ("/", "/api/tracks", "/api/openapi.json", "/healthz", "/readyz"):
        assert "Access-Control-Allow-Origin" not in client.get(path, headers=origin).headers, path
    for path in ("/api/variants", "/api/predict"):
        response = client.post(path, json={}, headers=origin)
        assert "Access-Control-Allow-Origin" not in response.headers, path
        assert client.options(path, headers={**origin, "Access-Control-Request-Method": "POST"}
                              ).headers.get("Access-Control-Allow-Origin") is None
