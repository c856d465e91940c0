"""The OpenAPI 3.1 description of the server's JSON API (served at /api/openapi.json)."""
from __future__ import annotations

from epiformer import __version__

ERROR = {"type": "object", "required": ["error"],
         "properties": {"error": {"type": "object", "required": ["status", "message"],
                                  "properties": {"status": {"type": "integer"}, "message": {"type": "string"},
                                                 "problems": {"type": "array", "items": {"type": "object"}}}}}}
TRACK = {"type": "object", "required": ["name", "url", "color"],
         "properties": {"name": {"type": "string"}, "url": {"type": "string"},
                        "color": {"type": "string", "description": "UCSC R,G,B"},
                        "description": {"type": "string"}, "sha256": {"type": ["string", "null"]}}}
TRACKS = {"type": "object", "required": ["genome", "tracks", "hub", "links", "default_locus"],
          "properties": {"genome": {"type": "object"}, "default_locus": {"type": "string"},
                         "bin_size": {"type": "integer"}, "tracks": {"type": "array", "items": TRACK},
                         "hub": {"type": "string"}, "links": {"type": "object"}, "igv_js": {"type": "object"}}}
STATUS = {"type": "object", "required": ["status"], "properties": {"status": {"type": "string"}}}


def _json(schema: dict, description: str) -> dict:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def openapi_document(server_url: str) -> dict:
    """The API description, with ``server_url`` as its server."""
    return {
        "openapi": "3.1.0",
        "info": {"title": "Epiformer track server", "version": __version__,
                 "description": "Predicted chromatin accessibility tracks per cell type, as a UCSC/IGV track "
                                "hub and a JSON API."},
        "servers": [{"url": server_url}],
        "paths": {
            "/api/tracks": {"get": {"summary": "Tracks, genome and hub URLs, and links for UCSC, IGV and igv.js",
                                    "operationId": "tracks",
                                    "responses": {"200": _json(TRACKS, "the tracks")}}},
            "/healthz": {"get": {"summary": "The process is up", "operationId": "healthz",
                                 "responses": {"200": _json(STATUS, "up")}}},
            "/readyz": {"get": {"summary": "Ready to serve", "operationId": "readyz",
                                "responses": {"200": _json(STATUS, "ready"), "503": _json(STATUS, "not ready")}}},
        },
        "components": {"schemas": {"Error": ERROR, "Track": TRACK, "Tracks": TRACKS}},
    }
