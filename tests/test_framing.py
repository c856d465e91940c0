"""HTTP/1.1 framing in the buffering worker (server/buffering.py): its framer against gunicorn's
own parser on generated framings, the work it does per byte, and the attacks of issue 35 against
a real server (gunicorn with the production worker around a tiny app: tests/framing_server.py)."""
from __future__ import annotations

import contextlib
import http.client
import json
import socket
import subprocess
import sys
import threading
import time
from typing import Iterator

import pytest
from gunicorn.config import Config
from gunicorn.http.errors import NoMoreData
from gunicorn.http.parser import RequestParser
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from epiformer.server.buffering import MAX_HEADER_BYTES, RequestFramer

from .helpers import ROOT, free_port, wait_until_ready

Address = tuple[str, int]
PEER = ("127.0.0.1", 40000)
MAX_BODY = 1_000_000


# ---------------------------------------------------------------------------------------------
# The framer against gunicorn's RequestParser


def gunicorn_framing(data: bytes) -> tuple[list[int], bool]:
    """gunicorn's reading of ``data``: where each request it reads ends, and whether it then
    rejects the rest (False when the rest is empty or an incomplete request)."""
    pulled = [0]

    def pieces() -> Iterator[bytes]:
        pulled[0] += len(data)
        yield data

    parser = RequestParser(Config(), pieces(), PEER)
    ends = []
    try:
        for request in parser:
            length = getattr(request.body.reader, "length", None)
            if len(request.body.read()) < (length or 0):      # a Content-Length body cut short
                return ends, False
            ends.append(pulled[0] - len(parser.unreader.buf.getvalue()))
    except (NoMoreData, StopIteration):
        return ends, False
    except Exception:   # noqa: BLE001 - any gunicorn error is a rejection
        return ends, True
    return ends, False


def framer_framing(data: bytes, cuts: list[int]) -> tuple[list[int], bool, RequestFramer]:
    """The worker's framer fed ``data`` in pieces cut at ``cuts``: where each request ends
    (up to one that closes the connection), whether it rejects the rest, and the framer (for its
    work counter)."""
    framer = RequestFramer(Config(), PEER, MAX_BODY)
    ends, taken = [], 0
    bounds = [0, *sorted(set(c for c in cuts if 0 < c < len(data))), len(data)]
    try:
        for start, stop in zip(bounds, bounds[1:]):
            complete = framer.feed(data[start:stop])
            while complete:
                closes = framer.request.should_close()      # the worker reads no further
                taken += len(framer.take())
                ends.append(taken)
                if closes:
                    return ends, False, framer
                complete = framer.feed(b"")
    except Exception:   # noqa: BLE001 - any error is a rejection
        return ends, True, framer
    return ends, False, framer


TOKEN = st.text("abcxyzABC-_09!#", min_size=1, max_size=6)
HEX = "0123456789abcdefABCDEF"
BWS = st.sampled_from(["", " ", "\t", "  "])


@st.composite
def chunk_line(draw, size: int) -> bytes:
    """A chunk-size line for ``size``, valid or nearly so: leading zeros, upper or lower case,
    extensions with and without values, BWS before ``;``, stray spaces, bare LF."""
    digits = "0" * draw(st.integers(0, 3)) + (format(size, "X") if draw(st.booleans()) else format(size, "x"))
    line = digits
    if draw(st.booleans()):
        for _ in range(draw(st.integers(1, 2))):
            ext = draw(TOKEN)
            if draw(st.booleans()):
                value = draw(st.one_of(TOKEN, st.just('"q s"'), st.just('"\\""'), st.just("")))
                ext += draw(BWS) + "=" + draw(BWS) + value
            line += draw(BWS) + ";" + draw(BWS) + ext
    flaw = draw(st.sampled_from(["", "", "", "", "trailing space", "leading space", "semicolon", "plus", "x"]))
    line = {"trailing space": line + " ", "leading space": " " + line, "semicolon": line + ";",
            "plus": "+" + line, "x": "0x" + line}.get(flaw, line)
    end = draw(st.sampled_from(["\r\n"] * 8 + ["\n", "\r\r\n"]))
    return (line + end).encode("latin-1")


@st.composite
def chunked_body(draw) -> bytes:
    """A chunked body: chunks of generated sizes (each a little off now and then), the last
    chunk and trailers."""
    out = b""
    for _ in range(draw(st.integers(0, 4))):
        size = draw(st.integers(1, 40))
        data = draw(st.binary(min_size=size, max_size=size))
        slip = draw(st.sampled_from([0] * 10 + [-1, 1]))
        out += draw(chunk_line(size)) + data[:max(0, size + slip)] + b"x" * max(0, slip) + b"\r\n"
    out += draw(chunk_line(0))
    trailers = draw(st.sampled_from([b"", b"X-T: 1\r\n", b"X-T: 1\r\nY: 2\r\n", b"Bad Trailer\r\n",
                                     b"X-T: a\nb\r\n", b"Content-Length: 5\r\n"]))
    return out + trailers + b"\r\n"


@st.composite
def request(draw) -> bytes:
    """One request: method and version, headers (some folded, some with bare LF), a framing
    of Content-Length and/or Transfer-Encoding (or none), an Expect, and its body."""
    version = draw(st.sampled_from([b"HTTP/1.1"] * 4 + [b"HTTP/1.0"]))
    method = draw(st.sampled_from([b"GET", b"POST", b"PUT"]))
    lead = draw(st.sampled_from([b""] * 6 + [b"\r\n", b"\r\n\r\n", b"\n", b"\r"]))
    headers = [b"Host: x"]
    framing = draw(st.sampled_from(["none", "length", "chunked", "both", "two lengths", "te list", "xchunked",
                                    "length plus", "chunked twice", "gzip chunked"]))
    body = b""
    if framing in ("length", "both", "two lengths", "length plus"):
        body = draw(st.binary(max_size=60))
        length = len(body) + draw(st.sampled_from([0] * 6 + [-1, 1]))
        value = ("+" if framing == "length plus" else "") + str(max(0, length))
        headers.append(b"Content-Length:" + draw(BWS).encode() + value.encode())
        if framing == "two lengths":
            headers.append(b"Content-Length: " + str(len(body)).encode())
    if framing in ("chunked", "both", "te list", "xchunked", "chunked twice", "gzip chunked"):
        coding = {"chunked": "chunked", "both": "chunked", "te list": "identity, chunked",
                  "xchunked": "xchunked", "chunked twice": "chunked, chunked", "gzip chunked": "gzip, chunked"}
        headers.append(b"Transfer-Encoding: " + coding[framing].encode())
        body = draw(chunked_body())
    expect = draw(st.sampled_from([None] * 5 + ["100-continue", "100-Continue", "bogus"]))
    if expect:
        headers.append(b"Expect: " + expect.encode())
    if draw(st.integers(0, 9)) == 0:
        headers.insert(1, b"X-Folded: a\r\n b")
    if draw(st.integers(0, 9)) == 0:
        headers.insert(1, b"X-Bare: a\nb")
    if draw(st.integers(0, 9)) == 0:
        headers.insert(1, b"Connection: close")
    return lead + method + b" /p " + version + b"\r\n" + b"\r\n".join(headers) + b"\r\n\r\n" + body


@st.composite
def stream(draw) -> tuple[bytes, list[int]]:
    """One to three pipelined requests, and points to cut the bytes at."""
    data = b"".join(draw(st.lists(request(), min_size=1, max_size=3)))
    cuts = draw(st.lists(st.integers(0, max(0, len(data))), max_size=8))
    return data, cuts


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(stream())
def test_the_framer_reads_requests_as_gunicorns_parser_does(case):
    """Generated framings (Content-Length bodies, chunk sizes with BWS, extensions and leading
    zeros, CL/TE combinations, bare LF, obs-fold, leading CRLFs, Expect, pipelining), fed at random
    cut points: the framer finds the same message boundaries as gunicorn's RequestParser and
    rejects what it rejects, with work linear in the bytes fed."""
    data, cuts = case
    ends, rejected, framer = framer_framing(data, cuts)
    assert (ends, rejected) == gunicorn_framing(data), data
    assert framer.scanned <= 8 * len(data) + 64


def test_the_framers_work_is_linear_in_the_bytes():
    """A chunked body of one-byte chunks, fed 1,000 bytes at a time, costs the framer a fixed
    number of byte visits per byte fed, whatever its length (it never returns to its start)."""
    head = b"POST /x HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
    visits = []
    for chunks in (10_000, 40_000):
        data = head + b"1\r\na\r\n" * chunks
        framer = RequestFramer(Config(), PEER, MAX_BODY)
        for start in range(0, len(data), 1000):
            assert not framer.feed(data[start:start + 1000])
        visits.append(framer.scanned / len(data))
    assert visits[1] <= visits[0] * 1.1 and visits[1] < 4


def test_the_framer_bounds_the_head_and_the_body():
    """64 KiB before the end of the head, leading empty lines included; a body over the limit
    when it is announced; a chunked body's bytes on the wire."""
    from epiformer.server.buffering import HeadersTooLarge, TooLarge

    framer = RequestFramer(Config(), PEER, 1000)
    with pytest.raises(Exception):     # gunicorn: only one empty line before a request
        framer.feed(b"\r\n" * 3)
    framer = RequestFramer(Config(), PEER, 1000)
    with pytest.raises(HeadersTooLarge):
        framer.feed(b"GET / HTTP/1.1\r\n" + b"X-A: b\r\n" * (MAX_HEADER_BYTES // 8))
    framer = RequestFramer(Config(), PEER, 1000)
    with pytest.raises(TooLarge):
        framer.feed(b"POST / HTTP/1.1\r\nContent-Length: 1001\r\n\r\n")
    framer = RequestFramer(Config(), PEER, 1000)
    with pytest.raises(TooLarge):
        framer.feed(b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n" + (b"1;" + b"e" * 100 + b"\r\na\r\n") * 900)


# ---------------------------------------------------------------------------------------------
# The findings against a real server


@contextlib.contextmanager
def framing_server(tmp_path, **settings) -> Iterator[Address]:
    """tests/framing_server.py (1 worker x 4 threads, 30 s to send a request) with ``settings``."""
    port = free_port()
    settings = {"bind": f"127.0.0.1:{port}", "workers": 1, "threads": 4, "client_timeout_s": 30.0, **settings}
    log = tmp_path / "server.log"
    with open(log, "w") as handle:
        proc = subprocess.Popen([sys.executable, "-m", "tests.framing_server", json.dumps(settings)], cwd=ROOT,
                                stdout=handle, stderr=subprocess.STDOUT)
    try:
        wait_until_ready(f"http://127.0.0.1:{port}/healthz", proc, log.read_text)
        yield "127.0.0.1", port
    finally:
        proc.terminate()
        proc.wait(timeout=60)


def answers(address: Address, data: bytes, timeout: float = 10) -> bytes:
    """Everything the server sends for ``data`` until it closes the connection."""
    with socket.create_connection(address, timeout=timeout) as sock:
        sock.sendall(data)
        received = b""
        with contextlib.suppress(ConnectionResetError):
            while chunk := sock.recv(65536):
                received += chunk
    return received


def health_check_seconds(address: Address, timeout: float = 20) -> float:
    """How long GET /healthz takes on a new connection."""
    started = time.monotonic()
    connection = http.client.HTTPConnection(*address, timeout=timeout)
    try:
        connection.request("GET", "/healthz")
        response = connection.getresponse()
        assert response.status == 200 and response.read() == b"ok"
    finally:
        connection.close()
    return time.monotonic() - started


CHUNKED_HEAD = b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"


def test_finding_1_chunked_trickles_do_not_slow_health_checks(tmp_path):
    """8 connections each send 5.4 MB of one-byte chunks (``1\\r\\na\\r\\n``, 900 kB of data, under
    max_body_bytes; never ended): /healthz, asked while they send, answers in under 2 s each time
    (the framer re-read each body from its start after every read: up to 6 s here, 8.8 s in the
    issue). The worker now refuses such a body once its bytes on the wire pass twice the limit."""
    piece = b"1\r\na\r\n" * 10_000
    release, sent = threading.Event(), []

    def flood(address: Address) -> None:
        with socket.create_connection(address, timeout=60) as sock:
            with contextlib.suppress(OSError):
                sock.sendall(CHUNKED_HEAD)
                for _ in range(90):
                    sock.sendall(piece)
            sent.append(1)
            release.wait(60)

    with framing_server(tmp_path) as address:
        flooders = [threading.Thread(target=flood, args=(address,)) for _ in range(8)]
        for thread in flooders:
            thread.start()
        latencies = []
        try:
            while len(sent) < len(flooders) or len(latencies) < 3:
                latencies.append(health_check_seconds(address))
        finally:
            release.set()
            for thread in flooders:
                thread.join()
    assert max(latencies) < 2.0, latencies


def test_finding_2_empty_lines_before_a_request_are_bounded(tmp_path):
    """One CRLF before a request is allowed (as gunicorn does), two are a 400; an endless
    stream of CRLFs is answered and the connection closed, not read on (it was: 112 MB)."""
    request = b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    with framing_server(tmp_path) as address:
        assert answers(address, b"\r\n" + request).startswith(b"HTTP/1.1 200")
        answer = answers(address, b"\r\n\r\n" + request)
        assert answer.startswith(b"HTTP/1.1 400") and answer.count(b"HTTP/1.1 ") == 1, answer
        with socket.create_connection(address, timeout=30) as sock:
            sent = 0
            with pytest.raises((ConnectionResetError, BrokenPipeError)):
                while sent < 16 * 2**20:
                    sock.sendall(b"\r\n" * 32768)
                    sent += 65536
            assert health_check_seconds(address) < 5


def test_finding_6_a_full_worker_serves_a_new_client(tmp_path):
    """With worker_connections (20) taken by silent sockets, a new client is answered at once:
    the oldest socket without a whole request makes room (it waited up to client_timeout_s)."""
    with framing_server(tmp_path, gunicorn={"worker_connections": 20}) as address:
        silent = [socket.create_connection(address) for _ in range(30)]
        try:
            assert health_check_seconds(address) < 5
        finally:
            for sock in silent:
                sock.close()


def test_finding_6_one_address_holds_at_most_max_connections_per_client(tmp_path):
    """``max_connections_per_client`` (8 here) connections from one address: the next one is
    closed at once, unanswered; once they close, the address is served again."""
    with framing_server(tmp_path, max_connections_per_client=8) as address:
        held = [socket.create_connection(address) for _ in range(8)]
        with socket.create_connection(address, timeout=10) as over:
            with contextlib.suppress(ConnectionResetError):
                assert over.recv(1) == b""
        for sock in held:
            sock.close()
        deadline = time.monotonic() + 10
        while True:
            try:
                assert health_check_seconds(address) < 5
                break
            except (OSError, http.client.HTTPException):
                assert time.monotonic() < deadline, "the address stayed refused"


@pytest.mark.parametrize("size", [b"5 ", b"5;", b" 5"])
def test_finding_7_a_bad_chunk_size_is_one_answer(tmp_path, size):
    """GET /healthz (which does not read its body) with a chunk size gunicorn refuses: one 400,
    then the connection closes (it was 200, then an unsolicited 400)."""
    with framing_server(tmp_path) as address:
        answer = answers(address, b"GET /healthz HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                         + size + b"\r\nhello\r\n0\r\n\r\n")
        assert answer.startswith(b"HTTP/1.1 400") and answer.count(b"HTTP/1.1 ") == 1, answer
        body = b"5;x=y\r\nhello\r\n0\r\n\r\n"
        pipelined = answers(address, b"GET /healthz HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                            + body + b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        assert pipelined.count(b"HTTP/1.1 200") == 2 and pipelined.count(b"HTTP/1.1 ") == 2, pipelined


def test_finding_10_expect_follows_gunicorn(tmp_path):
    """No 100 Continue for HTTP/1.0; ``Expect: bogus`` is 417 whether the head comes alone or
    with the body (another header naming 100-continue changes nothing); HTTP/1.1 with
    ``Expect: 100-continue`` gets its 100 before sending the body."""
    head = b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n"
    with framing_server(tmp_path) as address:
        bogus = head + b"Expect: bogus\r\nX-Note: 100-continue\r\n\r\n"
        for data in (bogus, bogus + b"{}"):
            answer = answers(address, data)
            assert answer.startswith(b"HTTP/1.1 417") and b"100 Continue" not in answer, answer
        with socket.create_connection(address, timeout=10) as sock:
            sock.sendall(head + b"Expect: 100-continue\r\n\r\n")
            assert sock.recv(4096) == b"HTTP/1.1 100 Continue\r\n\r\n"
            sock.sendall(b"{}")
            assert sock.recv(4096).startswith(b"HTTP/1.1 200")
        with socket.create_connection(address, timeout=10) as sock:
            sock.sendall(b"POST /echo HTTP/1.0\r\nHost: x\r\nContent-Length: 2\r\nExpect: 100-continue\r\n\r\n")
            sock.settimeout(1)
            with pytest.raises(TimeoutError):
                sock.recv(4096)       # no 100 Continue to an HTTP/1.0 client
            sock.settimeout(10)
            sock.sendall(b"{}")
            answer = b""
            while chunk := sock.recv(4096):
                answer += chunk
            assert answer.startswith(b"HTTP/1.0 200") and answer.endswith(b"\r\n\r\n2"), answer
