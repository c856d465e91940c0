"""The JSON API: tracks and their ready-made browser links, the OpenAPI document, health checks."""
from __future__ import annotations

import json
from pathlib import Path
from urllib.parse import quote, urljoin

from flask import Blueprint, Response, current_app, jsonify, request
from werkzeug.exceptions import BadRequest

from epiformer.server.openapi import openapi_document
from epiformer.trackhub import UCSC_GENOMES
from epiformer.trackhub.hub import derived_color, derived_name, derived_tracks

api = Blueprint("api", __name__)


def public_base() -> str:
    """The server's URL as users reach it: the configured public_url, else the request's host when
    it is one of ``allowed_hosts`` (a forged Host would otherwise choose the URLs; 400 for others)."""
    cfg = current_app.config["EPIFORMER"]
    if cfg.public_url:
        return cfg.public_url.rstrip("/") + "/"
    host = request.host.rsplit(":", 1)[0] if not request.host.endswith("]") else request.host
    if host.strip("[]").lower() not in allowed_hosts(cfg):
        raise BadRequest(f"this server builds its links from public_url or from an allowed host name, and "
                         f"{host[:100]!r} is not one: set public_url, or add the name to allowed_hosts")
    return request.host_url.rstrip("/") + "/"


def allowed_hosts(cfg) -> set[str]:
    """Host names whose requests may choose absolute URLs: ``allowed_hosts``, else the bind address
    and the loopback names."""
    if cfg.allowed_hosts:
        return {h.lower() for h in cfg.allowed_hosts}
    return {cfg.bind.rsplit(":", 1)[0].strip("[]").lower(), "localhost", "127.0.0.1", "::1"}


def host_dependent(response: Response) -> Response:
    """An answer whose URLs come from the request's host: caches must key it by Host."""
    response.headers["Vary"] = "Host"
    response.headers["Cache-Control"] = "no-cache"
    return response


def tracks_document() -> dict:
    """Tracks with absolute URLs, the hub and genome URLs, and links for UCSC, IGV and igv.js."""
    manifest = current_app.config["MANIFEST"]
    hub_dir = Path(current_app.config["HUB_DIR"])
    session = json.loads((hub_dir / "igv_session.json").read_text())
    hub_base = urljoin(public_base(), "hub/")
    hub_url = urljoin(hub_base, "hub.txt")
    genome = manifest["genome"]["name"]
    described = {t["name"]: t for t in manifest["tracks"]}
    predicted = [t for t in session["tracks"] if t["name"] in described]
    tracks = [{"name": t["name"], "url": urljoin(hub_base, t["url"]), "color": described[t["name"]]["color"],
               "description": described[t["name"]]["description"], "sha256": described[t["name"]]["sha256"]}
              for t in predicted]
    recorded = {derived_name(i): i for i in derived_tracks(manifest)}
    colors = {name: t["color"] for name, t in described.items()}
    derived = [{"name": t["name"], "target": item["target"], "kind": item["kind"],
                "url": urljoin(hub_base, t["url"]), "color": derived_color(item, colors)}
               for t in session["tracks"] if (item := recorded.get(t["name"]))]
    reference = {key: urljoin(hub_base, value) if key.endswith("URL") else value
                 for key, value in session["reference"].items()}
    fasta_url = urljoin(hub_base, f"genome/{genome}.fa")
    ucsc_key = "db" if genome in UCSC_GENOMES else "genome"
    igv_desktop = ("http://localhost:60151/load?file=" + quote(",".join(t["url"] for t in tracks), safe="")
                   + "&genome=" + quote(fasta_url, safe="") + "&locus=" + quote(session["locus"], safe="")
                   + "&name=" + quote(",".join(t["name"] for t in tracks), safe="") + "&merge=true")
    return {
        "genome": {"name": genome, "chrom_sizes": manifest["genome"]["chrom_sizes"], "fasta": fasta_url,
                   "fasta_index": fasta_url + ".fai", "twobit": reference.get("twoBitURL"),
                   "chrom_sizes_url": reference.get("chromSizesURL")},
        "default_locus": session["locus"],
        "bin_size": manifest["params"]["bin_size"],
        "tracks": tracks,
        "specificity": [t for t in derived if t["kind"] == "specificity"],
        "interpretation": [t for t in derived if t["kind"] != "specificity"],
        "annotation": next(({"name": t["name"], "url": urljoin(hub_base, t["url"])} for t in session["tracks"]
                            if t.get("type") == "annotation"), None),
        "hub": hub_url,
        "links": {
            "ucsc": f"https://genome.ucsc.edu/cgi-bin/hgTracks?{ucsc_key}={quote(genome)}&hubUrl={quote(hub_url, safe='')}",
            "igv_desktop": igv_desktop,
            "igv_desktop_session": urljoin(hub_base, "igv_session.xml"),
            "igv_js_session": urljoin(hub_base, "igv_session.json"),
        },
        "igv_js": {"reference": reference, "locus": session["locus"],
                   "tracks": [{**t, "url": urljoin(hub_base, t["url"])} for t in session["tracks"]]},
    }


@api.get("/api/tracks")
def tracks() -> Response:
    return host_dependent(jsonify(tracks_document()))


@api.get("/api/openapi.json")
def openapi() -> Response:
    return host_dependent(jsonify(openapi_document(public_base(), current_app.config["EPIFORMER"].scoring)))


@api.get("/healthz")
def healthz() -> Response:
    """The process is up."""
    return jsonify({"status": "ok"})


@api.get("/readyz")
def readyz() -> Response:
    """Ready to serve: the hub's files are in place."""
    hub = Path(current_app.config["HUB_DIR"]) / "hub.txt"
    if not hub.is_file():
        return jsonify({"status": "not ready", "reason": f"{hub} is missing"}), 503
    predictor = current_app.config.get("PREDICTOR")
    return jsonify({"status": "ready", "tracks": len(current_app.config["MANIFEST"]["tracks"]),
                    "predictions": predictor.names if predictor else None})
