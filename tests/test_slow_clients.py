"""Slow and greedy clients against the real servers: ``epiformer serve`` alone (gunicorn with the
buffering worker) and behind the shipped deploy/nginx.conf. Sockets that stall mid-request must
not keep /healthz or a variant query from answering, and one client with many requests gets 429
before it holds every thread."""
from __future__ import annotations

import contextlib
import http.client
import json
import socket
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from .helpers import (
    ROOT,
    distinct_window_snvs,
    epiformer_serve,
    free_port,
    gunicorn,
    nginx,
)
from .hostile_clients import STALLS, slow_clients, still_waiting
from .http_rules import (
    RULES,
    check_empty_list_elements,
    check_head_ignores_range,
    check_invalid_ranges_ignored,
    check_multiple_ranges,
    check_overlapping_ranges_ignored,
    http_fetch,
)

# nginx answers 416 to byte ranges that are not valid (RFC 9110 lets a server refuse them), serves
# overlapping ranges that add up to no more than the file, and answers a HEAD with a Range 206;
# every other rule holds through it as through the app.
NGINX_RULES = [rule for rule in RULES if rule not in (check_invalid_ranges_ignored, check_empty_list_elements,
                                                      check_head_ignores_range, check_overlapping_ranges_ignored)]


def request(base: str, method: str, path: str, body: dict | None = None, timeout: float = 20,
            headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    url = urlsplit(base)
    conn = http.client.HTTPConnection(url.hostname, url.port, timeout=timeout)
    try:
        conn.request(method, path, body=None if body is None else json.dumps(body),
                     headers={"Content-Type": "application/json", **(headers or {})})
        response = conn.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        conn.close()


def answers_while_attacked(base: str, variant: str, sockets: list[socket.socket]) -> None:
    """/healthz and a variant query answer while every stalled socket is still held."""
    for _ in range(3):
        assert request(base, "GET", "/healthz")[0] == 200
        status, _, body = request(base, "POST", "/api/variants", {"variants": [variant]})
        assert status == 200, body[:300]
    assert still_waiting(sockets) == len(sockets), "the attack was still under way (no socket was dropped)"


def greedy_client_gets_429(base: str, variants: list[str], clients: int = 20) -> None:
    """``clients`` heavy variant requests at once from one address: some are 429 with Retry-After,
    the rest answer, and /healthz answers meanwhile."""
    statuses, retry_after = [], []
    start = threading.Barrier(clients + 1)

    def query() -> None:
        start.wait()
        status, headers, _ = request(base, "POST", "/api/variants", {"variants": variants}, timeout=300)
        statuses.append(status)
        if status == 429:
            retry_after.append(headers.get("Retry-After"))

    threads = [threading.Thread(target=query) for _ in range(clients)]
    for thread in threads:
        thread.start()
    start.wait()
    assert request(base, "GET", "/healthz")[0] == 200
    for thread in threads:
        thread.join()
    assert set(statuses) == {200, 429}, statuses
    assert retry_after and all(value == "1" for value in retry_after)


@pytest.mark.slow
def test_slow_clients_cannot_starve_epiformer_serve(precomputed, demo_data, tmp_path):
    """50 stalled or trickling sockets against ``epiformer serve`` (2 workers x 8 threads): health
    checks and variant queries still answer, and the stalled sockets are not what gave way; one
    greedy client gets 429; bad framing is a 400 and a stalled request ends in 408."""
    model = precomputed.parent / "model.pth.tar"
    variants = distinct_window_snvs(demo_data, 41)
    arguments = [str(precomputed), "--hub-dir", str(tmp_path / "hub"), "-m", str(model), "--device", "cpu"]
    with epiformer_serve(arguments, tmp_path / "serve.log", env={"EPIFORMER_CLIENT_TIMEOUT_S": "120"}) as base:
        with slow_clients(base) as sockets:
            answers_while_attacked(base, variants[0], sockets)
        greedy_client_gets_429(base, variants[1:])
        url = urlsplit(base)
        post = b"POST /api/variants HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        for head, status, message in [(b"Transfer-Encoding: chunked\r\n\r\nzz\r\n", b"400", b"Invalid chunk size"),
                                      (b"Content-Length: 2000000\r\n\r\n", b"413", b"(max_body_bytes)")]:
            with socket.create_connection((url.hostname, url.port), timeout=30) as sock:
                sock.sendall(post + head)
                answer = b""
                while chunk := sock.recv(4096):
                    answer += chunk
            assert answer.startswith(b"HTTP/1.1 " + status) and message in answer, answer
    log = (tmp_path / "serve.log").read_text()
    assert "Traceback" not in log and '"status": 5' not in log


@pytest.mark.slow
def test_nginx_front_buffers_clients_and_serves_the_hub(precomputed, demo_data, tmp_path):
    """deploy/nginx.conf in front of gunicorn: the same attack through nginx leaves the server
    answering; the hub's files come from nginx with the app's headers, by the same range and
    conditional rules as the app's (tests/http_rules.py, also checked here through gunicorn);
    gunicorn itself answers a request not sent whole in client_timeout_s with 408."""
    nginx_port = free_port()
    hub = tmp_path / "hub"
    settings = {"EPIFORMER_PRECOMPUTE_DIR": str(precomputed), "EPIFORMER_HUB_DIR": str(hub),
                "EPIFORMER_MODELS": str(precomputed.parent / "model.pth.tar"), "EPIFORMER_DEVICE": "cpu",
                "EPIFORMER_PROXY_HOPS": "1", "EPIFORMER_PUBLIC_URL": f"http://127.0.0.1:{nginx_port}",
                "EPIFORMER_CLIENT_TIMEOUT_S": "3"}
    variants = distinct_window_snvs(demo_data, 41)
    with gunicorn(settings, tmp_path / "gunicorn.log") as app:
        conf = deployed_nginx_conf(hub, app.base, nginx_port)
        with nginx(conf, tmp_path / "nginx"):
            front = f"http://127.0.0.1:{nginx_port}"
            wait_for(front)
            with slow_clients(front) as sockets:
                answers_while_attacked(front, variants[0], sockets)
            greedy_client_gets_429(front, variants[1:])
            track = next((hub / "tracks").glob("HIP.*.bw")).relative_to(hub).as_posix()
            data = (hub / track).read_bytes()
            for check in RULES:                 # the app, over HTTP through gunicorn
                check(http_fetch(app.base), f"/hub/{track}", data)
            check_multiple_ranges(http_fetch(app.base), f"/hub/{track}", data, multipart=True)
            for check in NGINX_RULES:
                check(http_fetch(front), f"/hub/{track}", data)
            for name in ("hub.txt", track):
                direct, through = request(app.base, "GET", f"/hub/{name}"), request(front, "GET", f"/hub/{name}")
                assert through[0] == direct[0] == 200 and through[2] == direct[2]
                for header in ("ETag", "Last-Modified", "Cache-Control", "Accept-Ranges", "X-Content-Type-Options",
                               "Access-Control-Allow-Origin", "Access-Control-Expose-Headers"):
                    assert through[1].get(header) == direct[1].get(header), header
        url = urlsplit(app.base)
        with socket.create_connection((url.hostname, url.port), timeout=30) as sock:
            sock.sendall(STALLS[1])
            assert sock.recv(4096).startswith(b"HTTP/1.1 408")
            assert sock.recv(4096) == b"", "then closed"


def deployed_nginx_conf(hub: Path, upstream: str, port: int) -> str:
    """deploy/nginx.conf with its EDIT values set as a user sets them."""
    text = (ROOT / "deploy" / "nginx.conf").read_text()
    for placeholder, value in [("/srv/epiformer/precompute/hub", str(hub)),
                               ("server 127.0.0.1:8000;", f"server {urlsplit(upstream).netloc};"),
                               ("listen 80;", f"listen 127.0.0.1:{port};")]:
        assert placeholder in text, placeholder
        text = text.replace(placeholder, value)
    return text


def wait_for(base: str) -> None:
    """Until nginx answers (it starts in well under a second)."""
    for _ in range(300):
        with contextlib.suppress(OSError):
            if request(base, "GET", "/healthz", timeout=2)[0] == 200:
                return
        time.sleep(0.1)
    pytest.fail(f"{base} did not answer")
