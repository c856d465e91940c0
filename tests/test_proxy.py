"""Forwarding headers and the nginx front: only the proxies named by ``proxy_hops`` choose the
scheme and client address (gunicorn trusts none itself), no header is a 500, and nginx serves no
symlink out of the hub folder."""
from __future__ import annotations

import contextlib
import json
import os
import socket
import time
from urllib.parse import urlsplit

import pytest

from .helpers import epiformer_serve, free_port, nginx
from .test_slow_clients import deployed_nginx_conf


def raw_get(base: str, path: str, headers: dict[str, str]) -> tuple[int, bytes]:
    """GET ``path`` over a raw socket (headers as written, underscores kept): status and body."""
    url = urlsplit(base)
    lines = [f"GET {path} HTTP/1.1", f"Host: {url.netloc}", "Connection: close",
             *(f"{name}: {value}" for name, value in headers.items())]
    with socket.create_connection((url.hostname, url.port), timeout=30) as sock:
        sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    return int(head.split()[1]), body


def links(base: str, headers: dict[str, str]) -> list[str]:
    """The hub link of /api/tracks and the OpenAPI document's server, as ``headers`` make them."""
    status, tracks = raw_get(base, "/api/tracks", headers)
    assert status == 200, tracks[:300]
    status, document = raw_get(base, "/api/openapi.json", headers)
    assert status == 200, document[:300]
    return [json.loads(tracks)["hub"], json.loads(document)["servers"][0]["url"]]


@pytest.mark.slow
def test_forwarding_headers_count_only_with_proxy_hops(precomputed, tmp_path):
    """``epiformer serve`` alone (proxy_hops 0), reached from loopback: X-Forwarded-Proto and
    X-Forwarded-Ssl leave the links http, and SCRIPT_NAME or PATH_INFO headers are not a 5xx;
    with --proxy-hops 1 the proxy's X-Forwarded-Proto counts."""
    arguments = [str(precomputed), "--hub-dir", str(tmp_path / "hub")]
    with epiformer_serve(arguments, tmp_path / "serve.log") as base:
        for forged in ({"X-Forwarded-Proto": "https"}, {"X-Forwarded-Ssl": "on"},
                       {"X-Forwarded-Protocol": "ssl"}, {"X-Forwarded-For": "10.9.8.7", "X-Forwarded-Proto": "https"}):
            assert all(link.startswith("http://") for link in links(base, forged)), forged
        for header in ({"SCRIPT_NAME": "/x"}, {"PATH_INFO": "/x"}, {"SCRIPT_NAME": "/api", "PATH_INFO": "/"}):
            status, body = raw_get(base, "/api/tracks", header)
            assert status < 500, (header, status, body[:300])
    with epiformer_serve([*arguments, "--proxy-hops", "1"], tmp_path / "proxied.log") as base:
        assert all(link.startswith("https://") for link in links(base, {"X-Forwarded-Proto": "https"}))
    log = (tmp_path / "serve.log").read_text()
    assert "Traceback" not in log and '"status": 5' not in log


def test_nginx_serves_no_symlink_out_of_the_hub(tmp_path):
    """deploy/nginx.conf: a symlink in the hub folder to a file of the same owner outside it is
    refused (the app refuses it too), while the hub's own files are served."""
    hub, outside = tmp_path / "hub", tmp_path / "outside"
    hub.mkdir()
    outside.mkdir()
    (hub / "etags.nginx").write_text("")
    (hub / "hub.txt").write_text("hub demo\n")
    secret = outside / "secret.txt"
    secret.write_text("outside the hub\n")
    os.symlink(secret, hub / "leak.txt")
    os.symlink(outside, hub / "linked")
    port = free_port()
    with nginx(deployed_nginx_conf(hub, f"http://127.0.0.1:{free_port()}", port), tmp_path / "nginx"):
        front = f"http://127.0.0.1:{port}"
        wait_for_file(front)
        assert raw_get(front, "/hub/hub.txt", {}) == (200, b"hub demo\n")
        for path in ("/hub/leak.txt", "/hub/linked/secret.txt"):
            status, body = raw_get(front, path, {})
            assert status in (403, 404) and b"outside the hub" not in body, (path, status)


def wait_for_file(base: str) -> None:
    """Until nginx answers the hub's hub.txt (it starts in well under a second)."""
    for _ in range(300):
        with contextlib.suppress(OSError):
            if raw_get(base, "/hub/hub.txt", {})[0] == 200:
                return
        time.sleep(0.1)
    pytest.fail(f"{base} did not answer")
