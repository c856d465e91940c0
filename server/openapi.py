"""The OpenAPI 3.1 description of the server's JSON API (served at /api/openapi.json)."""
from __future__ import annotations

from epiformer import __version__
from epiformer.inference.settings import MISMATCH_RULES, ScoringSettings
from epiformer.server.prediction_api import MAX_CONSERVATION, MAX_PROBLEMS
from epiformer.server.server_config import ServerConfig

PROBLEMS = {"problems": {"type": "array", "items": {"type": "object"}, "maxItems": MAX_PROBLEMS,
                         "description": f"the first {MAX_PROBLEMS} problems, each with its item's index"},
            "problem_count": {"type": "integer", "description": "all the problems, listed or not"}}
ERROR = {"type": "object", "required": ["error"],
         "properties": {"error": {"type": "object", "required": ["status", "message"],
                                  "properties": {"status": {"type": "integer"}, "message": {"type": "string"},
                                                 **PROBLEMS,
                                    "settings": {"$ref": "#/components/schemas/Settings"},
                                    "percentiles_missing": {"type": "string",
                                                            "description": "why the scores have no percentiles"}}}}}
TRACK = {"type": "object", "required": ["name", "url", "color"],
         "properties": {"name": {"type": "string"}, "url": {"type": "string"},
                        "color": {"type": "string", "description": "UCSC R,G,B"},
                        "description": {"type": "string"}, "sha256": {"type": ["string", "null"]}}}
TRACKS = {"type": "object", "required": ["genome", "tracks", "hub", "links", "default_locus"],
          "properties": {"genome": {"type": "object"}, "default_locus": {"type": "string"},
                         "bin_size": {"type": "integer"}, "tracks": {"type": "array", "items": TRACK},
                         "specificity": {"type": "array", "items": {"type": "object"},
                                         "description": "each cell type's log2(x+1) minus the mean over cell types "
                                                        "(precompute --specificity): name, target, kind, url, color"},
                         "interpretation": {"type": "array", "items": {"type": "object"},
                                            "description": "contribution and mutagenesis tracks (epiformer "
                                                           "interpret): name, target, kind, url, color"},
                         "annotation": {"type": ["object", "null"],
                                        "description": "the gene annotation's bigBed (name, url), when served"},
                         "hub": {"type": "string"}, "links": {"type": "object"}, "igv_js": {"type": "object"}}}
VARIANT = {"oneOf": [
    {"type": "string", "description": "chrom:pos:ref:alt, pos 1-based", "example": "chr1:1000:A:G"},
    {"type": "object", "required": ["chrom", "pos", "ref", "alt"],
     "properties": {"chrom": {"type": "string"}, "pos": {"type": "integer", "minimum": 1},
                    "ref": {"type": "string", "description": "bases, or '' / '-' for an insertion"},
                    "alt": {"type": "string", "description": "bases, or '' / '-' for a deletion"}}}]}
SCORE = {"type": "object", "required": ["ref_sum", "alt_sum", "sad", "log2fc", "max_diff", "max_diff_bin"],
         "properties": {"ref_sum": {"type": "number"}, "alt_sum": {"type": "number"},
                        "sad": {"type": "number", "description": "alt_sum - ref_sum"},
                        "log2fc": {"type": "number", "description": "log2((alt_sum + 1) / (ref_sum + 1))"},
                        "max_diff": {"type": "number"},
                        "max_diff_bin": {"type": "array", "items": {"type": "integer"},
                                         "description": "0-based start and end of the bin of largest |alt - ref|"},
                        "d1": {"type": "number"}, "d2": {"type": "number"},
                        "percentiles": {"type": "object", "additionalProperties": {"type": "number"},
                                        "description": "0-100: the share of the calibration's background |scores| "
                                                       "below |score| (sad, log2fc, max_diff, d1, d2), when the model "
                                                       "is calibrated for this score_bp"},
                        "signed_quantiles": {"type": "object", "additionalProperties": {"type": "number"},
                                             "description": "-1 to 1: where the signed score falls among the "
                                                            "background's signed scores (sad, log2fc, max_diff; 0 at "
                                                            "their median), given with the percentiles"}}}
TRACK_VALUES = {"type": "object", "additionalProperties": {
    "type": "object", "additionalProperties": {"type": "array", "items": {"type": "number"}}}}
ISM_RESPONSE = {"type": "object", "required": ["region", "reference", "targets", "bases", "effects", "settings"],
                "properties": {"region": {"type": "object"}, "reference": {"type": "string"},
                               "targets": {"type": "array", "items": {"type": "string"}},
                               "bases": {"type": "array", "items": {"type": "string"}},
                               "score_bp": {"type": "integer"}, "substitutions": {"type": "integer"},
                               "window": {"type": "object"},
                               "effects": {"type": "object", "additionalProperties": {
                                   "type": "array", "items": {"type": "array", "items": {
                                       "type": ["number", "null"]}}},
                                   "description": "per target, per position: the SAD of A, C, G, T"},
                               "settings": {"$ref": "#/components/schemas/Settings"}}}
VARIANTS_RESPONSE = {"type": "object", "required": ["targets", "results", "problems"],
                     "properties": {"targets": {"type": "array", "items": {"type": "string"}},
                                    "score_bp": {"type": "integer"},
                                    "results": {"type": "array", "items": {
                                        "type": "object", "required": ["index", "variant", "window", "scores"],
                                        "properties": {"index": {"type": "integer"}, "variant": {"type": "object"},
                                                       "flag": {"type": "string",
                                                                "enum": ["ok", "swapped", "ref_mismatch"],
                                                                "description": "scored as given, with ref and alt "
                                                                               "swapped, or over the genome's ref "
                                                                               "(on_mismatch)"},
                                                       "window": {"type": "object"},
                                                       "scores": {"type": "object", "additionalProperties": SCORE},
                                                       "tracks": TRACK_VALUES}}},
                                    **PROBLEMS,
                                    "settings": {"$ref": "#/components/schemas/Settings"},
                                    "percentiles_missing": {"type": "string",
                                                            "description": "why the scores have no percentiles"}}}
PREDICT_REQUEST = {"oneOf": [
    {"type": "object", "required": ["region"],
     "properties": {"region": {"type": "string", "description": "chr:start-end, 1-based inclusive, at most one "
                                                                "window's output long"},
                    "edits": {"type": "array", "items": VARIANT,
                              "description": "substitutions, insertions, deletions inside the region; "
                                             "objects take the region's chromosome; at most max_edits "
                                             f"({ServerConfig.max_edits:,} by default)"}}},
    {"type": "object", "required": ["sequence"],
     "properties": {"sequence": {"type": "string", "pattern": "^[ACGTNacgtn]+$",
                                 "description": "A/C/G/T/N, at most seq_len; centred, N-padded"},
                    "conservation": {"type": ["array", "null"], "items": {"type": "number", "minimum": -MAX_CONSERVATION,
                                                                        "maximum": MAX_CONSERVATION},
                                     "description": "one per base; default 0 (a factor of 1)"}}}]}
PREDICT_RESPONSE = {"type": "object", "required": ["start", "end", "bin_size", "targets", "tracks"],
                    "properties": {"chrom": {"type": ["string", "null"]}, "start": {"type": "integer"},
                                   "end": {"type": "integer"}, "bin_size": {"type": "integer"},
                                   "targets": {"type": "array", "items": {"type": "string"}},
                                   "tracks": TRACK_VALUES, "settings": {"$ref": "#/components/schemas/Settings"}}}
SETTINGS = {"type": "object", "description": "the settings that made the numbers (as in every output of the commands)",
            "required": ["targets", "checkpoints", "conservation", "precision", "reverse_complement", "shifts"],
            "properties": {"targets": {"type": "array", "items": {"type": "string"}},
                           "checkpoints": {"type": "array", "items": {"type": "object"}},
                           "conservation": {"description": "{file, sha256}, 'none' (run without on purpose) or "
                                                           "'not used' (the model has no conservation input)"},
                           "precision": {"type": "string", "enum": ["fp32", "bf16"]},
                           "reverse_complement": {"type": "boolean"},
                           "shifts": {"type": "array", "items": {"type": "integer"}},
                           "score_bp": {"type": "integer"}, "device": {"type": "string"},
                           "threads": {"type": ["integer", "null"]}, "code_version": {"type": "string"}}}
STATUS = {"type": "object", "required": ["status"], "properties": {"status": {"type": "string"}}}


def variants_request(scoring: ScoringSettings) -> dict:
    """The /api/variants request, with ``scoring``'s defaults."""
    return {"type": "object", "required": ["variants"],
            "properties": {"variants": {"type": "array", "items": VARIANT, "minItems": 1},
                           "tracks": {"type": "boolean", "default": False,
                                      "description": "also return ref, alt and diff tracks"},
                           "score_bp": {"type": "integer", "minimum": 0, "default": scoring.score_bp,
                                        "description": "score the bins within this many bp of the variant; "
                                                       "0 scores every output bin"},
                           "on_mismatch": {"type": "string", "enum": list(MISMATCH_RULES),
                                           "default": scoring.on_mismatch,
                                           "description": "a ref that differs from the genome: skip the variant, "
                                                          "swap ref and alt when alt is the genome's base, or score "
                                                          "alt over the genome's bases (as score-variants' "
                                                          "--on-mismatch)"}}}


def ism_request(scoring: ScoringSettings) -> dict:
    """The /api/ism request, with ``scoring``'s defaults."""
    return {"type": "object", "required": ["region"],
            "properties": {"region": {"type": "string", "example": "chr1:150,001-150,100",
                                      "description": "chr:start-end, 1-based, at most 1,000 bp"},
                           "targets": {"type": "array", "items": {"type": "string"}, "minItems": 1,
                                       "description": "targets to answer for (default: all)"},
                           "score_bp": {"type": "integer", "minimum": 0, "default": scoring.score_bp,
                                        "description": "score the bins within this many bp of each base; 0 "
                                                       "scores every output bin"}}}


def _json(schema: dict, description: str) -> dict:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _errors(*codes: str) -> dict:
    reasons = {"400": "malformed request", "401": "API token missing or wrong (servers configured with one)",
               "413": "request body too large", "422": "nothing could be predicted",
               "429": "too many prediction requests at once, in the worker or from this client (the last free "
                      "slots are kept for other clients); see Retry-After",
               "503": "no model set loaded",
               "504": "the predictions were not ready within request_timeout_s of the request's arrival"}
    return {code: _json({"$ref": "#/components/schemas/Error"}, reasons[code]) for code in codes}


def openapi_document(server_url: str, scoring: ScoringSettings = ScoringSettings()) -> dict:
    """The API description, with ``server_url`` as its server and ``scoring``'s defaults."""
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
            "/api/variants": {"post": {
                "summary": "Score variants (SNVs and indels) per target",
                "description": "Each variant is checked against the reference and scored in a window around it: "
                               "Σref, Σalt, SAD, log2FC and the bin of largest change per target. Variants that "
                               "cannot be scored (a ref that differs from the genome under on_mismatch skip, an "
                               f"indel over {scoring.max_indel} bp, ...) are listed in problems with their index.",
                "operationId": "scoreVariants",
                "requestBody": {"required": True, "content": {"application/json": {"schema": variants_request(scoring)}}},
                "responses": {"200": _json(VARIANTS_RESPONSE, "scores"), **_errors("400", "401", "413", "422", "429", "503", "504")}}},
            "/api/ism": {"post": {
                "summary": "Saturation mutagenesis of a region (at most 1 kb) per target",
                "description": "Every substitution of the region is scored in the region's window (as epiformer "
                               "ism places it) through the incremental path: per target and position the SAD of "
                               "A, C, G and T over the bins within score_bp (0 at the reference base, null at N).",
                "operationId": "mutagenesis",
                "requestBody": {"required": True, "content": {"application/json": {"schema": ism_request(scoring)}}},
                "responses": {"200": _json(ISM_RESPONSE, "effects"), **_errors("400", "401", "413", "429", "503", "504")}}},
            "/api/predict": {"post": {
                "summary": "Predicted tracks for a region with edits, or for a raw sequence",
                "description": "Edited bases keep their position's conservation; inserted and raw bases get 0 "
                               "unless conservation is given.",
                "operationId": "predict",
                "requestBody": {"required": True, "content": {"application/json": {"schema": PREDICT_REQUEST}}},
                "responses": {"200": _json(PREDICT_RESPONSE, "tracks"), **_errors("400", "401", "413", "422", "429", "503", "504")}}},
            "/api/sequence": {"get": {
                "summary": "Reference bases of a region (at most 10 kb)",
                "operationId": "sequence",
                "parameters": [{"name": "region", "in": "query", "required": True, "schema": {"type": "string"},
                                "example": "chr1:1,001-1,100"}],
                "responses": {"200": _json({"type": "object", "required": ["chrom", "start", "end", "sequence"],
                                            "properties": {"chrom": {"type": "string"}, "start": {"type": "integer"},
                                                           "end": {"type": "integer"},
                                                           "sequence": {"type": "string"}}}, "bases"),
                              **_errors("400", "401", "429", "503")}}},
            "/api/variant-track": {"get": {
                "summary": "One variant's ref, alt or diff track for one target as bedGraph",
                "operationId": "variantTrack",
                "parameters": [
                    {"name": "variant", "in": "query", "required": True, "schema": {"type": "string"},
                     "example": "chr1:1000:A:G"},
                    {"name": "target", "in": "query", "schema": {"type": "string"}},
                    {"name": "kind", "in": "query", "schema": {"type": "string", "enum": ["ref", "alt", "diff"]}}],
                "responses": {"200": {"description": "bedGraph", "content": {"text/plain": {"schema": {"type": "string"}}}},
                              **_errors("400", "401", "429", "503", "504")}}},
            "/healthz": {"get": {"summary": "The process is up", "operationId": "healthz",
                                 "responses": {"200": _json(STATUS, "up")}}},
            "/readyz": {"get": {"summary": "Ready to serve", "operationId": "readyz",
                                "responses": {"200": _json(STATUS, "ready"), "503": _json(STATUS, "not ready")}}},
        },
        "components": {"schemas": {"Error": ERROR, "Track": TRACK, "Tracks": TRACKS, "Variant": VARIANT,
                                   "Score": SCORE, "Settings": SETTINGS}},
    }
