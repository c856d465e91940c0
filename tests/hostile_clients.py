"""Clients that stall mid-request or flood the framing, for the slow-client tests and the load
benchmark (bench/bench_load.py imports this module)."""
from __future__ import annotations

import contextlib
import multiprocessing
import socket
import threading
from collections import Counter
from typing import Any, Iterator
from urllib.parse import urlsplit

STALLS = [
    b"",                                                                  # connects, sends nothing
    b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n",                      # half the headers
    b"POST /api/variants HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
    b"Content-Length: 100\r\n\r\n{",                                      # one byte of a 100-byte body
]
TRICKLE = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: " + b"a" * 4000   # never ends its headers
# Framing floods (issue 35): a head, then a piece sent again and again, as fast as the server reads.
FLOODS = {
    # a chunked body of one-byte chunks, never ended (one data byte for six on the wire)
    "chunked 1\\r\\na\\r\\n": (b"POST /api/variants HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                             b"Transfer-Encoding: chunked\r\n\r\n", b"1\r\na\r\n" * 10_000),
    # empty lines before a request line that never comes
    "leading CRLF": (b"", b"\r\n" * 32_768),
}


@contextlib.contextmanager
def slow_clients(base: str, count: int = 50) -> Iterator[list[socket.socket]]:
    """``count`` sockets, a quarter of each kind: silent, half-sent headers, a body announced and
    one byte of it sent, and headers trickled a byte every 0.2 s (never finished); held open
    while the block runs."""
    url = urlsplit(base)
    sockets, trickling = [], []
    for i in range(count):
        sock = socket.create_connection((url.hostname, url.port))
        if i % 4 < len(STALLS):
            sock.sendall(STALLS[i % 4])
        else:
            trickling.append(sock)
        sockets.append(sock)
    stop = threading.Event()

    def trickle() -> None:
        for byte in TRICKLE:
            if stop.wait(0.2):
                return
            for sock in trickling:
                with contextlib.suppress(OSError):
                    sock.send(bytes([byte]))

    sender = threading.Thread(target=trickle, daemon=True)
    sender.start()
    try:
        yield sockets
    finally:
        stop.set()
        sender.join()
        for sock in sockets:
            sock.close()


def still_waiting(sockets: list[socket.socket]) -> int:
    """How many of ``sockets`` are open and were sent nothing (neither an answer nor a close)."""
    waiting = 0
    for sock in sockets:
        sock.setblocking(False)
        try:
            sock.recv(1)
        except BlockingIOError:
            waiting += 1
        except OSError:
            pass
    return waiting


def _flood(host: str, port: int, kind: str, count: int, stop: Any, written: Any, opened: Any) -> None:
    """The flooding process: ``count`` threads, each sending ``FLOODS[kind]`` on a connection
    and opening a new one whenever the server closes its own, until ``stop`` is set."""
    head, piece = FLOODS[kind]

    def flood() -> None:
        while not stop.is_set():
            with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=5) as sock:
                with opened.get_lock():
                    opened.value += 1
                sock.sendall(head)
                while not stop.is_set():
                    sock.sendall(piece)
                    with written.get_lock():
                        written.value += len(piece)

    senders = [threading.Thread(target=flood, daemon=True) for _ in range(count)]
    for sender in senders:
        sender.start()
    for sender in senders:
        sender.join()


@contextlib.contextmanager
def flooding(base: str, kind: str, count: int = 8) -> Iterator[Counter]:
    """``count`` connections sending ``FLOODS[kind]`` while the block runs, from a process of
    their own (so that they take no time from the caller's threads); yields a Counter that holds,
    once the block ends, the bytes the clients wrote and the connections they opened."""
    url = urlsplit(base)
    context = multiprocessing.get_context("spawn")
    stop, written, opened = context.Event(), context.Value("q", 0), context.Value("q", 0)
    process = context.Process(target=_flood, args=(url.hostname, url.port, kind, count, stop, written, opened),
                              daemon=True)
    process.start()
    sent: Counter = Counter()
    try:
        yield sent
    finally:
        stop.set()
        process.join()
        sent.update(bytes=written.value, connections=opened.value)
