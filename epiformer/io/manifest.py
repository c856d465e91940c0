"""``manifest.json``: the contract between a precompute run and the hub and server built on it
(genome, tracks, models, settings). Written by :func:`precompute.merge_tracks`."""
from __future__ import annotations

import json
from pathlib import Path

from epiformer.errors import UserError

MANIFEST = "manifest.json"


class ManifestError(UserError, ValueError):
    """A precompute folder without a readable manifest, naming it."""


def read_manifest(outdir: str | Path) -> dict:
    """The manifest of a finished precompute folder."""
    path = Path(outdir) / MANIFEST
    if not path.is_file():
        raise ManifestError(f"{path}: no such file (is {outdir} a finished precompute folder?)")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ManifestError(f"{path} is not valid JSON: {err}") from None
