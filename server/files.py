"""The hub's files over HTTP, as UCSC's fetcher, igv.js and IGV desktop read them.

``/hub/<path>`` serves HUBDIR: hub.txt, the tracks, the genome (.2bit, FASTA + .fai) and the
sessions. HEAD and GET with byte ranges (206 with Content-Range, suffix ranges, 416 past the
end), ETag and Last-Modified with conditional requests, no compression, and CORS so a page on
another origin may read them. Paths are confined to HUBDIR: ``..``, encoded traversal, absolute
paths and symlinks leading outside give 404.
"""
from __future__ import annotations

import os
from pathlib import Path

from flask import Blueprint, Response, abort, current_app, request, send_file
from werkzeug.security import safe_join

files = Blueprint("files", __name__)

CORS_HEADERS = {
    "Access-Control-Allow-Origin": "*",
    "Access-Control-Allow-Methods": "GET, HEAD, OPTIONS",
    "Access-Control-Allow-Headers": "Range, If-None-Match, If-Modified-Since, If-Range, Cache-Control",
    "Access-Control-Expose-Headers": "Content-Length, Content-Range, Accept-Ranges, ETag, Last-Modified",
    "Access-Control-Max-Age": "86400",
}
MIME_TYPES = {".txt": "text/plain", ".html": "text/html", ".json": "application/json",
              ".xml": "application/xml", ".sizes": "text/plain", ".fa": "text/plain",
              ".fai": "text/plain"}


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
    path = resolve_inside(Path(current_app.config["HUB_DIR"]), name)
    if path is None:
        abort(404)
    response = send_file(path, mimetype=MIME_TYPES.get(path.suffix, "application/octet-stream"),
                         conditional=True, etag=True, max_age=None)
    response.headers.update(CORS_HEADERS)
    response.headers["Accept-Ranges"] = "bytes"
    # Track files are named by their content: a regenerated track has a new URL, so they never go
    # stale. Everything else is revalidated with its ETag.
    immutable = name.startswith("tracks/")
    response.headers["Cache-Control"] = "public, max-age=31536000, immutable" if immutable else "no-cache"
    return response
