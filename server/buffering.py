"""A gunicorn worker that reads each request whole before a thread sees it.

gunicorn's threaded worker hands a connection to a thread, which then blocks reading headers and
body, so a few sockets that send half a request (or one byte a second) hold every thread, and
/healthz stops answering. This worker keeps connections in its event loop, reading without
blocking, until the head and the whole body are in; only then does a thread take the request,
which gunicorn parses from memory. A client gets ``client_timeout_s`` to send a whole request,
else 408 and the connection is closed. A body over ``max_body_bytes`` is 413 as soon as it is
announced; closes that wait for the peer also happen in the loop. A thread that sends an answer
drops a client that accepts none of it for ``client_timeout_s``.

Where a request ends and whether it can be read are gunicorn's decisions, not this module's
(:class:`RequestFramer`): the head is found by a resumable scan for its blank line (at most 64 KiB
from the first byte, empty lines before the request line included) and then parsed once by
gunicorn's own ``Request``, which applies its rules (one leading CRLF, obs-fold, Content-Length
and Transfer-Encoding, Expect); a chunked body is followed by a resumable scanner with gunicorn's
chunk grammar, whose trailers gunicorn parses. Every byte is looked at a fixed number of times.
After any framing error the client gets gunicorn's one answer and the connection is closed.

Connections are bounded too: at most ``max_connections_per_client`` per client address and
worker, and a worker at gunicorn's ``worker_connections`` makes room for a new client by closing
the oldest connection that has not sent a whole request.

The public deployment puts nginx in front as well (deploy/nginx.conf), which buffers clients the
same way and answers slow readers too; this worker is what keeps ``epiformer serve`` standing
without it.
"""
from __future__ import annotations

import errno
import json
import re
import selectors
import socket
import struct
import time
from collections import Counter
from functools import partial
from typing import Any

from gunicorn.config import Config
from gunicorn.http.body import CHUNK_EXT_RE, DEFAULT_MAX_CHUNK_SIZE_LINE, ChunkedReader
from gunicorn.http.errors import (
    ChunkMissingTerminator,
    InvalidChunkExtension,
    InvalidChunkSize,
    InvalidHeader,
    NoMoreData,
)
from gunicorn.http.message import MAX_REQUEST_LINE, Request
from gunicorn.http.unreader import IterUnreader
from gunicorn.workers.gthread import TConn, ThreadWorker

from epiformer.server.server_config import ServerConfig, body_limit_message

MAX_HEADER_BYTES = 64 * 1024    # from a request's first byte to the end of its head (or of its trailers)
READ_PER_EVENT = 64 * 1024      # bytes read from one connection before the loop serves the others ...
CHUNKED_READ_PER_EVENT = 4096   # ... while it sends a chunked body (followed chunk by chunk: about 1 ms)
LINGER_S = 2.0                  # how long a closed connection's unread input is drained ...
LINGER_BYTES = 64 * 1024        # ... and how much of it at most (gunicorn's close_graceful drains as much)
CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
HEX_DIGITS = b"0123456789abcdefABCDEF"
BARE_LF = re.compile(rb"(?<!\r)\n")
PLAIN_SIZE_LINE = re.compile(rb"([0-9a-fA-F]{1,16})\r\n")


def _reply(status: str, message: str = "") -> bytes:
    """A whole answer that closes the connection: empty, or the app's JSON error body."""
    body = json.dumps({"error": {"status": int(status.split()[0]), "message": message}}).encode() if message else b""
    kind = "Content-Type: application/json\r\n" if message else ""
    return (f"HTTP/1.1 {status}\r\nConnection: close\r\n{kind}Content-Length: {len(body)}\r\n\r\n").encode() + body


class HeadersTooLarge(ValueError):
    """A head (or trailers) over ``MAX_HEADER_BYTES`` (answered 431 by the worker)."""


class TooLarge(ValueError):
    """A request body over the limit (answered 413 by the worker)."""


def chunk_size(line: bytes) -> int:
    """The size a chunk-size line (without its CRLF) announces, by gunicorn's grammar
    (``ChunkedReader.parse_chunk_size``: BWS only before ``;``, extensions as ``CHUNK_EXT_RE``);
    raises gunicorn's InvalidChunkSize or InvalidChunkExtension."""
    size, *extension = line.split(b";", 1)
    if extension:
        if b"\r" in extension[0]:
            raise InvalidChunkExtension("bare CR not allowed")
        size = size.rstrip(b" \t")
    if not size or size.translate(None, HEX_DIGITS):
        raise InvalidChunkSize(size)
    if extension and not CHUNK_EXT_RE.fullmatch(b";" + extension[0]):
        raise InvalidChunkExtension("invalid chunk extension")
    return int(size, 16)


class RequestFramer:
    """Where the requests in a connection's bytes end, fed as they arrive. ``feed`` says when a
    whole request is held, ``take`` hands it over; errors are gunicorn's own (answered as gunicorn
    answers them), HeadersTooLarge or TooLarge. ``scanned`` counts the bytes looked at."""

    def __init__(self, cfg: Config, peer: Any, max_body: int) -> None:
        self.cfg, self.peer, self.max_body = cfg, peer, max_body
        limit = cfg.limit_request_line
        self.line_limit = MAX_REQUEST_LINE if limit < 0 or limit >= MAX_REQUEST_LINE else limit   # 0: none
        self.chunk_line_limit = cfg.limit_request_field_size if cfg.limit_request_field_size > 0 \
            else DEFAULT_MAX_CHUNK_SIZE_LINE
        self.buf = bytearray()
        self.scanned = 0
        self._reset(0)

    def _reset(self, start: int) -> None:
        self.start = start              # the request's first byte in buf
        self.request: Request | None = None
        self.end: int | None = None     # one past its last byte, once known
        self.line_start: int | None = None
        self.pos = start                # where the scan resumes
        self.lf_pos = start             # where the bare-LF check resumes
        self.line_seen = False          # the request line has been checked by gunicorn
        self.state = "head"

    @property
    def wants_continue(self) -> bool:
        """The head asks for 100 Continue (gunicorn's reading: HTTP/1.1, exactly 100-continue)
        and the body has not come yet."""
        whole = self.end is not None and len(self.buf) >= self.end
        return bool(self.request is not None and self.request._expected_100_continue and not whole)

    @property
    def chunked(self) -> bool:
        """A chunked body (or its trailers) is being followed."""
        return self.state in ("chunked", "trailers")

    @property
    def holding(self) -> bool:
        """Bytes of a request not yet taken are held (a partial one, or a pipelined next one)."""
        return len(self.buf) > self.start

    def feed(self, data: bytes) -> bool:
        """Add ``data``; True when a whole request is held."""
        self.buf += data
        if self.end is None:
            if self.state == "head":
                self._scan_head()
            if self.chunked:
                self._scan_chunked()
        return self.end is not None and len(self.buf) >= self.end

    def take(self) -> bytes:
        """The whole request (``feed`` said so); the framer then reads the next one."""
        assert self.end is not None
        request = bytes(self.buf[self.start:self.end])
        end = self.end
        if end > len(self.buf) // 2:            # drop what was taken, at most as often as it doubles
            del self.buf[:end]
            end = 0
        self._reset(end)
        return request

    def _gunicorn_head(self, upto: int) -> Request | None:
        """gunicorn's reading of ``buf[start:upto]``: the Request when the head is whole, None
        when it needs more bytes; raises its errors."""
        self.scanned += upto - self.start
        try:
            return Request(self.cfg, IterUnreader([bytes(self.buf[self.start:upto])]), self.peer)
        except (NoMoreData, StopIteration):
            return None

    def _scan_head(self) -> None:
        buf, start = self.buf, self.start
        if self.line_start is None:
            if len(buf) - start < 2 and buf[start:start + 1] in (b"", b"\r"):
                return
            self.line_start = self.pos = start + 2 if buf[start:start + 2] == b"\r\n" else start
        limit = start + MAX_HEADER_BYTES
        blank = buf.find(b"\r\n\r\n", self.pos, limit)
        upto = blank + 4 if blank >= 0 else min(len(buf), limit)
        self.scanned += 2 * (upto - self.pos)
        bare = BARE_LF.search(buf, self.lf_pos, upto)
        self.lf_pos = upto
        if blank >= 0 or bare:
            request = self._gunicorn_head(upto)
            if request is None:     # gunicorn refuses any bare LF in a head, whole or not
                raise InvalidHeader("bare LF as line terminator")
            return self._start_body(request, upto)
        if not self.line_seen:
            line_end = buf.find(b"\r\n", max(self.line_start, self.pos - 1), upto)
            if line_end >= 0 or (self.line_limit and upto - self.line_start - 2 > self.line_limit):
                self.line_seen = True
                self._gunicorn_head(upto)
        self.pos = max(self.line_start, upto - 3)
        if upto - start >= MAX_HEADER_BYTES:
            self._gunicorn_head(upto)
            raise HeadersTooLarge("request headers over 64 KiB")

    def _start_body(self, request: Request, head_end: int) -> None:
        self.request = request
        reader = request.body.reader
        if isinstance(reader, ChunkedReader):
            self.state, self.pos, self.line_start = "chunked", head_end, head_end
            self.body_start, self.data_bytes, self.chunk_end = head_end, 0, None
            return
        if reader.length > self.max_body:
            raise TooLarge()
        self.state, self.end = "length", head_end + reader.length

    def _scan_chunked(self) -> None:
        """Follow chunk-size lines, data and trailers from where the last call stopped."""
        buf = self.buf
        while self.end is None:
            if self.chunk_end is not None:              # a chunk's data, then its CRLF
                if len(buf) < self.chunk_end + 2:
                    break
                if not buf.startswith(b"\r\n", self.chunk_end):
                    raise ChunkMissingTerminator(bytes(buf[self.chunk_end:self.chunk_end + 2]))
                self.pos = self.line_start = self.chunk_end + 2
                self.chunk_end = None
            elif self.state == "chunked":              # a chunk-size line
                plain = PLAIN_SIZE_LINE.match(buf, self.line_start)
                if plain:                               # hex digits only: the common case, in one call
                    line_end = plain.end() - 2
                    size = int(plain[1], 16)
                    self.scanned += line_end + 2 - self.pos
                else:
                    line_end = buf.find(b"\r\n", self.pos)
                    self.scanned += (line_end + 2 if line_end >= 0 else len(buf)) - self.pos
                    if line_end < 0:
                        if len(buf) - self.line_start > self.chunk_line_limit:
                            raise InvalidChunkSize(b"line over %d bytes with no terminator" % self.chunk_line_limit)
                        self.pos = max(self.line_start, len(buf) - 1)
                        break
                    size = chunk_size(bytes(buf[self.line_start:line_end]))
                self.data_bytes += size
                if self.data_bytes > self.max_body:
                    raise TooLarge()
                self.pos = self.line_start = line_end + 2
                if size:
                    self.chunk_end = self.pos + size
                else:
                    self.state, self.lf_pos = "trailers", self.pos
            else:
                self._scan_trailers()
                break
        if (self.end or self.pos) - self.body_start > 2 * self.max_body + MAX_HEADER_BYTES:
            raise TooLarge()

    def _scan_trailers(self) -> None:
        """After the last chunk: an empty line, or trailers that gunicorn parses."""
        buf, start = self.buf, self.line_start
        if buf[start:start + 2] == b"\r\n":
            self.end = start + 2
            return
        blank = buf.find(b"\r\n\r\n", self.pos)
        upto = blank + 4 if blank >= 0 else len(buf)
        self.scanned += upto - self.pos
        if blank < 0:
            if upto - start > MAX_HEADER_BYTES:
                raise HeadersTooLarge("trailers over 64 KiB")
            if BARE_LF.search(buf, self.lf_pos, upto):
                raise InvalidHeader("bare LF as line terminator")
            self.pos = self.lf_pos = max(start, upto - 3)
            return
        self.request.parse_headers(bytes(buf[start:blank]), from_trailer=True)
        self.end = upto


class Connection(TConn):
    """gunicorn's connection with its request framer, counted against its client's address
    until it closes."""

    def __init__(self, cfg: Config, sock: socket.socket, client: Any, server: Any, max_body: int,
                 per_client: Counter) -> None:
        super().__init__(cfg, sock, client, server)
        self.framer = RequestFramer(cfg, client, max_body)
        self.continued = False
        self.address = client[0] if isinstance(client, tuple) else None
        self.per_client = per_client
        per_client[self.address] += 1

    def close(self, graceful: bool = False) -> None:
        if self.per_client is not None:
            self.per_client[self.address] -= 1
            if not self.per_client[self.address]:
                del self.per_client[self.address]
            self.per_client = None
        super().close(graceful)


class BufferingWorker(ThreadWorker):
    """gunicorn's gthread worker with requests buffered in its event loop (see the module)."""

    client_timeout_s = ServerConfig.client_timeout_s       # the settings' defaults; buffering_worker sets them
    max_body_bytes = ServerConfig.max_body_bytes
    max_connections_per_client = ServerConfig.max_connections_per_client     # 0: no limit

    def init_process(self) -> None:
        self.buffering: dict[Connection, float] = {}    # connection -> deadline, in deadline order
        self.lingering: dict[Connection, tuple[float, int]] = {}    # -> (deadline, bytes drained)
        self.per_client: Counter = Counter()
        super().init_process()

    def set_accept_enabled(self, enabled: bool) -> None:
        """At worker_connections, go on accepting while a connection can make room (``accept``)."""
        if not enabled and self.alive and (self.buffering or self.lingering or self.keepalived_conns):
            enabled = True
        super().set_accept_enabled(enabled)

    def accept(self, listener: socket.socket) -> None:
        if self.cfg.is_ssl:
            return super().accept(listener)
        try:
            client, address = listener.accept()
        except OSError as err:
            if err.errno in (errno.EAGAIN, errno.ECONNABORTED, errno.EWOULDBLOCK):
                return
            raise
        if self.max_connections_per_client and isinstance(address, tuple) and \
                self.per_client[address[0]] >= self.max_connections_per_client:
            client.close()
            return
        if self.nr_conns >= self.worker_connections:
            self._make_room()
        self.nr_conns += 1
        conn = Connection(self.cfg, client, address, listener.getsockname(), self.max_body_bytes, self.per_client)
        conn.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, struct.pack("ll", int(self.client_timeout_s), 0))
        self._buffer(conn, register=True)

    def _make_room(self) -> None:
        """Close the connection that matters least: a lingering close, else an idle kept-alive
        one, else the oldest that has not sent a whole request."""
        if self.lingering:
            return self._close_lingering(next(iter(self.lingering)))
        if self.keepalived_conns:
            conn = self.keepalived_conns.popleft()
            self._unregister(conn)
            self.nr_conns -= 1
            return conn.close()
        if self.buffering:
            self._drop(next(iter(self.buffering)))

    def on_client_socket_readable(self, conn: Connection, client: socket.socket) -> None:
        """A kept-alive connection's next request begins: buffer it too."""
        if self.cfg.is_ssl:
            return super().on_client_socket_readable(conn, client)
        self.keepalived_conns.remove(conn)
        self.poller.modify(client, selectors.EVENT_READ, partial(self._on_readable, conn))
        self._buffer(conn, register=False)

    def _buffer(self, conn: Connection, register: bool) -> None:
        self.buffering[conn] = time.monotonic() + self.client_timeout_s
        if register:
            self.poller.register(conn.sock, selectors.EVENT_READ, partial(self._on_readable, conn))
        if not self._frame(conn, b""):
            self._on_readable(conn, conn.sock)

    def _on_readable(self, conn: Connection, _sock: socket.socket) -> None:
        """One read, small enough that one client cannot hold the loop."""
        try:
            data = conn.sock.recv(CHUNKED_READ_PER_EVENT if conn.framer.chunked else READ_PER_EVENT)
        except BlockingIOError:
            return
        except OSError:
            return self._drop(conn)
        if not data:
            return self._drop(conn)
        self._frame(conn, data)

    def _frame(self, conn: Connection, data: bytes) -> bool:
        """Feed ``data`` to the connection's framer; True when the connection left the buffer
        (its request handed over, or refused)."""
        try:
            whole = conn.framer.feed(data)
        except TooLarge:
            self._drop(conn, _reply("413 Request Entity Too Large", body_limit_message(self.max_body_bytes)))
            return True
        except HeadersTooLarge as err:
            self._drop(conn, _reply("431 Request Header Fields Too Large", str(err)))
            return True
        except Exception as err:       # gunicorn's framing errors: its own answer, once
            self._stop_reading(conn)
            self.handle_error(conn.framer.request, conn.sock, conn.client, err)
            self._linger(conn)
            return True
        if whole:
            self._hand_over(conn)
            return True
        if conn.framer.wants_continue and not conn.continued:
            conn.continued = True
            try:
                conn.sock.send(CONTINUE)
            except OSError:
                pass
        return False

    def _hand_over(self, conn: Connection) -> None:
        del self.buffering[conn]
        self.poller.unregister(conn.sock)
        conn.continued = False
        conn.init()
        conn.parser.unreader.unread(conn.framer.take())
        conn.data_ready = True
        self.enqueue_req(conn)

    def handle_request(self, req: Request, conn: Connection) -> bool:
        """The loop sent any 100 Continue already, and the body is here: gunicorn sends none."""
        req._expected_100_continue = False
        return super().handle_request(req, conn)

    def _keepalive_after(self, conn: Connection, keepalive: bool) -> bool:
        """A body the app left unread that cannot be drained closes the connection: never a
        second answer after the app's."""
        try:
            return super()._keepalive_after(conn, keepalive)
        except Exception:
            return False

    def _unregister(self, conn: Connection) -> None:
        try:
            self.poller.unregister(conn.sock)
        except (KeyError, ValueError, OSError):
            pass

    def _stop_reading(self, conn: Connection) -> None:
        self.buffering.pop(conn, None)
        self._unregister(conn)

    def _drop(self, conn: Connection, reply: bytes = b"") -> None:
        """Stop reading ``conn``: close it, or send ``reply`` and linger so that the client reads
        it before the close (closing with its input unread would reset the connection)."""
        self._stop_reading(conn)
        if reply:
            try:
                conn.sock.send(reply)
            except OSError:
                pass
            else:
                return self._linger(conn)
        self.nr_conns -= 1
        conn.close()

    def finish_request(self, conn: Connection, fs) -> None:
        """Pipelined bytes already read are framed at once; a connection to close lingers in the
        loop, not in this thread."""
        if self.cfg.is_ssl:
            return super().finish_request(conn, fs)
        result = not fs.cancelled() and fs.exception() is None and fs.result()
        if result is True and self.alive and conn.framer.holding:
            conn.sock.setblocking(False)
            self._buffer(conn, register=True)
        elif result is True:
            super().finish_request(conn, fs)
        else:
            self._linger(conn)

    def _linger(self, conn: Connection) -> None:
        """Close after the peer has seen the answer: half-close, then drain what it still sends
        until it closes, ``LINGER_S`` pass or ``LINGER_BYTES`` came (as gunicorn's close_graceful,
        without blocking the loop)."""
        try:
            conn.sock.shutdown(socket.SHUT_WR)
            conn.sock.setblocking(False)
            self.poller.register(conn.sock, selectors.EVENT_READ, partial(self._on_linger_readable, conn))
        except (OSError, ValueError, KeyError):
            self.nr_conns -= 1
            conn.close()
            return
        self.lingering[conn] = (time.monotonic() + LINGER_S, 0)

    def _on_linger_readable(self, conn: Connection, _sock: socket.socket) -> None:
        try:
            data = conn.sock.recv(65536)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        deadline, drained = self.lingering[conn]
        if data and drained + len(data) < LINGER_BYTES:
            self.lingering[conn] = (deadline, drained + len(data))
            return
        self._close_lingering(conn)

    def _close_lingering(self, conn: Connection) -> None:
        del self.lingering[conn]
        self._unregister(conn)
        self.nr_conns -= 1
        conn.close()

    def murder_pending(self) -> None:
        """Also answer 408 to requests not whole in time, and end lingering closes."""
        super().murder_pending()
        now = time.monotonic()
        for conn, deadline in list(self.buffering.items()):
            if deadline > now:
                break
            if conn.framer.holding:
                self._drop(conn, _reply("408 Request Timeout"))
            else:
                self._drop(conn)
        for conn, (deadline, _) in list(self.lingering.items()):
            if deadline > now:
                break
            self._close_lingering(conn)


def buffering_worker(client_timeout_s: float, max_body_bytes: int,
                     max_connections_per_client: int) -> type[BufferingWorker]:
    """The worker class with these limits (gunicorn takes a class as its worker_class)."""
    return type("BufferingWorker", (BufferingWorker,), {"client_timeout_s": client_timeout_s,
                                                        "max_body_bytes": max_body_bytes,
                                                        "max_connections_per_client": max_connections_per_client})
