"""A gunicorn worker that reads each request whole before a thread sees it.

gunicorn's threaded worker hands a connection to a thread as soon as its first byte arrives; the
thread then blocks reading headers and body, so a few sockets that send half a request (or one
byte a second) hold every thread, and /healthz stops answering. This worker keeps connections in
its event loop, reading without blocking, until the request line, the headers and the whole body
(by Content-Length or chunked framing) are in; only then does a thread take it, and the request
is parsed from memory. A client gets ``client_timeout_s`` to send a whole request, else 408 and
the connection is closed. A body over ``max_body_bytes`` is 413 as soon as it is announced, and
framing that cannot be read (headers over 64 KiB, a bad length or chunk) is 400, from the loop;
closes that wait for the peer also happen in the loop. A thread that
sends an answer drops a client that accepts none of it for ``client_timeout_s``.

The public deployment puts nginx in front as well (deploy/nginx.conf), which buffers clients the
same way and answers slow readers too; this worker is what keeps ``epiformer serve`` standing
without it.
"""
from __future__ import annotations

import errno
import json
import selectors
import socket
import struct
import time
from functools import partial

from gunicorn.workers.gthread import TConn, ThreadWorker

from epiformer.server.server_config import body_limit_message

MAX_HEADER_BYTES = 64 * 1024
LINGER_S = 2.0                  # how long a closed connection's unread input is drained
CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"


def _reply(status: str, message: str = "") -> bytes:
    """A whole answer that closes the connection: empty, or the app's JSON error body."""
    body = json.dumps({"error": {"status": int(status.split()[0]), "message": message}}).encode() if message else b""
    kind = "Content-Type: application/json\r\n" if message else ""
    return (f"HTTP/1.1 {status}\r\nConnection: close\r\n{kind}Content-Length: {len(body)}\r\n\r\n").encode() + body


class Framing(ValueError):
    """A request whose framing cannot be read (answered 400 by the worker)."""


class HeadersTooLarge(Framing):
    """Request headers over ``MAX_HEADER_BYTES`` (answered 431 by the worker)."""


class TooLarge(ValueError):
    """A request body over the limit (answered 413 by the worker)."""


def _chunked_end(data: bytes, pos: int, max_body: int) -> int | None:
    """Where a chunked body starting at ``pos`` ends (trailers included), None when more is
    needed; raises Framing or TooLarge."""
    total = 0
    while True:
        line_end = data.find(b"\r\n", pos)
        if line_end < 0:
            if len(data) - pos > 1024:
                raise Framing("a chunk size line longer than 1 KiB")
            return None
        text = data[pos:line_end].split(b";", 1)[0].strip()
        if not text or len(text) > 16 or text.strip(b"0123456789abcdefABCDEF"):
            raise Framing(f"the chunk size {text[:20].decode('latin-1')!r} is not hexadecimal")
        size = int(text, 16)
        total += size
        if total > max_body:
            raise TooLarge()
        pos = line_end + 2
        if size == 0:
            end = data.find(b"\r\n\r\n", pos - 2)
            if end < 0 and len(data) - pos > MAX_HEADER_BYTES:
                raise Framing("trailers over 64 KiB")
            return end + 4 if end >= 0 else None
        if len(data) < pos + size + 2:
            return None
        if data[pos + size: pos + size + 2] != b"\r\n":
            raise Framing("a chunk is longer than its size says")
        pos += size + 2


def request_state(data: bytes, max_body: int) -> tuple[str, int]:
    """Whether ``data`` holds a whole request: ("more", 0) to read on, or ("ready", n) with n the
    bytes up to the body. Raises HeadersTooLarge (over ``MAX_HEADER_BYTES``), Framing (a length or
    chunk that cannot be read) or TooLarge (a body over ``max_body``, known as soon as it is announced).
    Only whole requests reach the parser, so a thread never waits on a client."""
    start = len(data) - len(data.lstrip(b"\r\n"))     # empty lines before a request are ignored
    head_end = data.find(b"\r\n\r\n", start)
    if head_end < 0:
        if len(data) - start > MAX_HEADER_BYTES:
            raise HeadersTooLarge("request headers over 64 KiB")
        return "more", 0
    body_start = head_end + 4
    length, chunked = 0, False
    for line in data[start:head_end].split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        name = name.strip().lower()
        if name == b"transfer-encoding":
            chunked = chunked or b"chunked" in value.lower()
        elif name == b"content-length":
            text = value.strip()
            if not text.isdigit() or len(text) > 18:
                raise Framing(f"Content-Length {text[:20].decode('latin-1')!r} is not a number of bytes")
            length = int(text)
    if chunked:
        return ("more", 0) if _chunked_end(data, body_start, max_body) is None else ("ready", body_start)
    if length > max_body:
        raise TooLarge()
    return ("ready", body_start) if len(data) >= body_start + length else ("more", 0)


def without_expect(data: bytes, head_end: int) -> bytes:
    """``data`` without its ``Expect: 100-continue`` header (answered here already)."""
    lines = data[:head_end].split(b"\r\n")
    kept = [line for line in lines if not line.lower().startswith(b"expect:")]
    return b"\r\n".join(kept) + data[head_end:]


class BufferingWorker(ThreadWorker):
    """gunicorn's gthread worker with requests buffered in its event loop (see the module)."""

    client_timeout_s = 10.0
    max_body_bytes = 1_000_000

    def init_process(self) -> None:
        self.buffering: dict[TConn, float] = {}    # connection -> deadline, in deadline order
        self.lingering: dict[TConn, float] = {}
        super().init_process()

    def accept(self, listener: socket.socket) -> None:
        if self.cfg.is_ssl:
            return super().accept(listener)
        try:
            client, address = listener.accept()
        except OSError as err:
            if err.errno in (errno.EAGAIN, errno.ECONNABORTED, errno.EWOULDBLOCK):
                return
            raise
        self.nr_conns += 1
        conn = TConn(self.cfg, client, address, listener.getsockname())
        conn.pending = bytearray()
        conn.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, struct.pack("ll", int(self.client_timeout_s), 0))
        self._buffer(conn, register=True)

    def on_client_socket_readable(self, conn: TConn, client: socket.socket) -> None:
        """A kept-alive connection's next request begins: buffer it too."""
        if self.cfg.is_ssl:
            return super().on_client_socket_readable(conn, client)
        self.keepalived_conns.remove(conn)
        conn.pending = bytearray()
        self.poller.modify(client, selectors.EVENT_READ, partial(self._on_readable, conn))
        self._buffer(conn, register=False)

    def _buffer(self, conn: TConn, register: bool) -> None:
        self.buffering[conn] = time.monotonic() + self.client_timeout_s
        if register:
            self.poller.register(conn.sock, selectors.EVENT_READ, partial(self._on_readable, conn))
        self._on_readable(conn, conn.sock)

    def _on_readable(self, conn: TConn, _sock: socket.socket) -> None:
        while True:
            try:
                data = conn.sock.recv(65536)
            except BlockingIOError:
                break
            except OSError:
                return self._drop(conn)
            if not data:
                return self._drop(conn)
            conn.pending += data
            if len(data) < 65536:
                break
        try:
            state, head_end = request_state(bytes(conn.pending), self.max_body_bytes)
        except TooLarge:
            return self._drop(conn, _reply("413 Request Entity Too Large", body_limit_message(self.max_body_bytes)))
        except HeadersTooLarge as err:
            return self._drop(conn, _reply("431 Request Header Fields Too Large", str(err)))
        except Framing as err:
            return self._drop(conn, _reply("400 Bad Request", f"the request cannot be read: {err}"))
        if state == "more":
            if b"\r\n\r\n" in conn.pending and not getattr(conn, "continued", False):
                self._send_continue(conn)
            return None
        self._hand_over(conn, head_end)

    def _send_continue(self, conn: TConn) -> None:
        """A client waiting for 100 Continue before its body gets it now, not after a timeout."""
        head = bytes(conn.pending[:conn.pending.find(b"\r\n\r\n")]).lower()
        if b"\r\nexpect:" in head and b"100-continue" in head:
            try:
                conn.sock.send(CONTINUE)
            except OSError:
                return
            conn.continued = True

    def _hand_over(self, conn: TConn, head_end: int) -> None:
        del self.buffering[conn]
        self.poller.unregister(conn.sock)
        data = bytes(conn.pending)
        if getattr(conn, "continued", False) and head_end:
            data = without_expect(data, head_end - 4)
        conn.pending, conn.continued = bytearray(), False
        conn.init()
        conn.parser.unreader.unread(data)
        conn.data_ready = True
        self.enqueue_req(conn)

    def _drop(self, conn: TConn, reply: bytes = b"") -> None:
        """Stop reading ``conn``: close it, or send ``reply`` and linger so that the client reads
        it before the close (closing with its input unread would reset the connection)."""
        self.buffering.pop(conn, None)
        try:
            self.poller.unregister(conn.sock)
        except (KeyError, ValueError, OSError):
            pass
        if reply:
            try:
                conn.sock.send(reply)
            except OSError:
                pass
            else:
                return self._linger(conn)
        self.nr_conns -= 1
        conn.close()

    def finish_request(self, conn: TConn, fs) -> None:
        """Bytes read past the answered request (a pipelined next one) are buffered like any
        request; a connection to close lingers in the loop, not in this thread."""
        done = not fs.cancelled() and fs.exception() is None
        result = fs.result() if done else False
        if result is True and self.alive and conn.parser.unreader.buf.getbuffer().nbytes:
            conn.sock.setblocking(False)
            conn.pending = bytearray(conn.parser.unreader.take_buffered())
            self._buffer(conn, register=True)
        elif result is False and not self.cfg.is_ssl:
            self._linger(conn)
        else:
            super().finish_request(conn, fs)

    def _linger(self, conn: TConn) -> None:
        """Close after the peer has seen the answer: half-close, then drain what it still sends
        until it closes or ``LINGER_S`` pass (as gunicorn does, without blocking the loop)."""
        try:
            conn.sock.shutdown(socket.SHUT_WR)
            conn.sock.setblocking(False)
            self.poller.register(conn.sock, selectors.EVENT_READ, partial(self._on_linger_readable, conn))
        except (OSError, ValueError, KeyError):
            self.nr_conns -= 1
            conn.close()
            return
        self.lingering[conn] = time.monotonic() + LINGER_S

    def _on_linger_readable(self, conn: TConn, _sock: socket.socket) -> None:
        try:
            if conn.sock.recv(65536):
                return
        except BlockingIOError:
            return
        except OSError:
            pass
        self._close_lingering(conn)

    def _close_lingering(self, conn: TConn) -> None:
        del self.lingering[conn]
        try:
            self.poller.unregister(conn.sock)
        except (KeyError, ValueError, OSError):
            pass
        self.nr_conns -= 1
        conn.close()

    def murder_pending(self) -> None:
        """Also answer 408 to requests not whole in time, and end lingering closes."""
        super().murder_pending()
        now = time.monotonic()
        for conn, deadline in list(self.buffering.items()):
            if deadline > now:
                break
            self._drop(conn, _reply("408 Request Timeout") if conn.pending else b"")
        for conn, deadline in list(self.lingering.items()):
            if deadline > now:
                break
            self._close_lingering(conn)


def buffering_worker(client_timeout_s: float, max_body_bytes: int) -> type[BufferingWorker]:
    """The worker class with these limits (gunicorn takes a class as its worker_class)."""
    return type("BufferingWorker", (BufferingWorker,), {"client_timeout_s": client_timeout_s,
                                                        "max_body_bytes": max_body_bytes})
