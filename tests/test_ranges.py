"""The hub's files by RFC 9110: the rules of tests/http_rules.py through the Flask app, ETags from
the files' SHA-256 (the same on every copy of a hub), and the hub's SHA256SUMS."""
from __future__ import annotations

import hashlib
import json
import re
import shutil
from pathlib import Path

import pytest
from werkzeug.wsgi import FileWrapper

from epiformer.server import create_app
from epiformer.trackhub import SUMS_FILE, hub_etags
from epiformer.trackhub.checksums import NGINX_ETAGS_FILE

from .http_rules import (
    RULES,
    Fetch,
    check_if_none_match,
    check_multiple_ranges,
    check_single_range,
    check_whole_file,
    multipart_parts,
)


def flask_fetch(client) -> Fetch:
    """``fetch`` (see tests/http_rules.py) through a Flask test client."""
    def fetch(method: str, path: str, headers):
        response = client.open(path, method=method, headers=dict(headers))
        return response.status_code, response.headers, response.get_data()
    return fetch


def sha256_etag(path: Path) -> str:
    return f'"{hashlib.sha256(path.read_bytes()).hexdigest()}"'


def hub_files(hub_dir: Path) -> list[str]:
    """Every file in the hub folder, relative to it."""
    return sorted(p.relative_to(hub_dir).as_posix() for p in hub_dir.rglob("*") if p.is_file())


@pytest.fixture
def fetch(client) -> Fetch:
    return flask_fetch(client)


@pytest.fixture
def hub_dir(app) -> Path:
    return Path(app.config["HUB_DIR"])


@pytest.fixture
def track(hub_dir) -> str:
    return next((hub_dir / "tracks").glob("HIP.*.bw")).relative_to(hub_dir).as_posix()


@pytest.mark.parametrize("check", [rule for rule in RULES if rule is not check_multiple_ranges],
                         ids=lambda rule: rule.__name__.removeprefix("check_"))
def test_rule(check, fetch, hub_dir, track):
    check(fetch, f"/hub/{track}", (hub_dir / track).read_bytes())


def test_several_ranges_are_one_multipart_answer(fetch, hub_dir, track):
    check_multiple_ranges(fetch, f"/hub/{track}", (hub_dir / track).read_bytes(), multipart=True)


@pytest.mark.parametrize("name", ["hub.txt", "genome/demo.fa", "genome/demo.2bit", "igv_session.json"])
def test_every_kind_of_hub_file(fetch, hub_dir, name):
    data = (hub_dir / name).read_bytes()
    for check in (check_whole_file, check_single_range, check_if_none_match):
        check(fetch, f"/hub/{name}", data)
    check_multiple_ranges(fetch, f"/hub/{name}", data, multipart=True)


def test_multipart_parts_carry_the_bytes_and_the_type(client, hub_dir):
    data = (hub_dir / "hub.txt").read_bytes()
    response = client.get("/hub/hub.txt", headers={"Range": "bytes=-5,0-2"})
    parts = multipart_parts(response.headers, response.data)
    size = len(data)
    assert parts == [("text/plain; charset=utf-8", f"bytes {size - 5}-{size - 1}/{size}", data[-5:]),
                     ("text/plain; charset=utf-8", f"bytes 0-2/{size}", data[:3])]
    boundary = response.headers["Content-Type"].partition("boundary=")[2]
    assert re.fullmatch(r"[0-9a-f]{32}", boundary)
    assert response.data.endswith(f"\r\n--{boundary}--\r\n".encode())


def test_range_bodies_are_streamed_and_the_whole_file_uses_the_file_wrapper(app, hub_dir, track):
    """Parts are read from the file as they are sent; the whole file goes through the WSGI
    server's wsgi.file_wrapper (gunicorn sends it with sendfile)."""
    made = []

    class Wrapper(FileWrapper):
        def __init__(self, file, buffer_size=8192):
            super().__init__(file, buffer_size)
            made.append(self)

    client = app.test_client()
    whole = client.get(f"/hub/{track}", environ_base={"wsgi.file_wrapper": Wrapper})
    assert len(made) == 1 and whole.data == (hub_dir / track).read_bytes()
    for value in ("bytes=0-9", "bytes=0-9,20-29"):
        with app.test_request_context(f"/hub/{track}", headers={"Range": value}):
            response = app.full_dispatch_request()
            assert response.status_code == 206 and response.is_streamed
            response.close()


def test_the_etag_is_the_sha256_of_the_bytes(fetch, hub_dir):
    (hub_dir / "notes.txt").write_text("added by hand, not in SHA256SUMS\n")
    for name in hub_files(hub_dir):
        status, headers, _ = fetch("HEAD", f"/hub/{name}", {})
        assert status == 200 and headers["ETag"] == sha256_etag(hub_dir / name), name


def test_a_hub_without_sha256sums_still_has_etags(fetch, hub_dir, track):
    (hub_dir / SUMS_FILE).unlink()
    assert hub_etags(hub_dir) == {}
    assert fetch("HEAD", f"/hub/{track}", {})[1]["ETag"] == sha256_etag(hub_dir / track)


def test_copies_of_a_hub_give_the_same_etags(precomputed, fetch, hub_dir, tmp_path):
    """Two servers behind a load balancer, each with its own copy of the hub (new paths and
    modification times), give every file the same ETag."""
    copy = tmp_path / "elsewhere" / "hub"
    shutil.copytree(hub_dir, copy, copy_function=shutil.copyfile)
    other = flask_fetch(create_app({"precompute_dir": str(precomputed), "hub_dir": str(copy),
                                    "log_requests": False}).test_client())
    names = hub_files(hub_dir)
    assert names == hub_files(copy)
    for name in names:
        assert fetch("HEAD", f"/hub/{name}", {})[1]["ETag"] == other("HEAD", f"/hub/{name}", {})[1]["ETag"], name


def test_sha256sums_lists_every_hub_file(precomputed, hub_dir):
    lines = (hub_dir / SUMS_FILE).read_text().splitlines()
    listed = [re.fullmatch(r"([0-9a-f]{64})  (\S+)", line).groups() for line in lines]
    names = [name for _, name in listed]
    assert names == sorted(names) == [name for name in hub_files(hub_dir) if name not in (SUMS_FILE, NGINX_ETAGS_FILE)]
    for digest, name in listed:       # sha256sum -c SHA256SUMS
        assert hashlib.sha256((hub_dir / name).read_bytes()).hexdigest() == digest, name
    manifest = json.loads((precomputed / "manifest.json").read_text())
    track_digests = {digest for digest, name in listed if name.startswith("tracks/")}
    assert track_digests == {track["sha256"] for track in manifest["tracks"]}
    assert hub_etags(hub_dir) == {name: f'"{digest}"' for digest, name in listed}
    nginx_map = (hub_dir / NGINX_ETAGS_FILE).read_text().splitlines()
    assert nginx_map == [f'"{name}" \'"{digest}"\';' for digest, name in listed], "the same ETags for nginx"


def test_a_hub_without_sha256sums_is_rebuilt(precomputed, hub_dir):
    (hub_dir / SUMS_FILE).unlink()
    create_app({"precompute_dir": str(precomputed), "hub_dir": str(hub_dir), "log_requests": False})
    assert (hub_dir / SUMS_FILE).is_file()
