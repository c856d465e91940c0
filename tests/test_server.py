"""The Flask server: hub files with byte ranges as UCSC and igv.js read them, confinement, the
tracks API, health checks, configuration, and gunicorn serving a real remote reader."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pyBigWig
import pytest

from epiformer.server import create_app
from epiformer.server.server_config import ServerConfigError, load_config

from .helpers import free_port, gunicorn


@pytest.fixture
def track_path(app) -> Path:
    return next((Path(app.config["HUB_DIR"]) / "tracks").glob("HIP.*.bw"))


@pytest.fixture
def track_url(track_path) -> str:
    return f"/hub/tracks/{track_path.name}"


def test_head_and_full_get(client, track_path, track_url):
    head = client.head(track_url)
    size = track_path.stat().st_size
    assert head.status_code == 200 and int(head.headers["Content-Length"]) == size
    assert head.headers["Accept-Ranges"] == "bytes" and head.headers["ETag"] and head.headers["Last-Modified"]
    assert head.data == b""
    full = client.get(track_url, headers={"Accept-Encoding": "gzip"})
    assert full.data == track_path.read_bytes() and "Content-Encoding" not in full.headers


@pytest.mark.parametrize("header, first, last", [("bytes=0-99", 0, 99), ("bytes=100-", 100, None),
                                                 ("bytes=-500", -500, None), ("bytes=1000-999999999", 1000, None)])
def test_byte_ranges(client, track_path, track_url, header, first, last):
    data = track_path.read_bytes()
    size = len(data)
    response = client.get(track_url, headers={"Range": header})
    assert response.status_code == 206
    lo = first if first >= 0 else size + first
    hi = last if last is not None else size - 1
    assert response.headers["Content-Range"] == f"bytes {lo}-{hi}/{size}"
    assert int(response.headers["Content-Length"]) == hi - lo + 1
    assert response.data == data[lo: hi + 1]


def test_unsatisfiable_range_and_conditional_requests(client, track_path, track_url):
    size = track_path.stat().st_size
    past = client.get(track_url, headers={"Range": f"bytes={size}-"})
    assert past.status_code == 416 and past.headers["Content-Range"] == f"bytes */{size}"
    etag = client.head(track_url).headers["ETag"]
    assert client.get(track_url, headers={"If-None-Match": etag}).status_code == 304


def test_cors_for_browsers(client, track_url):
    preflight = client.options(track_url, headers={"Origin": "http://elsewhere.example",
                                                   "Access-Control-Request-Headers": "range"})
    assert preflight.status_code == 204
    response = client.get(track_url, headers={"Origin": "http://elsewhere.example", "Range": "bytes=0-9"})
    assert response.headers["Access-Control-Allow-Origin"] == "*"
    assert "Range" in response.headers["Access-Control-Allow-Headers"]
    exposed = response.headers["Access-Control-Expose-Headers"]
    assert "Content-Length" in exposed and "Content-Range" in exposed
    assert response.headers["Cache-Control"].endswith("immutable"), "content-named tracks never go stale"
    assert client.get("/hub/hub.txt").headers["Cache-Control"] == "no-cache"


def test_file_routes_stay_inside_the_hub(app, client, tmp_path):
    outside = tmp_path / "secret.txt"
    outside.write_text("secret")
    (Path(app.config["HUB_DIR"]) / "leak.txt").symlink_to(outside)
    for path in ("/hub/../manifest.json", "/hub/%2e%2e/manifest.json", "/hub/..%2fmanifest.json",
                 "/hub/%2Fetc%2Fpasswd", "/hub//etc/passwd", "/hub/leak.txt", "/hub/tracks", "/hub/nothing.bw"):
        response = client.get(path)
        assert response.status_code == 404, path
        assert b"secret" not in response.data and b"root:" not in response.data
    assert client.get("/hub/missing").json["error"]["status"] == 404


def test_tracks_api_links_resolve(client):
    doc = client.get("/api/tracks").json
    assert doc["genome"]["name"] == "demo" and len(doc["tracks"]) == 8
    assert doc["tracks"][0]["color"] == "0,114,178", "UCSC R,G,B, the manifest's colour"
    assert doc["hub"] == "http://localhost/hub/hub.txt"
    for url in [t["url"] for t in doc["tracks"]] + [doc["hub"], doc["genome"]["fasta"], doc["genome"]["fasta_index"],
                                                    doc["genome"]["twobit"], doc["links"]["igv_js_session"],
                                                    doc["links"]["igv_desktop_session"]]:
        assert client.head(url.removeprefix("http://localhost")).status_code == 200, url
    assert doc["links"]["ucsc"] == ("https://genome.ucsc.edu/cgi-bin/hgTracks?genome=demo&hubUrl="
                                    "http%3A%2F%2Flocalhost%2Fhub%2Fhub.txt")
    assert doc["links"]["igv_desktop"].startswith("http://localhost:60151/load?file=http%3A%2F%2Flocalhost%2Fhub%2F")
    assert "&genome=http%3A%2F%2Flocalhost%2Fhub%2Fgenome%2Fdemo.fa&" in doc["links"]["igv_desktop"]
    assert doc["igv_js"]["reference"]["twoBitURL"] == "http://localhost/hub/genome/demo.2bit"
    index = client.get("/").data.decode()
    assert "/static/vendor/igv.min.js" in index and "/static/app.js" in index


def test_openapi_and_health(client):
    spec = client.get("/api/openapi.json").json
    assert spec["openapi"].startswith("3.") and "/api/tracks" in spec["paths"]
    assert spec["servers"] == [{"url": "http://localhost/"}]
    assert client.get("/healthz").json == {"status": "ok"}
    assert client.get("/readyz").json["status"] == "ready"


def test_public_url_and_hub_rebuilt_after_a_new_precompute(precomputed, tmp_path):
    app = create_app({"precompute_dir": str(precomputed), "hub_dir": str(tmp_path / "hub"),
                      "public_url": "https://tracks.example.org/demo/", "log_requests": False})
    doc = app.test_client().get("/api/tracks").json
    assert doc["hub"] == "https://tracks.example.org/demo/hub/hub.txt"
    hub = tmp_path / "hub" / "hub.txt"
    os.utime(hub, (1, 1))
    create_app({"precompute_dir": str(precomputed), "hub_dir": str(tmp_path / "hub"), "log_requests": False})
    assert hub.stat().st_mtime > 1, "a hub older than the manifest is rebuilt"


def test_configuration_layers(tmp_path):
    file = tmp_path / "server.toml"
    file.write_text('precompute_dir = "/data/x"\nmax_batch = 4\nmodels = ["a.pth.tar"]\n')
    cfg = load_config(environ={"EPIFORMER_CONFIG": str(file), "EPIFORMER_MAX_BATCH": "8",
                               "EPIFORMER_MODELS": "MGC=a.pth.tar,OPC=b.pth.tar"})
    assert cfg.precompute_dir == "/data/x" and cfg.inference.batch_size == 8
    assert cfg.models == ["MGC=a.pth.tar", "OPC=b.pth.tar"]
    assert load_config({"max_batch": 2}, environ={"EPIFORMER_MAX_BATCH": "8"}).inference.batch_size == 2
    flat = load_config({"shifts": [-1, 0, 1]}, environ={"EPIFORMER_TORCH_THREADS": "0", "EPIFORMER_SCORE_BP": "512",
                                                        "EPIFORMER_ON_MISMATCH": "swap", "EPIFORMER_PRECISION": "bf16"})
    assert (flat.inference.threads, flat.inference.shifts, flat.inference.precision) == (None, (-1, 0, 1), "bf16")
    assert (flat.scoring.score_bp, flat.scoring.on_mismatch, flat.scoring.max_indel) == (512, "swap", 100)
    assert load_config(environ={"EPIFORMER_TORCH_THREADS": "3"}).inference.threads == 3
    assert load_config(environ={}).inference.batch_size == 16, "the server's batches gather concurrent requests"
    with pytest.raises(ServerConfigError, match="on_mismatch must be one of skip, swap, score"):
        load_config(environ={"EPIFORMER_ON_MISMATCH": "keep"})
    with pytest.raises(ServerConfigError, match="EPIFORMER_MAX_BATCH must be int"):
        load_config(environ={"EPIFORMER_MAX_BATCH": "many"})
    with pytest.raises(ServerConfigError, match="unknown setting EPIFORMER_MAX_BATCHES"):
        load_config(environ={"EPIFORMER_MAX_BATCHES": "8"})
    with pytest.raises(ServerConfigError, match="no precompute folder"):
        create_app({"precompute_dir": ""})


@pytest.mark.slow
def test_gunicorn_serves_a_remote_reader(precomputed, tmp_path):
    """gunicorn with the production config; UCSC's own bigWig reader (pybbi) reads a track over HTTP."""
    with gunicorn({"EPIFORMER_PRECOMPUTE_DIR": str(precomputed), "EPIFORMER_HUB_DIR": str(tmp_path / "hub"),
                   "EPIFORMER_WORKERS": "2"}, tmp_path / "gunicorn.log") as server:
        base = server.base
        doc = json.loads(urllib.request.urlopen(f"{base}/api/tracks").read())
        url = doc["tracks"][0]["url"]
        local = tmp_path / "hub" / url.split("/hub/")[1]
        script = ("import bbi, json, sys\n"
                  "url, chrom, end = sys.argv[1], sys.argv[2], int(sys.argv[3])\n"
                  "with bbi.open(url) as f:\n"
                  "    print(json.dumps({'chroms': f.chromsizes, 'values': f.fetch(chrom, 0, end, missing=float('nan')).tolist()}))\n")
        remote = subprocess.run([sys.executable, "-c", script, url, "chr1", "50000"], capture_output=True,
                                text=True, timeout=120)
        assert remote.returncode == 0, remote.stderr
        read = json.loads(remote.stdout)
        with pyBigWig.open(str(local)) as bw:
            assert read["chroms"] == bw.chroms()
            expected = bw.values("chr1", 0, 50_000)
        assert len(read["values"]) == len(expected)
        assert all((a != a and b != b) or abs(a - b) < 1e-6 for a, b in zip(read["values"], expected))
        assert any(v == v for v in read["values"])
    output = server.output()
    assert "Booting worker" in output and '"status": 206' in output


@pytest.mark.slow
def test_serve_command_answers_and_stops_on_ctrl_c(precomputed, tmp_path):
    """epiformer serve: hub built, gunicorn workers load the model after the fork, Ctrl-C stops it."""
    import shutil
    import signal

    port = free_port()
    model = tmp_path / "runs, old" / "model.pth.tar"
    model.parent.mkdir()
    shutil.copy(precomputed.parent / "model.pth.tar", model)
    proc = subprocess.Popen([sys.executable, "-m", "epiformer.cli", "serve", str(precomputed), "--hub-dir",
                             str(tmp_path / "hub"), "-m", str(model), "--port", str(port), "--workers", "1",
                             "--device", "cpu", "--bf16", "--shifts=-1,0,1"], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(600):
            try:
                with urllib.request.urlopen(f"{base}/readyz", timeout=1) as response:
                    ready = json.loads(response.read())
                    break
            except OSError:
                time.sleep(0.1)
        else:
            pytest.fail("the server did not become ready")
        assert ready["predictions"][0] == "HIP"
        request = urllib.request.Request(f"{base}/api/variants", data=json.dumps(
            {"variants": ["chr1:5:A:G"]}).encode(), headers={"Content-Type": "application/json"})
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(request)
        assert refused.value.code == 422
        base_at = json.loads(urllib.request.urlopen(f"{base}/api/sequence?region=chr1:200001-200001").read())
        ref = base_at["sequence"]
        request = urllib.request.Request(f"{base}/api/variants", data=json.dumps(
            {"variants": [f"chr1:200001:{ref}:{'A' if ref != 'A' else 'C'}"]}).encode(),
            headers={"Content-Type": "application/json"})
        answer = json.loads(urllib.request.urlopen(request).read())
        assert answer["settings"]["precision"] == "bf16" and answer["settings"]["shifts"] == [-1, 0, 1]
        assert answer["settings"]["checkpoints"][0]["file"] == "model.pth.tar"
    finally:
        os.killpg(proc.pid, signal.SIGINT)
        output = proc.communicate(timeout=60)[0]
    assert proc.returncode == 0, output
    assert f"serving     {base}/" in output and output.rstrip().endswith("stopped")
    assert output.count("stopped") == 1, "only the command says it, not its gunicorn workers"
    assert "Traceback" not in output


def test_any_model_set_precompute_accepts_can_be_served(precomputed, demo_data, compat_checkpoint, tmp_path):
    """--index with targets.txt, --average and a model table: the server takes the same model-set
    settings as every command (here from a config file, where a path may hold a comma)."""
    from .helpers import single_output_original

    folder = tmp_path / "a,b"
    folder.mkdir()
    mgc = single_output_original(compat_checkpoint, folder / "mgc.pth.tar", 0)
    table = tmp_path / "models.tsv"
    table.write_text(f"name\tcheckpoint\tindex\nOPC\t{compat_checkpoint}\t2\n")
    for settings, names in ((dict(models=[str(mgc)], targets=str(demo_data / "targets.txt"), index=4), ["MGC"]),
                            (dict(models=[f"X={mgc}", f"X={mgc}"], average=True), ["X"]),
                            (dict(models=[str(table)]), ["OPC"])):
        config = tmp_path / "server.json"
        config.write_text(json.dumps({**settings, "device": "cpu"}))
        cfg = load_config({"precompute_dir": str(precomputed), "hub_dir": str(tmp_path / "hub"),
                           "log_requests": False}, environ={"EPIFORMER_CONFIG": str(config)})
        app = create_app(cfg)
        try:
            assert app.test_client().get("/readyz").json["predictions"] == names
        finally:
            app.config["PREDICTOR"].close()


def test_a_server_never_drops_conservation_silently(precomputed, tmp_path, capsys):
    """The precompute's conservation track is the default; a model trained with conservation and no
    track refuses to start with the reason unless conservation: none, which is then recorded."""
    import shutil

    from epiformer.cli import main
    from epiformer.inference.settings import InferenceError

    folder = tmp_path / "pre"
    shutil.copytree(precomputed, folder)
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["genome"]["conservation"] = "not used"
    (folder / "manifest.json").write_text(json.dumps(manifest))
    model = str(precomputed.parent / "model.pth.tar")
    settings = {"precompute_dir": str(folder), "hub_dir": str(tmp_path / "hub"), "models": [model], "device": "cpu",
                "log_requests": False}
    with pytest.raises(InferenceError, match=r"trained with conservation \(if_cons true\)"):
        create_app(settings)
    assert main(["serve", str(folder), "-m", model, "--hub-dir", str(tmp_path / "hub"), "--port", str(free_port())]) == 2
    assert "trained with conservation (if_cons true)" in capsys.readouterr().err
    app = create_app({**settings, "conservation": "none"})
    try:
        body = app.test_client().post("/api/predict", json={"sequence": "ACGT"}).json
        assert body["settings"]["conservation"] == "none"
    finally:
        app.config["PREDICTOR"].close()
    app = create_app({**settings, "precompute_dir": str(precomputed)})
    try:
        body = app.test_client().post("/api/predict", json={"sequence": "ACGT"}).json
        assert body["settings"]["conservation"]["file"] == "conservation.bw", "the precompute's track by default"
    finally:
        app.config["PREDICTOR"].close()
