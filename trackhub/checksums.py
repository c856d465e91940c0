"""HUBDIR/SHA256SUMS: the SHA-256 of every hub file, and the ETags made from it.

The file has ``sha256sum``'s format (``sha256sum -c SHA256SUMS`` in HUBDIR checks a copy). An ETag
is the strong entity tag ``"<SHA-256 hex>"`` of the file's bytes, so every copy of a hub, on every
server behind a load balancer, gives a file the same ETag. HUBDIR/etags.nginx holds the same
ETags as the body of an nginx ``map`` (deploy/nginx.conf includes it), so that nginx, serving the
hub folder itself, sends them too.
"""
from __future__ import annotations

import os
import re
from functools import lru_cache
from pathlib import Path
from types import MappingProxyType
from typing import Mapping

from epiformer.io.reading import sha256_file
from epiformer.io.writing import atomic_path

SUMS_FILE = "SHA256SUMS"
NGINX_ETAGS_FILE = "etags.nginx"
_LINE = re.compile(r"([0-9a-f]{64}) [ *](.+)")
# Paths nginx reads literally inside quotes (hub paths are made of these; others get no ETag there).
_NGINX_KEY = re.compile(r"[A-Za-z0-9_.+/-]+")


def write_sha256sums(hubdir: str | os.PathLike, digests: Mapping[str, str]) -> Path:
    """Write HUBDIR/SHA256SUMS from hex SHA-256 digests by path relative to HUBDIR, one
    ``<hex>  <path>`` line per file, sorted by path, and HUBDIR/etags.nginx; returns the first's path."""
    path = Path(hubdir) / SUMS_FILE
    with atomic_path(Path(hubdir) / NGINX_ETAGS_FILE) as tmp:
        tmp.write_text("".join(f"\"{name}\" '\"{digests[name]}\"';\n" for name in sorted(digests)
                               if _NGINX_KEY.fullmatch(name)))
    with atomic_path(path) as tmp:
        tmp.write_text("".join(f"{digests[name]}  {name}\n" for name in sorted(digests)))
    return path


def hub_etags(hub_dir: str | os.PathLike) -> Mapping[str, str]:
    """The ETag (quotes included) of every file HUBDIR/SHA256SUMS lists, by path relative to HUBDIR;
    empty without that file. The file is read again only when its modification time changes."""
    path = Path(hub_dir) / SUMS_FILE
    try:
        mtime_ns = path.stat().st_mtime_ns
    except FileNotFoundError:
        return MappingProxyType({})
    return _read_etags(str(path), mtime_ns)


@lru_cache(maxsize=16)
def _read_etags(path: str, mtime_ns: int) -> Mapping[str, str]:
    matches = (_LINE.fullmatch(line) for line in Path(path).read_text().splitlines())
    return MappingProxyType({m[2]: f'"{m[1]}"' for m in matches if m})


def file_etag(hub_dir: str | os.PathLike, name: str) -> str:
    """The ETag of the hub file ``name`` (relative to HUBDIR): its SHA256SUMS entry, else the
    SHA-256 of its bytes (a file added to the hub by hand)."""
    return hub_etags(hub_dir).get(name) or f'"{sha256_file(Path(hub_dir) / name)}"'
