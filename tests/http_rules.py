"""The hub's HTTP rules for one file (RFC 9110 conditional and range requests), as checks that any
server can be put through, the Flask app or a server in front of the hub folder.

Each ``check_*(fetch, path, data)`` requests ``path`` through ``fetch`` and asserts the answers
against ``data``, the file's bytes (at least 1 KB). ``fetch(method, path, headers)`` returns ``(status, headers,
body)`` with the headers as a case-insensitive mapping.
"""
from __future__ import annotations

import email
import http.client
from datetime import timedelta
from email.utils import format_datetime, parsedate_to_datetime
from typing import Callable, Mapping
from urllib.parse import urlsplit

Answer = tuple[int, Mapping[str, str], bytes]
Fetch = Callable[[str, str, Mapping[str, str]], Answer]
OTHER_TAG = '"' + "0" * 64 + '"'


def http_fetch(base: str) -> Fetch:
    """``fetch`` over HTTP to the server at ``base`` (``http://host:port``), one connection a request."""
    url = urlsplit(base)

    def fetch(method: str, path: str, headers: Mapping[str, str]) -> Answer:
        connection = http.client.HTTPConnection(url.hostname, url.port, timeout=60)
        try:
            connection.request(method, path, headers=dict(headers))
            response = connection.getresponse()
            return response.status, response.headers, response.read()
        finally:
            connection.close()
    return fetch


def validators(fetch: Fetch, path: str) -> tuple[str, str]:
    """The file's ETag and Last-Modified, from a HEAD."""
    status, headers, _ = fetch("HEAD", path, {})
    assert status == 200, status
    return headers["ETag"], headers["Last-Modified"]


def shifted(date: str, seconds: int) -> str:
    """An HTTP date ``seconds`` after ``date``."""
    return format_datetime(parsedate_to_datetime(date) + timedelta(seconds=seconds), usegmt=True)


def assert_not_modified_headers(headers: Mapping[str, str], etag: str) -> None:
    """What a 304 for the file carries (RFC 9110 §15.4.5): its ETag and caching, and CORS."""
    assert headers["ETag"] == etag
    assert headers["Access-Control-Allow-Origin"] == "*"
    assert headers.get("Cache-Control")


def assert_file_headers(headers: Mapping[str, str], etag: str) -> None:
    """The headers every answer with (part of) the file carries: validators, CORS, caching, no
    compression."""
    assert_not_modified_headers(headers, etag)
    assert "Content-Encoding" not in headers


def assert_whole(answer: Answer, data: bytes, etag: str, method: str = "GET") -> None:
    """A 200 with the whole file (no body for HEAD)."""
    status, headers, body = answer
    assert status == 200, status
    assert_file_headers(headers, etag)
    assert headers["Accept-Ranges"] == "bytes"
    assert headers.get("Last-Modified")
    assert int(headers["Content-Length"]) == len(data)
    assert "Content-Range" not in headers
    assert body == (b"" if method == "HEAD" else data)


def assert_part(answer: Answer, data: bytes, etag: str, start: int, stop: int) -> None:
    """A single-part 206 with bytes ``start`` to ``stop - 1``."""
    status, headers, body = answer
    assert status == 206, status
    assert_file_headers(headers, etag)
    assert headers["Content-Range"] == f"bytes {start}-{stop - 1}/{len(data)}"
    assert int(headers["Content-Length"]) == stop - start
    assert body == data[start:stop]


def assert_no_file(answer: Answer, status: int, data: bytes) -> None:
    """An answer of ``status`` that does not carry the file."""
    assert answer[0] == status, answer[0]
    assert data not in answer[2]


def multipart_parts(headers: Mapping[str, str], body: bytes) -> list[tuple[str, str, bytes]]:
    """(Content-Type, Content-Range, bytes) of each part of a multipart/byteranges body."""
    message = email.message_from_bytes(f"Content-Type: {headers['Content-Type']}\r\n\r\n".encode() + body)
    assert message.is_multipart()
    return [(part["Content-Type"], part["Content-Range"], part.get_payload(decode=True))
            for part in message.get_payload()]


def check_whole_file(fetch: Fetch, path: str, data: bytes) -> None:
    """HEAD and GET without conditions: 200 with the whole file, its length and validators."""
    etag, _ = validators(fetch, path)
    assert etag.startswith('"'), "a strong entity tag"
    assert_whole(fetch("HEAD", path, {}), data, etag, "HEAD")
    assert_whole(fetch("GET", path, {"Accept-Encoding": "gzip"}), data, etag)


def check_preflight(fetch: Fetch, path: str, data: bytes) -> None:
    """OPTIONS: 204 allowing the range and conditional request headers from any origin."""
    status, headers, _ = fetch("OPTIONS", path, {"Origin": "http://elsewhere.example",
                                                 "Access-Control-Request-Method": "GET",
                                                 "Access-Control-Request-Headers": "range, if-match"})
    assert status == 204, status
    assert headers["Access-Control-Allow-Origin"] == "*"
    allowed = {name.strip().lower() for name in headers["Access-Control-Allow-Headers"].split(",")}
    assert {"range", "if-range", "if-match", "if-none-match", "if-modified-since",
            "if-unmodified-since"} <= allowed


def check_if_match(fetch: Fetch, path: str, data: bytes) -> None:
    """If-Match, strong comparison: the tag or ``*`` serve the file, another tag or the weak form
    of the file's own is 412 without the file; it overrides If-Unmodified-Since."""
    etag, modified = validators(fetch, path)
    for value in (etag, "*", f'{OTHER_TAG}, {etag}'):
        assert_whole(fetch("GET", path, {"If-Match": value}), data, etag)
    for method in ("GET", "HEAD"):
        for value in (OTHER_TAG, f"W/{etag}"):
            assert_no_file(fetch(method, path, {"If-Match": value}), 412, data)
    past = shifted(modified, -3600)
    assert_whole(fetch("GET", path, {"If-Match": etag, "If-Unmodified-Since": past}), data, etag)
    assert_no_file(fetch("GET", path, {"If-Match": OTHER_TAG, "Range": "bytes=0-9"}), 412, data)


def check_if_unmodified_since(fetch: Fetch, path: str, data: bytes) -> None:
    """If-Unmodified-Since: a date before Last-Modified is 412; Last-Modified itself, a later date
    or an invalid one serve the file."""
    etag, modified = validators(fetch, path)
    assert_no_file(fetch("GET", path, {"If-Unmodified-Since": shifted(modified, -1)}), 412, data)
    for value in (modified, shifted(modified, 3600), "yesterday"):
        assert_whole(fetch("GET", path, {"If-Unmodified-Since": value}), data, etag)


def check_if_none_match(fetch: Fetch, path: str, data: bytes) -> None:
    """If-None-Match, weak comparison: the tag, its weak form, ``*`` or a list holding it is 304
    for GET and HEAD, with the validators, caching and CORS headers and no body, even with a
    Range; another tag serves the file, ignoring If-Modified-Since."""
    etag, modified = validators(fetch, path)
    for method in ("GET", "HEAD"):
        for value in (etag, f"W/{etag}", "*", f'{OTHER_TAG}, {etag}'):
            status, headers, body = fetch(method, path, {"If-None-Match": value})
            assert status == 304, (method, value, status)
            assert_not_modified_headers(headers, etag)
            assert body == b""
    assert fetch("GET", path, {"If-None-Match": etag, "Range": "bytes=0-9"})[0] == 304
    later = shifted(modified, 3600)
    assert_whole(fetch("GET", path, {"If-None-Match": OTHER_TAG, "If-Modified-Since": later}), data, etag)


def check_if_modified_since(fetch: Fetch, path: str, data: bytes) -> None:
    """If-Modified-Since: Last-Modified or a later date is 304; an earlier or invalid date serves
    the file."""
    etag, modified = validators(fetch, path)
    for value in (modified, shifted(modified, 3600)):
        status, headers, body = fetch("GET", path, {"If-Modified-Since": value})
        assert status == 304 and body == b"", status
        assert_not_modified_headers(headers, etag)
    for value in (shifted(modified, -1), "not a date"):
        assert_whole(fetch("GET", path, {"If-Modified-Since": value}), data, etag)


def check_head_ignores_range(fetch: Fetch, path: str, data: bytes) -> None:
    """HEAD with a Range: 200 with the whole file's Content-Length and no body."""
    etag, _ = validators(fetch, path)
    assert_whole(fetch("HEAD", path, {"Range": "bytes=0-9"}), data, etag, "HEAD")


def check_if_range(fetch: Fetch, path: str, data: bytes) -> None:
    """If-Range, strong comparison: the tag or exactly Last-Modified give the range; the weak form
    of the tag, another tag or another date give the whole file."""
    etag, modified = validators(fetch, path)
    for value in (etag, modified):
        assert_part(fetch("GET", path, {"Range": "bytes=0-9", "If-Range": value}), data, etag, 0, 10)
    for value in (f"W/{etag}", OTHER_TAG, shifted(modified, -1), shifted(modified, 1)):
        assert_whole(fetch("GET", path, {"Range": "bytes=0-9", "If-Range": value}), data, etag)


def check_other_units_ignored(fetch: Fetch, path: str, data: bytes) -> None:
    """A Range in another unit (or none) is ignored: 200 with the whole file."""
    etag, _ = validators(fetch, path)
    for value in ("items=0-5", "0-5", "pages=1"):
        assert_whole(fetch("GET", path, {"Range": value}), data, etag)


def check_invalid_ranges_ignored(fetch: Fetch, path: str, data: bytes) -> None:
    """A byte Range that is not valid is ignored: 200 with the whole file (the RFC also lets a
    server refuse it; nginx answers 416)."""
    etag, _ = validators(fetch, path)
    for value in ("bytes=5-3", "bytes=abc", "bytes=0-5;", "bytes=", "bytes=0-²", "bytes=--5"):
        assert_whole(fetch("GET", path, {"Range": value}), data, etag)


def check_suffix_and_end_clamped(fetch: Fetch, path: str, data: bytes) -> None:
    """A suffix longer than the file is the whole file as a 206; an end past the file is clamped."""
    etag, _ = validators(fetch, path)
    size = len(data)
    assert_part(fetch("GET", path, {"Range": "bytes=-999999999"}), data, etag, 0, size)
    assert_part(fetch("GET", path, {"Range": "bytes=10-999999999"}), data, etag, 10, size)
    assert_part(fetch("GET", path, {"Range": f"bytes=0-{size - 1}"}), data, etag, 0, size)


def check_unsatisfiable(fetch: Fetch, path: str, data: bytes) -> None:
    """No satisfiable range (all start past the end, or ``-0``): 416 with ``bytes */SIZE``."""
    size = len(data)
    for value in (f"bytes={size}-", f"bytes={size}-{size + 10},{size + 100}-", "bytes=-0"):
        answer = fetch("GET", path, {"Range": value})
        assert_no_file(answer, 416, data)
        assert answer[1]["Content-Range"] == f"bytes */{size}", value
        assert answer[1]["Access-Control-Allow-Origin"] == "*"


def check_single_range(fetch: Fetch, path: str, data: bytes) -> None:
    """One satisfiable range: 206 with its bytes, Content-Range and Content-Length."""
    etag, _ = validators(fetch, path)
    size = len(data)
    for value, start, stop in (("bytes=0-99", 0, 100), ("bytes=100-", 100, size), ("bytes=-500", size - 500, size),
                               ("bytes=7-7", 7, 8), ("BYTES=0-9", 0, 10)):
        assert_part(fetch("GET", path, {"Range": value}), data, etag, start, stop)


def check_unsatisfiable_ranges_dropped(fetch: Fetch, path: str, data: bytes) -> None:
    """Unsatisfiable ranges in a set are dropped; one left is a plain single-part 206."""
    etag, _ = validators(fetch, path)
    size = len(data)
    for value in (f"bytes=0-9,{size}-", f"bytes={size + 5}-,0-9", "bytes=-0,0-9"):
        assert_part(fetch("GET", path, {"Range": value}), data, etag, 0, 10)


def check_empty_list_elements(fetch: Fetch, path: str, data: bytes) -> None:
    """Empty elements of the range list are skipped (RFC 9110 §5.6.1)."""
    etag, _ = validators(fetch, path)
    for value in ("bytes=0-9,", "bytes=,0-9", "bytes=0-9, ,"):
        assert_part(fetch("GET", path, {"Range": value}), data, etag, 0, 10)


def check_multiple_ranges(fetch: Fetch, path: str, data: bytes, multipart: bool = False) -> None:
    """Several satisfiable ranges: 206 multipart/byteranges, one part per range in the request's
    order, each with the file's Content-Type and its own Content-Range; or, unless ``multipart``,
    200 with the whole file (the RFC allows both)."""
    etag, _ = validators(fetch, path)
    size = len(data)
    content_type = fetch("HEAD", path, {})[1]["Content-Type"]
    for value, ranges in (("bytes=0-9,100-199", [(0, 10), (100, 200)]),
                          ("bytes=100-199,0-9", [(100, 200), (0, 10)]),
                          (f"bytes=0-0,-20,{size + 1}-", [(0, 1), (size - 20, size)]),
                          ("bytes=0-9,10-19,20-", [(0, 10), (10, 20), (20, size)])):
        answer = fetch("GET", path, {"Range": value})
        if answer[0] == 200 and not multipart:
            assert_whole(answer, data, etag)
            continue
        status, headers, body = answer
        assert status == 206, (value, status)
        assert_file_headers(headers, etag)
        assert headers["Content-Type"].startswith("multipart/byteranges; boundary=")
        assert "Content-Range" not in headers
        assert int(headers["Content-Length"]) == len(body)
        parts = multipart_parts(headers, body)
        assert [part[1] for part in parts] == [f"bytes {a}-{b - 1}/{size}" for a, b in ranges], value
        assert [part[2] for part in parts] == [data[a:b] for a, b in ranges], value
        assert all(part[0] == content_type for part in parts)


def check_too_many_ranges_ignored(fetch: Fetch, path: str, data: bytes) -> None:
    """More than 16 ranges are ignored: 200 with the whole file."""
    etag, _ = validators(fetch, path)
    many = "bytes=" + ",".join(f"{10 * i}-{10 * i + 4}" for i in range(17))
    assert_whole(fetch("GET", path, {"Range": many}), data, etag)


def check_overlapping_ranges_ignored(fetch: Fetch, path: str, data: bytes) -> None:
    """Overlapping ranges (which could ask for the file many times over) are ignored: 200 with
    the whole file. (nginx serves them when they add up to no more than the file.)"""
    etag, _ = validators(fetch, path)
    for value in ("bytes=0-9,5-14", "bytes=0-,0-", "bytes=-100,0-", "bytes=50-59,0-99"):
        assert_whole(fetch("GET", path, {"Range": value}), data, etag)


RULES: list[Callable[[Fetch, str, bytes], None]] = [
    check_whole_file, check_preflight, check_if_match, check_if_unmodified_since, check_if_none_match,
    check_if_modified_since, check_head_ignores_range, check_if_range, check_other_units_ignored,
    check_invalid_ranges_ignored,
    check_suffix_and_end_clamped, check_unsatisfiable, check_single_range, check_unsatisfiable_ranges_dropped,
    check_empty_list_elements, check_multiple_ranges, check_too_many_ranges_ignored,
    check_overlapping_ranges_ignored,
]
