"""Prediction endpoints: /api/variants, /api/ism, /api/predict and /api/variant-track.

Client mistakes are 400 (malformed request), 422 (well-formed but nothing could be scored) or
413 (body too large), with a JSON body naming the first :data:`MAX_PROBLEMS` problems and counting
all; a request whose predictions are not ready by its deadline (``request_timeout_s`` from its
admission, whatever it waits for) is 504; a server without a model set is 503.
"""
from __future__ import annotations

import hmac
import threading
from typing import Any

from flask import Blueprint, Response, current_app, g, jsonify, request
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

from epiformer.genome.intervals import parse_region
from epiformer.genome.reader import GenomeError
from epiformer.inference.deadline import end_deadline, start_deadline
from epiformer.inference.settings import MISMATCH_RULES
from epiformer.io.writing import bedgraph_text, settings_lines
from epiformer.server.batching import CLIENT, NonFiniteOutput
from epiformer.server.on_demand import ServerPredictor
from epiformer.variants.alleles import Variant, VariantError, make_variant, parse_variant

predictions = Blueprint("predictions", __name__)
MAX_ISM_BP = 1_000        # bases of one /api/ism request (three substitutions each)
MAX_CONSERVATION = 20.0   # phastCons is 0-1 and phyloP about -20 to 10; the model sees exp(value)
MAX_PROBLEMS = 20         # problems listed in one answer (problem_count counts them all)
FAIR_HOLDERS = 4          # client addresses that hold the slots when all are taken (at most the slots)


class ClientSlots:
    """Prediction requests running at once: at most ``total`` in this worker and ``per_client``
    for any one client address; and a client takes a slot only while enough stay free for
    ``min(FAIR_HOLDERS, total)`` addresses in all to hold one. So when every slot is taken at least
    that many addresses hold them (two or three cannot take them all), and an address holding
    none always gets a free slot."""

    def __init__(self, total: int, per_client: int) -> None:
        self.total, self.per_client = total, per_client
        self.holders = min(FAIR_HOLDERS, total)
        self.running: dict[str, int] = {}
        self.lock = threading.Lock()

    def acquire(self, client: str) -> str | None:
        """Take a slot for ``client``: None when it got one, else why not."""
        with self.lock:
            held = self.running.get(client, 0)
            if held >= self.per_client:
                return f"this client already has {self.per_client} prediction requests running; retry shortly"
            free = self.total - sum(self.running.values())
            if not free:
                return "too many prediction requests at once; retry shortly"
            if free - 1 < self.holders - len(self.running) - (not held):
                return (f"this client already has {held} prediction requests running and the free slots are "
                        "kept for other clients; retry shortly")
            self.running[client] = held + 1
            return None

    def release(self, client: str) -> None:
        with self.lock:
            self.running[client] -= 1
            if not self.running[client]:
                del self.running[client]


class Problems:
    """The problems of a request's items: the first :data:`MAX_PROBLEMS` kept, all counted."""

    def __init__(self) -> None:
        self.listed: list[dict] = []
        self.count = 0

    def add(self, problem: dict) -> None:
        self.count += 1
        if len(self.listed) < MAX_PROBLEMS:
            self.listed.append(problem)

    def fields(self) -> dict[str, Any]:
        """``problems`` (the first :data:`MAX_PROBLEMS`) and ``problem_count`` (all), for an answer."""
        return {"problems": self.listed, "problem_count": self.count}


class ApiError(HTTPException):
    """An error answered as JSON with its problems (and extra headers)."""

    def __init__(self, code: int, message: str, problems: Problems | None = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.problems = problems
        self.extra_headers = headers or {}


@predictions.errorhandler(ApiError)
def api_error(err: ApiError) -> tuple[Response, int]:
    body: dict[str, Any] = {"status": err.code, "message": err.description}
    if err.problems is not None and err.problems.count:
        body.update(err.problems.fields())
    response = jsonify({"error": body})
    response.headers.update(err.extra_headers)
    return response, err.code


@predictions.errorhandler(NonFiniteOutput)
def unpredictable(err: NonFiniteOutput) -> tuple[Response, int]:
    """Input that passed the checks but that the model answers with inf or NaN."""
    return api_error(ApiError(422, str(err)))


@predictions.errorhandler(TimeoutError)
def timed_out(_err: TimeoutError) -> tuple[Response, int]:
    """Predictions not ready by the request's deadline, whatever the request waited for."""
    timeout = current_app.config["EPIFORMER"].request_timeout_s
    return api_error(ApiError(504, f"the model did not answer within {timeout:g} s (request_timeout_s)"))


@predictions.before_request
def admit() -> None:
    """The optional API token, then a free prediction slot (the worker's limit, and a client's
    by address, behind proxies set proxy_hops, so that a few clients cannot take them all); then
    the request's deadline, ``request_timeout_s`` from now, which every wait it makes keeps, and
    its client, whose turn its forward passes wait for in the batcher."""
    cfg = current_app.config["EPIFORMER"]
    if cfg.api_token and not hmac.compare_digest(request.headers.get("Authorization", ""), f"Bearer {cfg.api_token}"):
        raise ApiError(401, "this server needs an API token: send the header Authorization: Bearer TOKEN",
                       headers={"WWW-Authenticate": "Bearer"})
    client = request.remote_addr or ""
    refused = current_app.config["PREDICTION_SLOTS"].acquire(client)
    if refused:
        raise ApiError(429, refused, headers={"Retry-After": "1"})
    g.prediction_client = client
    g.prediction_scope = (start_deadline(cfg.request_timeout_s), CLIENT.set(client))


@predictions.teardown_request
def release(_error: BaseException | None) -> None:
    if "prediction_client" in g:
        current_app.config["PREDICTION_SLOTS"].release(g.pop("prediction_client"))
        deadline, client = g.pop("prediction_scope")
        end_deadline(deadline)
        CLIENT.reset(client)


def predictor() -> ServerPredictor:
    found = current_app.config.get("PREDICTOR")
    if found is None:
        raise ApiError(503, "this server has no model set: start it with -m MODEL (EPIFORMER_MODELS) for predictions")
    return found


def json_body() -> dict:
    limit = current_app.config["MAX_CONTENT_LENGTH"]
    try:
        data = request.get_data(cache=True)
    except HTTPException:
        raise
    except Exception:   # the server's reader refused the framing (a bad chunk size) or the client left
        raise ApiError(400, "the request body could not be read: its chunked framing is malformed or it was "
                            "cut short") from None
    if request.content_length is None and len(data) >= limit:
        raise RequestEntityTooLarge()   # a chunked body, cut at the limit by the reader
    try:
        body = request.get_json(silent=True)
    except RecursionError:
        raise ApiError(400, "the request body is JSON nested too deeply") from None
    if body is None and request.get_data():
        raise ApiError(400, "the request body must be a JSON object (Content-Type: application/json), and this is "
                            "not JSON that can be read (or holds a number of over 4,300 digits)")
    if not isinstance(body, dict):
        raise ApiError(400, "the request body must be a JSON object (Content-Type: application/json)")
    return body


def _int_field(body: dict, name: str, default: int, lo: int, hi: int) -> int:
    value = body.get(name, default)
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise ApiError(400, f"{name} must be an integer from {lo} to {hi}")
    return value


def _variant(item: Any, max_indel: int) -> Variant:
    if isinstance(item, str):
        return parse_variant(item, max_indel)
    if not isinstance(item, dict):
        raise VariantError("expected an object {chrom, pos, ref, alt} or a string chrom:pos:ref:alt")
    missing = [k for k in ("chrom", "pos", "ref", "alt") if k not in item]
    if missing:
        raise VariantError(f"missing {', '.join(missing)}")
    return make_variant(item["chrom"], item["pos"], item["ref"], item["alt"], max_indel)


def _echo(item: Any) -> str | dict | None:
    """A variant as the client sent it, for its problem: a string or a flat object (nothing nested
    or long is sent back)."""
    if isinstance(item, str):
        return item[:200]
    if isinstance(item, dict) and all(isinstance(v, (str, int, float, bool, type(None))) for v in item.values()):
        return {str(k)[:50]: v[:200] if isinstance(v, str) else v for k, v in list(item.items())[:10]}
    return None


def _genome_region(model: ServerPredictor, region: str) -> tuple[str, int, int]:
    """A region string (chr:start-end, 1-based) checked against the genome -> 0-based half-open, or a 400."""
    try:
        chrom, start, end = parse_region(region)
        if chrom not in model.genome.chrom_sizes:
            raise VariantError(f"chromosome {chrom!r} is not in the genome")
        if end > model.genome.chrom_sizes[chrom]:
            raise VariantError(f"region end {end:,} is past the end of {chrom} ({model.genome.chrom_sizes[chrom]:,} bp)")
    except (GenomeError, VariantError) as err:
        raise ApiError(400, f"region: {err}") from None
    return chrom, start, end


@predictions.post("/api/variants")
def variants() -> Response:
    """Score one or many variants: per target Σref, Σalt, SAD, log2FC, the bin of largest change.
    A REF that differs from the genome follows ``on_mismatch`` (skip, swap or score, as
    score-variants' --on-mismatch); each result's ``flag`` says ok, swapped or ref_mismatch."""
    body = json_body()
    items = body.get("variants", [body] if "chrom" in body else None)
    if not isinstance(items, list) or not items:
        raise ApiError(400, "give variants: a list of {chrom, pos, ref, alt} (pos 1-based) or chrom:pos:ref:alt")
    limit = current_app.config["EPIFORMER"].max_variants
    if len(items) > limit:
        raise ApiError(400, f"{len(items)} variants in one request; at most {limit}")
    model = predictor()
    scoring = model.scorer.scoring
    score_bp = _int_field(body, "score_bp", scoring.score_bp, 0, model.n_bins * model.bin_size)
    with_tracks = body.get("tracks", False)
    if not isinstance(with_tracks, bool):
        raise ApiError(400, "tracks must be true or false")
    on_mismatch = body.get("on_mismatch", scoring.on_mismatch)
    if on_mismatch not in MISMATCH_RULES:
        raise ApiError(400, f"on_mismatch must be one of {', '.join(MISMATCH_RULES)}")
    valid, problems = [], Problems()
    for index, item in enumerate(items):
        try:
            variant, flag = model.resolve(_variant(item, scoring.max_indel), on_mismatch)
            valid.append((index, variant, flag))
        except VariantError as err:
            problems.add({"index": index, "variant": _echo(item), "message": str(err)})
    if not valid:
        raise ApiError(422, "no variant could be scored", problems)
    budget = current_app.config["EPIFORMER"].max_windows_per_request
    needed = model.scorer.windows_needed([v for _, v, _ in valid])
    if needed > budget:
        raise ApiError(422, f"these variants need {needed} model windows (a reference window per 128 bp bin and one "
                            f"per distinct variant, times {len(model.engine.shifts)} shift(s)); this server runs at "
                            f"most {budget} per request (max_windows_per_request): send fewer, or variants closer "
                            "together", problems)
    results = model.score_variants([v for _, v, _ in valid], score_bp, with_tracks)
    for (index, _, flag), result in zip(valid, results):
        result["index"], result["flag"] = index, flag
    answer = {"targets": model.names, "score_bp": score_bp, "results": results, **problems.fields(),
              "settings": model.settings(score_bp)}
    missing = model.scorer.percentiles_missing(score_bp)
    if missing:
        answer["percentiles_missing"] = missing
    return jsonify(answer)


@predictions.post("/api/ism")
def ism() -> Response:
    """Saturation mutagenesis of a region of at most 1 kb: the SAD of every substitution per target."""
    body = json_body()
    model = predictor()
    region = body.get("region")
    if not isinstance(region, str):
        raise ApiError(400, f"give region (chr:start-end, 1-based, at most {MAX_ISM_BP:,} bp)")
    chrom, start, end = _genome_region(model, region)
    limit = min(MAX_ISM_BP, model.n_bins * model.bin_size)
    if end - start > limit:
        raise ApiError(400, f"region: {end - start:,} bp; /api/ism takes at most {limit:,}")
    targets = body.get("targets", model.names)
    if not isinstance(targets, list) or not targets or not all(isinstance(t, str) for t in targets):
        raise ApiError(400, "targets must be a non-empty list of target names")
    unknown = [t for t in targets if t not in model.names]
    if unknown:
        raise ApiError(400, f"unknown target(s) {', '.join(map(repr, unknown[:5]))}; the model predicts "
                            f"{', '.join(model.names)}")
    score_bp = _int_field(body, "score_bp", model.scorer.scoring.score_bp, 0, model.n_bins * model.bin_size)
    return jsonify(model.mutagenesis(chrom, start, end, score_bp, list(dict.fromkeys(targets))))


@predictions.post("/api/predict")
def predict() -> Response:
    """Predicted tracks for a region with edits (reference and edited), or for a raw sequence."""
    body = json_body()
    model = predictor()
    if "sequence" in body and "region" in body:
        raise ApiError(400, "give region (with optional edits) or sequence, not both")
    if "sequence" in body:
        sequence, conservation = body["sequence"], body.get("conservation")
        if not isinstance(sequence, str) or not sequence or any(c not in "ACGTNacgtn" for c in sequence):
            raise ApiError(400, "sequence must be a non-empty string of A, C, G, T, N")
        if conservation is not None and (not isinstance(conservation, list) or not all(
                isinstance(v, (int, float)) and not isinstance(v, bool) and -MAX_CONSERVATION <= v <= MAX_CONSERVATION
                for v in conservation)):
            raise ApiError(400, f"conservation must be a list of numbers from -{MAX_CONSERVATION:g} to "
                                f"{MAX_CONSERVATION:g}, one per base")
        try:
            return jsonify(model.predict_sequence(sequence, conservation))
        except VariantError as err:
            raise ApiError(400, str(err)) from None
    region = body.get("region")
    if not isinstance(region, str):
        raise ApiError(400, "give region (chr:start-end, 1-based) with optional edits, or sequence")
    edits_in = body.get("edits", [])
    if not isinstance(edits_in, list):
        raise ApiError(400, "edits must be a list of {pos, ref, alt} (chrom taken from the region)")
    limit = current_app.config["EPIFORMER"].max_edits
    if len(edits_in) > limit:
        raise ApiError(400, f"{len(edits_in):,} edits in one request; at most {limit:,} (max_edits)")
    chrom, start, end = _genome_region(model, region)
    edits, problems = [], Problems()
    for index, item in enumerate(edits_in):
        try:
            edit = item if isinstance(item, str) else {"chrom": chrom, **item} if isinstance(item, dict) else item
            edits.append(_variant(edit, max_indel=model.seq_len // 4))
        except VariantError as err:
            problems.add({"index": index, "message": str(err)})
    if problems.count:
        raise ApiError(400, "some edits cannot be applied", problems)
    try:
        return jsonify(model.predict_region(chrom, start, end, edits))
    except VariantError as err:
        raise ApiError(422, str(err)) from None


@predictions.get("/api/sequence")
def sequence() -> Response:
    """The reference bases of a region (at most 10 kb), for building variants and edits."""
    model = predictor()
    try:
        chrom, start, end = parse_region(request.args.get("region", ""))
        if end - start > 10_000:
            raise VariantError("at most 10,000 bp")
        with model.genome_lock:
            model.genome.check_interval(chrom, start, end)
            if end > model.genome.chrom_sizes[chrom]:
                raise VariantError(f"the region runs past the end of {chrom}")
            bases = model.genome.sequence(chrom, start, end).upper()
    except (GenomeError, VariantError) as err:
        raise ApiError(400, f"region: {err}") from None
    return jsonify({"chrom": chrom, "start": start, "end": end, "sequence": bases})


@predictions.get("/api/variant-track")
def variant_track() -> Response:
    """One variant's ref, alt or diff track for one target, as bedGraph (IGV, UCSC custom track)."""
    model = predictor()
    text, kind = request.args.get("variant", ""), request.args.get("kind", "diff")
    target = request.args.get("target", model.names[0])
    if kind not in ("ref", "alt", "diff"):
        raise ApiError(400, "kind must be ref, alt or diff")
    if target not in model.names:
        raise ApiError(400, f"target {target!r} is not one of {', '.join(model.names)}")
    try:
        variant = parse_variant(text, model.scorer.scoring.max_indel)
        model.check(variant)
    except VariantError as err:
        raise ApiError(400, f"variant: {err}") from None
    score_bp = model.scorer.scoring.score_bp
    result = model.score_variants([variant], score_bp, True)[0]
    values = result["tracks"][kind][target]
    start, size = result["window"]["start"], model.genome.chrom_sizes[variant.chrom]
    bins = ((start + k * model.bin_size, min(start + (k + 1) * model.bin_size, size), value)
            for k, value in enumerate(values))
    text = bedgraph_text(f'name="{target} {kind} {variant}" description="Epiformer {kind} prediction, {target}, '
                         f'{variant}" visibility=full autoScale=on',
                         ((variant.chrom, lo, hi, value) for lo, hi, value in bins if 0 <= lo < hi))
    response = Response(settings_lines(model.settings(score_bp)) + text, mimetype="text/plain")
    response.headers["Content-Disposition"] = f'inline; filename="{target}.{kind}.bedGraph"'
    return response
