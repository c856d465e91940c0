"""The hub's files over HTTP, as UCSC's fetcher, igv.js and IGV desktop read them.

``/hub/<path>`` serves HUBDIR: hub.txt, the tracks, the genome (.2bit, FASTA + .fai) and the
sessions, with conditional and range requests as RFC 9110 sections 13 and 14 define them: a strong
ETag from the file's SHA-256 (the same on every copy of the hub), Last-Modified, If-Match,
If-Unmodified-Since (412), If-None-Match, If-Modified-Since (304), Range with If-Range (206, one
part or multipart/byteranges; 416 past the end). No compression, and CORS so a page on another
origin may read them. Paths are confined to HUBDIR: ``..``, encoded traversal, absolute paths and
symlinks leading outside give 404.
"""
from __future__ import annotations

import os
import re
import secrets
from datetime import datetime, timezone
from pathlib import Path
from typing import BinaryIO, Iterator

from flask import Blueprint, Response, abort, current_app, request
from werkzeug.exceptions import PreconditionFailed, RequestedRangeNotSatisfiable
from werkzeug.http import (
    http_date,
    parse_date,
    parse_etags,
    parse_range_header,
    unquote_etag,
)
from werkzeug.security import safe_join
from werkzeug.utils import get_content_type
from werkzeug.wsgi import wrap_file

from epiformer.trackhub import file_etag

files = Blueprint("files", __name__)

CORS_HEADERS = {
    "Access-Control-Allow-Origin": "*",
    "Access-Control-Allow-Methods": "GET, HEAD, OPTIONS",
    "Access-Control-Allow-Headers": "Range, If-Match, If-None-Match, If-Modified-Since, If-Unmodified-Since, "
                                    "If-Range, Cache-Control",
    "Access-Control-Expose-Headers": "Content-Length, Content-Range, Accept-Ranges, ETag, Last-Modified",
    "Access-Control-Max-Age": "86400",
}
MIME_TYPES = {".txt": "text/plain", ".html": "text/html", ".json": "application/json",
              ".xml": "application/xml", ".sizes": "text/plain", ".fa": "text/plain",
              ".fai": "text/plain"}
# More ranges than this in one request are answered with the whole file (as nginx's max_ranges).
MAX_RANGES = 16
BLOCK_BYTES = 1 << 16
_ZERO_SUFFIX = re.compile(r"-0+")


def resolve_inside(root: Path, name: str) -> Path | None:
    """The file ``name`` names inside ``root``, or None when it does not exist or leads outside
    (through ``..``, an absolute path or a symlink)."""
    if any(ord(c) < 32 or c == "\x7f" for c in name):
        return None                     # NUL and control characters name no file (and os calls refuse NUL)
    joined = safe_join(str(root), name)
    if joined is None:
        return None
    real_root = os.path.realpath(root)
    real = os.path.realpath(joined)
    if os.path.commonpath([real_root, real]) != real_root or not os.path.isfile(real):
        return None
    return Path(real)


@files.route("/hub/<path:name>", methods=["GET", "HEAD", "OPTIONS"], merge_slashes=False)
def hub_file(name: str) -> Response:
    if request.method == "OPTIONS":
        return Response(status=204, headers=CORS_HEADERS)
    root = Path(current_app.config["HUB_DIR"])
    path = resolve_inside(root, name)
    if path is None:
        abort(404)
    try:
        handle = path.open("rb")
    except OSError:
        abort(404)
    try:
        return _answer(handle, file_etag(root, path.relative_to(os.path.realpath(root)).as_posix()),
                       name.startswith("tracks/"), MIME_TYPES.get(path.suffix, "application/octet-stream"))
    except BaseException:
        handle.close()
        raise


def _answer(handle: BinaryIO, etag: str, immutable: bool, mimetype: str) -> Response:
    """The answer to this request for the open file: 412, 304, 200, 206 or 416 (RFC 9110 §13.2.2)."""
    stat = os.fstat(handle.fileno())
    modified = datetime.fromtimestamp(int(stat.st_mtime), timezone.utc)
    last_modified = http_date(modified)
    headers = {**CORS_HEADERS, "Accept-Ranges": "bytes", "ETag": etag, "Last-Modified": last_modified,
               # Track files are named by their content: a regenerated track has a new URL, so they
               # never go stale. Everything else is revalidated with its ETag.
               "Cache-Control": "public, max-age=31536000, immutable" if immutable else "no-cache"}
    if not _preconditions_hold(etag, modified):
        raise PreconditionFailed()
    if _not_modified(etag, modified):
        handle.close()
        # werkzeug leaves Content-Type, Content-Length and Last-Modified out of a 304, as RFC 9110
        # §15.4.5 advises when there is an ETag.
        return Response(status=304, headers=headers)
    content_type = get_content_type(mimetype, "utf-8")
    ranges = None
    if request.method == "GET" and "Range" in request.headers and _if_range_holds(etag, last_modified):
        ranges = _byte_ranges(request.headers["Range"], stat.st_size)
    if ranges is None:
        response = Response(wrap_file(request.environ, handle), headers=headers, content_type=content_type,
                            direct_passthrough=True)
        response.content_length = stat.st_size
        return response
    if not ranges:
        raise RequestedRangeNotSatisfiable(length=stat.st_size)
    if len(ranges) == 1:
        (start, stop), = ranges
        response = Response(_read(handle, start, stop), status=206, headers=headers, content_type=content_type)
        response.headers["Content-Range"] = f"bytes {start}-{stop - 1}/{stat.st_size}"
        response.content_length = stop - start
    else:
        response = _multipart(handle, ranges, stat.st_size, content_type, headers)
    response.call_on_close(handle.close)
    return response


def _preconditions_hold(etag: str, modified: datetime) -> bool:
    """If-Match by strong comparison (``*``: any file), else If-Unmodified-Since; an invalid date
    is ignored."""
    if "If-Match" in request.headers:
        return parse_etags(request.headers["If-Match"]).contains(unquote_etag(etag)[0])
    since = parse_date(request.headers.get("If-Unmodified-Since"))
    return since is None or modified <= since


def _not_modified(etag: str, modified: datetime) -> bool:
    """If-None-Match by weak comparison (``*``: any file), else If-Modified-Since; an invalid date
    is ignored."""
    if "If-None-Match" in request.headers:
        return parse_etags(request.headers["If-None-Match"]).contains_weak(unquote_etag(etag)[0])
    since = parse_date(request.headers.get("If-Modified-Since"))
    return since is not None and modified <= since


def _if_range_holds(etag: str, last_modified: str) -> bool:
    """No If-Range, or one that matches by strong comparison: the ETag itself (a weak tag never
    matches), or a date exactly equal to Last-Modified (RFC 9110 §13.1.5). werkzeug's
    parse_if_range_header drops the weak marker, so it is not used."""
    value = request.headers.get("If-Range")
    return value is None or value in (etag, last_modified)


def _byte_ranges(header: str, size: int) -> list[tuple[int, int]] | None:
    """The satisfiable ranges of a Range header as (start, stop) offsets, ends clamped to the file,
    in the request's order; None when the header is ignored: a unit other than bytes, invalid syntax,
    more than MAX_RANGES ranges, or overlapping ones (so ranges never add up to more than the file).

    Each range is parsed on its own with werkzeug, which refuses ranges out of ascending order,
    empty list elements and the suffix ``-0`` that RFC 9110 allows (§14.1.1, §5.6.1): ``-0`` is
    valid but unsatisfiable, and empty elements are skipped.
    """
    unit, _, value = header.partition("=")
    specs = [spec for spec in (item.strip(" \t") for item in value.split(",")) if spec]
    if unit.strip(" \t").lower() != "bytes" or not specs or len(specs) > MAX_RANGES:
        return None
    ranges = []
    for spec in specs:
        if _ZERO_SUFFIX.fullmatch(spec):
            continue
        parsed = parse_range_header(f"bytes={spec}")
        if parsed is None:
            return None
        (first, end), = parsed.ranges
        if first < 0:
            start, stop = max(0, size + first), size
        else:
            start, stop = first, size if end is None else min(end, size)
        if start < stop:
            ranges.append((start, stop))
    ordered = sorted(ranges)
    if any(stop > start for (_, stop), (start, _) in zip(ordered, ordered[1:])):
        return None
    return ranges


def _read(handle: BinaryIO, start: int, stop: int) -> Iterator[bytes]:
    """Bytes ``start`` to ``stop - 1`` of an open file, in blocks."""
    handle.seek(start)
    while start < stop:
        block = handle.read(min(BLOCK_BYTES, stop - start))
        if not block:
            return
        start += len(block)
        yield block


def _multipart(handle: BinaryIO, ranges: list[tuple[int, int]], size: int, content_type: str,
               headers: dict[str, str]) -> Response:
    """A 206 multipart/byteranges answer, one part per range, streamed from the file."""
    boundary = secrets.token_hex(16)
    heads = [f"\r\n--{boundary}\r\nContent-Type: {content_type}\r\nContent-Range: bytes {start}-{stop - 1}/{size}"
             "\r\n\r\n".encode("ascii") for start, stop in ranges]
    tail = f"\r\n--{boundary}--\r\n".encode("ascii")

    def body() -> Iterator[bytes]:
        for head, (start, stop) in zip(heads, ranges):
            yield head
            yield from _read(handle, start, stop)
        yield tail

    response = Response(body(), status=206, headers=headers,
                        content_type=f"multipart/byteranges; boundary={boundary}")
    response.content_length = sum(map(len, heads)) + sum(stop - start for start, stop in ranges) + len(tail)
    return response
