"""The prediction API: variant scores, edited regions, raw sequences, batching, the reference
cache, timeouts and clear 4xx answers to bad requests."""
from __future__ import annotations

import io
import json
import threading
import time
from typing import Callable

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from epiformer.genome.encoding import encode_codes
from epiformer.genome.reader import Genome
from epiformer.inference.engine import Engine
from epiformer.inference.settings import ScoringSettings
from epiformer.model.model_set import load_model_set
from epiformer.server.prediction_api import MAX_PROBLEMS, ClientSlots
from epiformer.server.server_config import ServerConfig, ServerConfigError
from epiformer.variants.alleles import VariantError, apply_edits, make_variant, parse_variant
from epiformer.variants.effects import SCORE_FIELDS
from epiformer.variants.score_job import score_chunk
from epiformer.variants.scorer import VariantScorer
from epiformer.variants.vcf import VariantRecord

from .helpers import make_model_app


@pytest.fixture
def model_app(precomputed, tmp_path):
    app = make_model_app(precomputed, tmp_path / "hub", max_variants=5, max_body_bytes=20_000)
    yield app
    app.config["PREDICTOR"].close()


@pytest.fixture
def api(model_app):
    return model_app.test_client()


@pytest.fixture
def genome(demo_data):
    with Genome(demo_data / "genome.fa", demo_data / "conservation.bw") as g:
        yield g


FLOODED_QUERY_S = 3.0     # a single-variant query's latency while another address floods (README: Limits)


def around_each_forward(predictor, before: Callable[[], None] = lambda: None,
                        after: Callable[[torch.Tensor], torch.Tensor] = lambda y: y) -> None:
    """Run ``before`` ahead of every forward pass of ``predictor``'s models (whole windows and
    incremental alternates alike: both end in each model's ``from_tower``) and ``after`` on its
    output."""
    for model in getattr(predictor.engine.model, "members", [predictor.engine.model]):
        def head(features, original=model.from_tower):
            before()
            return after(original(features))
        model.from_tower = head


def slow_down(predictor, seconds: float) -> None:
    """Make every forward pass of ``predictor`` take ``seconds`` longer."""
    around_each_forward(predictor, before=lambda: time.sleep(seconds))


def hold(predictor) -> tuple[threading.Event, threading.Event]:
    """Make every forward pass of ``predictor`` wait for the second event; the first is set when
    one has begun (its request then holds its prediction slot)."""
    started, release = threading.Event(), threading.Event()

    def held() -> None:
        started.set()
        release.wait(30)

    around_each_forward(predictor, before=held)
    return started, release


def snv(genome, chrom="chr1", pos=200_001, alt=None):
    """An SNV at ``pos`` (1-based) that agrees with the reference (the demo genome there is not N)."""
    ref = genome.sequence(chrom, pos - 1, pos).upper()
    assert ref in "ACGT", f"{chrom}:{pos} is {ref}"
    return {"chrom": chrom, "pos": pos, "ref": ref, "alt": alt or ("A" if ref != "A" else "C")}


def test_snv_scores_match_a_direct_computation(api, model_app, genome, precomputed):
    variant = snv(genome)
    body = api.post("/api/variants", json={"variants": [variant], "tracks": True}).json
    result = body["results"][0]
    assert body["problems"] == [] and result["index"] == 0
    engine = Engine(load_model_set([str(precomputed.parent / "model.pth.tar")]), device="cpu")
    seq_len, bin_size = engine.config.seq_len, engine.config.bin_size
    share = engine.default_share_bins()
    start = engine.variant_window(variant["pos"] - 1, share)
    centre = start + seq_len // 2
    assert start % bin_size == 0 and abs(variant["pos"] - 1 - centre) < (share + 1) * bin_size
    v = make_variant(**variant)
    ref = engine.predict(genome.encode("chr1", start, start + seq_len)[None])[0]
    codes, cons = apply_edits(genome, "chr1", start, seq_len, [v])
    alt = engine.predict(encode_codes(codes, cons)[None])[0]
    assert result["window"]["start"] == start + engine.output_offset
    lo, hi = result["window"]["score_bins"]
    for i, name in enumerate(body["targets"]):
        scores = result["scores"][name]
        assert scores["ref_sum"] == pytest.approx(ref[i, lo:hi].sum(), rel=1e-4)
        assert scores["alt_sum"] == pytest.approx(alt[i, lo:hi].sum(), rel=1e-4)
        assert scores["sad"] == pytest.approx(scores["alt_sum"] - scores["ref_sum"], abs=1e-6)
        assert scores["log2fc"] == pytest.approx(np.log2((scores["alt_sum"] + 1) / (scores["ref_sum"] + 1)))
        diff = np.asarray(result["tracks"]["diff"][name])
        np.testing.assert_allclose(diff, np.round(alt[i] - ref[i], 5), atol=2e-5)
        change = np.abs(alt[i, lo:hi] - ref[i, lo:hi])
        assert abs(scores["max_diff"]) == pytest.approx(change.max(), abs=1e-6)
        top = (scores["max_diff_bin"][0] - result["window"]["start"]) // bin_size
        assert lo <= top < hi and change[top - lo] == pytest.approx(change.max(), abs=1e-6)


def test_variants_of_a_window_share_its_reference_and_regions_are_cached(api, model_app, genome):
    """Two variants in one bin: one reference runs, with both alternates; a region's reference
    prediction is cached for the next request."""
    predictor = model_app.config["PREDICTOR"]
    response = api.post("/api/variants", json={"variants": [snv(genome, pos=100_002), snv(genome, pos=100_001)]})
    assert response.status_code == 200, response.json
    assert (predictor.batcher.references, predictor.batcher.alternates) == (1, 2)
    region = {"region": "chr1:100,001-101,000"}
    assert api.post("/api/predict", json=region).status_code == 200
    windows = predictor.batcher.windows
    assert api.post("/api/predict", json=region).status_code == 200
    assert predictor.batcher.windows == windows and predictor.cache.hits == 1


@pytest.mark.parametrize("cache_windows", [512, 0])
def test_a_window_met_again_runs_only_its_new_alternates(precomputed, tmp_path, genome, cache_windows):
    """With the cache, a later request for another variant of a window reuses the window's
    reference state (its prediction and tower outputs): no reference runs again, and the scores
    are those of a cold start; a variant asked again runs nothing. Without it, every request
    runs its reference and its alternate."""
    app = make_model_app(precomputed, tmp_path / "hub", cache_windows=cache_windows)
    predictor = app.config["PREDICTOR"]
    cold = make_model_app(precomputed, tmp_path / "hub", cache_windows=0).test_client()
    client = app.test_client()
    for pos in (100_001, 100_002, 100_130):
        body = {"variants": [snv(genome, pos=pos)]}
        response = client.post("/api/variants", json=body)
        assert response.status_code == 200, response.json
        expected = cold.post("/api/variants", json=body).json["results"][0]["scores"]
        for name, scores in response.json["results"][0]["scores"].items():
            for field in ("ref_sum", "alt_sum", "sad"):
                assert scores[field] == pytest.approx(expected[name][field], rel=1e-5, abs=1e-6)
    assert predictor.batcher.alternates == 3
    assert predictor.batcher.references == (1 if cache_windows else 3)
    again = client.post("/api/variants", json={"variants": [snv(genome, pos=100_001)], "tracks": True})
    assert again.status_code == 200, again.json
    if cache_windows:       # a variant asked again (the page asks its tracks target by target) runs nothing
        assert (predictor.batcher.references, predictor.batcher.alternates) == (1, 3)
    else:
        assert (predictor.batcher.references, predictor.batcher.alternates) == (4, 4)


@pytest.mark.parametrize("spacing", [5_000, 1])
def test_concurrent_requests_share_batches(precomputed, tmp_path, genome, spacing):
    """Six concurrent queries: their windows run in shared batches; when they fall in one bin, the
    requests batched together run its reference once. (All six come from one address: the limits
    are raised so none gets 429.)"""
    app = make_model_app(precomputed, tmp_path / "hub", max_delay_ms=300, max_batch=16, cache_windows=0,
                         threads=16, max_predictions_per_client=6)
    predictor = app.config["PREDICTOR"]
    statuses = []

    def query(pos):
        statuses.append(app.test_client().post("/api/variants", json={"variants": [snv(genome, pos=pos)]}).status_code)

    start = 150_017
    threads = [threading.Thread(target=query, args=(start + spacing * i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    predictor.close()
    assert statuses == [200] * 6
    assert predictor.batcher.alternates == 6
    assert predictor.batcher.batches < 6, "windows of concurrent requests ran together"
    if spacing == 1:
        assert predictor.batcher.references < 6, "a bin's reference runs once for the requests batched together"
    else:
        assert predictor.batcher.references == 6


def test_indels_mismatches_and_partial_failures(api, genome):
    chrom, pos = "chr2", 150_001
    two = genome.sequence(chrom, pos - 1, pos + 1).upper()
    wrong = "A" if two[0] != "A" else "C"
    body = api.post("/api/variants", json={"variants": [
        {"chrom": chrom, "pos": pos, "ref": two, "alt": two[0]},            # deletion
        f"{chrom}:{pos}:{two[0]}:{two[0]}GGT",                              # insertion
        {"chrom": chrom, "pos": pos, "ref": wrong, "alt": "G"},             # reference mismatch
        {"chrom": "chrZ", "pos": 5, "ref": "A", "alt": "G"},
        {"chrom": chrom, "pos": 10**9, "ref": "A", "alt": "G"}]}).json
    assert [r["index"] for r in body["results"]] == [0, 1]
    messages = {p["index"]: p["message"] for p in body["problems"]}
    assert "reference mismatch: the genome has" in messages[2]
    assert "chromosome 'chrZ' is not in the genome" in messages[3]
    assert "past the end of chr2" in messages[4]
    inserted = api.post("/api/variants", json={"variants": [f"{chrom}:{pos}:-:TTAGGG"]})
    assert inserted.status_code == 200 and inserted.json["results"][0]["variant"]["ref"] == ""
    bad = api.post("/api/variants", json={"variants": [{"chrom": "1", "pos": 5, "ref": "A", "alt": "G"}]})
    assert bad.status_code == 422 and "the genome calls it 'chr1'" in bad.json["error"]["problems"][0]["message"]


@pytest.mark.parametrize("rule", ["swap", "score"])
def test_mismatch_rules_score_as_score_variants_does(api, model_app, genome, rule):
    """on_mismatch swap and score resolve a REF that differs from the genome as score-variants'
    --on-mismatch does, with the same flag, alleles and scores; skip (the default) names it."""
    chrom, pos = "chr2", 150_001
    found = genome.sequence(chrom, pos - 1, pos).upper()
    other = "A" if found != "A" else "C"
    given = [{"chrom": chrom, "pos": pos, "ref": other, "alt": found},                  # REF and ALT traded
             {"chrom": chrom, "pos": pos + 40, "ref": "G" if genome.sequence(chrom, pos + 39, pos + 40).upper() != "G"
              else "T", "alt": "-"}]                                                   # REF wrong, a deletion
    skipped = api.post("/api/variants", json={"variants": given})
    assert skipped.status_code == 422 and all("reference mismatch" in p["message"]
                                              for p in skipped.json["error"]["problems"])
    body = api.post("/api/variants", json={"variants": given, "on_mismatch": rule}).json
    model = model_app.config["PREDICTOR"]
    local = VariantScorer(model.predictor, ScoringSettings(on_mismatch=rule), cache_windows=0)
    expected = score_chunk(local, [VariantRecord(k + 1, str(k), make_variant(**v)) for k, v in enumerate(given)])
    assert [r["index"] + 1 for r in body["results"]] == expected["line"].tolist()
    assert [p["index"] + 1 for p in body["problems"]] == expected["skipped_line"].tolist()
    assert [p["message"] for p in body["problems"]] == expected["skipped_reason"].tolist()
    for k, result in enumerate(body["results"]):
        assert result["flag"] == expected["flag"][k]
        assert (result["variant"]["ref"], result["variant"]["alt"]) == (expected["ref"][k], expected["alt"][k])
        for t, name in enumerate(body["targets"]):
            assert result["scores"][name]["sad"] == pytest.approx(
                float(expected["scores"][k, t, SCORE_FIELDS.index("sad")]), rel=1e-4, abs=1e-6)
    assert body["results"] and {r["flag"] for r in body["results"]} == {"swapped" if rule == "swap" else "ref_mismatch"}


@pytest.mark.parametrize("payload, status, message", [
    (b"{not json", 400, "must be a JSON object"),
    ([1, 2], 400, "must be a JSON object"),
    ({"variants": []}, 400, "give variants"),
    ({"variants": ["chr1:5:A:G"] * 6}, 400, "at most 5"),
    ({"variants": ["chr1:5:A:<DEL>"]}, 422, "symbolic"),
    ({"variants": [{"chrom": "chr1", "pos": "x", "ref": "A", "alt": "G"}]}, 422, "positive integer"),
    ({"variants": [{"chrom": "chr1", "pos": 5}]}, 422, "missing ref, alt"),
    ({"variants": ["chr1:5:A:G"], "score_bp": -1}, 400, "score_bp must be"),
    ({"variants": ["chr1:5:A:G"], "tracks": "yes"}, 400, "tracks must be"),
    ({"variants": ["chr1:5:A:G"], "on_mismatch": "keep"}, 400, "on_mismatch must be one of skip, swap, score"),
    ({"variants": ["x" * 30_000]}, 413, "limit of 20,000 bytes (max_body_bytes)"),
])
def test_bad_variant_requests_are_4xx(api, payload, status, message):
    if isinstance(payload, bytes):
        response = api.post("/api/variants", data=payload, content_type="application/json")
    else:
        response = api.post("/api/variants", json=payload)
    assert response.status_code == status
    assert message in str(response.json["error"])


@pytest.mark.parametrize("size, status", [(30_000, 413), (200, 400)])
def test_a_chunked_body_over_the_limit_is_413(api, size, status):
    """A chunked body has no Content-Length: the reader stops at the limit, and the answer says so."""
    response = api.post("/api/variants", input_stream=io.BytesIO(b"[" * size), content_type="application/json",
                        headers={"Transfer-Encoding": "chunked"}, environ_overrides={"wsgi.input_terminated": True})
    assert response.status_code == status, response.json
    assert ("max_body_bytes" in response.json["error"]["message"]) == (status == 413)


def test_predict_region_with_edits(api, genome):
    chrom, pos = "chr3", 60_001
    base = genome.sequence(chrom, pos - 1, pos).upper()
    region = f"{chrom}:{pos - 1000}-{pos + 1000}"
    plain = api.post("/api/predict", json={"region": region}).json
    tracks = plain["tracks"]
    assert plain["chrom"] == chrom and plain["end"] - plain["start"] == 48 * 128
    assert tracks["reference"] == tracks["edited"]
    edited = api.post("/api/predict", json={"region": region, "edits": [
        {"pos": pos, "ref": base, "alt": "T" if base != "T" else "G"}, f"{chrom}:{pos + 50}:"
        f"{genome.sequence(chrom, pos + 49, pos + 55).upper()}:-"]}).json
    assert edited["start"] == plain["start"] and edited["tracks"]["reference"] == tracks["reference"]
    assert edited["tracks"]["edited"] != tracks["reference"]
    for payload, status, message in [
        ({"region": region, "edits": [{"pos": pos + 5000, "ref": "A", "alt": "G"}]}, 422, "outside the region"),
        ({"region": f"{chrom}:1-100000"}, 422, "does not fit in one window's output on the 128 bp grid"),
        ({"region": "chrQ:1-100"}, 400, "not in the genome"),
        ({"region": "chr3:5-1"}, 400, "region"),
        ({"region": region, "edits": [{"pos": pos, "ref": "N" * 3000, "alt": "A"}]}, 400, "cannot be applied"),
        ({"sequence": "ACGTX"}, 400, "A, C, G, T, N"),
        ({"sequence": "A" * 8193}, 400, "at most 8,192"),
        ({"sequence": "ACGT", "conservation": [1, 2]}, 400, "2 values for 4 bases"),
        ({"nothing": 1}, 400, "give region"),
    ]:
        response = api.post("/api/predict", json=payload)
        assert response.status_code == status, payload
        assert message in str(response.json["error"]), payload


def test_predict_raw_sequence(api, genome):
    seq = genome.sequence("chr1", 120_000, 122_000)
    out = api.post("/api/predict", json={"sequence": seq}).json
    assert out["chrom"] is None and len(out["tracks"]["sequence"]["HIP"]) == 48
    assert out["start"] == 1024 - (8192 - 2000) // 2
    with_cons = api.post("/api/predict", json={"sequence": seq, "conservation": [2.0] * len(seq)}).json
    assert with_cons["tracks"] != out["tracks"]
    both = api.post("/api/predict", json={"sequence": seq, "region": "chr1:120,001-122,000"})
    assert both.status_code == 400 and "not both" in both.json["error"]["message"]


def test_variant_track_is_bedgraph_of_the_diff(api, genome):
    variant = snv(genome, pos=230_001)
    text = f"{variant['chrom']}:{variant['pos']}:{variant['ref']}:{variant['alt']}"
    scored = api.post("/api/variants", json={"variants": [text], "tracks": True}).json["results"][0]
    response = api.get(f"/api/variant-track?variant={text}&target=MGC&kind=diff")
    lines = response.data.decode().splitlines()
    assert response.status_code == 200 and lines[1].startswith("track type=bedGraph")
    assert json.loads(lines[0].removeprefix("#epiformer_settings="))["score_bp"] == 1024
    rows = [line.split("\t") for line in lines[2:]]
    assert int(rows[0][1]) == scored["window"]["start"] and all(int(r[2]) - int(r[1]) == 128 for r in rows)
    np.testing.assert_allclose([float(r[3]) for r in rows], scored["tracks"]["diff"]["MGC"], atol=1e-4)
    assert api.get(f"/api/variant-track?variant={text}&target=NOPE").status_code == 400
    assert api.get(f"/api/variant-track?variant={text}&kind=sum").status_code == 400
    assert api.get("/api/variant-track?variant=chr1:5").status_code == 400


def test_timeouts_and_servers_without_models(api, model_app, client, genome):
    predictor = model_app.config["PREDICTOR"]
    slow_down(predictor, 0.5)
    model_app.config["EPIFORMER"].request_timeout_s = 0.05
    predictor.cache.capacity = 0
    response = api.post("/api/variants", json={"variants": [snv(genome, pos=250_001)]})
    assert response.status_code == 504 and "did not answer within" in response.json["error"]["message"]
    no_model = client.post("/api/variants", json={"variants": ["chr1:5:A:G"]})
    assert no_model.status_code == 503 and "no model set" in no_model.json["error"]["message"]


@pytest.mark.parametrize("values", ["[NaN, 0, 0, 0]", "[Infinity, 0, 0, 0]", "[1e308, 0, 0, 0]", "[0, 0, 0, -21]"])
def test_conservation_must_be_finite_and_in_range(api, values):
    """Python's JSON reader takes NaN and Infinity; the model would answer NaN (which is not JSON)."""
    response = api.post("/api/predict", data=f'{{"sequence": "ACGT", "conservation": {values}}}',
                        content_type="application/json")
    assert response.status_code == 400 and "from -20 to 20" in response.json["error"]["message"]


def test_non_finite_model_output_is_422_not_nan(api, model_app, genome):
    predictor = model_app.config["PREDICTOR"]
    around_each_forward(predictor, after=lambda y: y * np.inf)
    predictor.cache.capacity = 0
    for response in (api.post("/api/variants", json={"variants": [snv(genome, pos=260_001)]}),
                     api.post("/api/predict", json={"sequence": "ACGT"})):
        assert response.status_code == 422 and "not finite" in response.json["error"]["message"]


def test_variant_strings():
    assert str(parse_variant("chr1:1,000:a:g")) == "chr1:1000:A:G"
    assert str(parse_variant("chr1 1000 AT -")) == "chr1:1000:AT:"
    with pytest.raises(VariantError, match="the same"):
        parse_variant("chr1:5:A:A")
    with pytest.raises(VariantError, match="expected chrom:pos:ref:alt"):
        parse_variant("chr1:5:A")


def test_sequence_of_a_region(api, genome):
    body = api.get("/api/sequence?region=chr1:150,001-150,020").json
    assert body == {"chrom": "chr1", "start": 150_000, "end": 150_020,
                    "sequence": genome.sequence("chr1", 150_000, 150_020).upper()}
    for bad in ("chr1:1-20000", "chrQ:1-10", "nonsense", "chr1:285,990-286,010"):
        response = api.get(f"/api/sequence?region={bad}")
        assert response.status_code == 400 and "region" in response.json["error"]["message"], bad


def test_api_token_and_concurrency_limit(precomputed, tmp_path, genome):
    app = make_model_app(precomputed, tmp_path / "hub", api_token="s3cret", max_concurrent_predictions=1,
                         cache_windows=0)
    client = app.test_client()
    query = {"variants": [snv(genome, pos=120_001)]}
    denied = client.post("/api/variants", json=query)
    assert denied.status_code == 401 and denied.headers["WWW-Authenticate"] == "Bearer"
    assert client.post("/api/variants", json=query, headers={"Authorization": "Bearer wrong"}).status_code == 401
    auth = {"Authorization": "Bearer s3cret"}
    assert client.post("/api/variants", json=query, headers=auth).status_code == 200
    assert client.get("/api/tracks").status_code == 200, "file and track routes stay open"
    predictor = app.config["PREDICTOR"]
    started, release = hold(predictor)
    first = threading.Thread(target=lambda: app.test_client().post("/api/variants", json=query, headers=auth))
    first.start()
    assert started.wait(30)
    busy = client.post("/api/variants", json=query, headers=auth)
    release.set()
    first.join()
    assert busy.status_code == 429 and busy.headers["Retry-After"] == "1"
    assert client.post("/api/variants", json=query, headers=auth).status_code == 200, "the slot is given back"
    predictor.close()


def test_prediction_limits_stay_below_the_threads():
    """By default a worker runs threads - 2 prediction requests, half of them for one client; a
    limit that would let predictions take every thread is refused, naming the setting."""
    assert ServerConfig().prediction_limits() == (6, 3)
    assert ServerConfig(threads=4).prediction_limits() == (2, 1)
    assert ServerConfig(threads=16, max_concurrent_predictions=12, max_predictions_per_client=12).prediction_limits() == (12, 12)
    for settings, named in [({"max_concurrent_predictions": 8}, "max_concurrent_predictions must be from 1 to threads - 1 = 7"),
                            ({"max_predictions_per_client": 7}, "max_predictions_per_client must be from 1 to max_concurrent_predictions = 6"),
                            ({"threads": 1}, "threads must be 2 or more")]:
        with pytest.raises(ServerConfigError, match=named):
            ServerConfig(**settings).prediction_limits()


def test_one_client_cannot_take_every_prediction_slot(precomputed, tmp_path, genome):
    """Behind one proxy (proxy_hops 1) the client is X-Forwarded-For's address."""
    app = make_model_app(precomputed, tmp_path / "hub", proxy_hops=1, max_concurrent_predictions=4,
                    max_predictions_per_client=1, cache_windows=0)
    predictor = app.config["PREDICTOR"]
    started, release = hold(predictor)
    query = {"variants": [snv(genome, pos=130_001)]}
    greedy, other = {"X-Forwarded-For": "10.0.0.1"}, {"X-Forwarded-For": "10.0.0.2"}
    answers = {}
    first = threading.Thread(target=lambda: answers.setdefault(
        "first", app.test_client().post("/api/variants", json=query, headers=greedy)))
    first.start()
    assert started.wait(30)
    again = app.test_client().post("/api/variants", json=query, headers=greedy)
    assert again.status_code == 429 and "this client already has 1" in again.json["error"]["message"]
    assert again.headers["Retry-After"] == "1"
    release.set()
    assert app.test_client().post("/api/variants", json=query, headers=other).status_code == 200
    first.join()
    assert answers["first"].status_code == 200
    assert app.config["PREDICTION_SLOTS"].running == {}, "every slot is given back"
    predictor.close()


def test_duplicates_run_once_and_a_request_has_a_window_budget(precomputed, tmp_path, genome):
    """100 copies of one variant cost what one does; a request needing more model windows than
    max_windows_per_request is a 422 naming the setting."""
    app = make_model_app(precomputed, tmp_path / "hub", max_windows_per_request=6, cache_windows=0)
    predictor = app.config["PREDICTOR"]
    client = app.test_client()
    try:
        one = snv(genome, pos=170_001)
        response = client.post("/api/variants", json={"variants": [one] * 100})
        assert response.status_code == 200 and len(response.json["results"]) == 100
        assert (predictor.batcher.references, predictor.batcher.alternates) == (1, 1), "one of each for all 100"
        assert {json.dumps(r["scores"]) for r in response.json["results"]} == {json.dumps(response.json["results"][0]["scores"])}
        spread = [snv(genome, pos=100_001 + 17_000 * k) for k in range(4)]
        refused = client.post("/api/variants", json={"variants": spread})
        assert refused.status_code == 422 and "need 8 model windows" in refused.json["error"]["message"]
        assert "max_windows_per_request" in refused.json["error"]["message"]
        assert client.post("/api/variants", json={"variants": spread[:3]}).status_code == 200
    finally:
        predictor.close()


def test_ism_answers_every_substitution_as_epiformer_ism_does(api, model_app, genome):
    from epiformer.variants.mutagenesis import saturation_mutagenesis

    body = api.post("/api/ism", json={"region": "chr1:150,001-150,012", "targets": ["MGC", "HIP"]}).json
    assert body["targets"] == ["MGC", "HIP"] and body["bases"] == ["A", "C", "G", "T"]
    assert body["region"] == {"chrom": "chr1", "start": 150_001, "end": 150_012}
    reference = genome.sequence("chr1", 150_000, 150_012).upper()
    assert body["reference"] == reference and body["substitutions"] == 3 * 12
    model = model_app.config["PREDICTOR"]
    expected = saturation_mutagenesis(model.scorer, "chr1", 150_000, 150_012)   # the CLI's path, the same window
    for target in ("MGC", "HIP"):
        effects = np.array(body["effects"][target], dtype=float)
        assert effects.shape == (12, 4)
        assert all(effects[k, "ACGT".index(base)] == 0.0 for k, base in enumerate(reference))
        np.testing.assert_allclose(effects, expected.effects[model.names.index(target)], rtol=1e-3, atol=1e-6)
    assert body["settings"]["score_bp"] == 1024
    everything = api.post("/api/ism", json={"region": "chr1:150001-150004", "score_bp": 0}).json
    assert everything["targets"] == model.names and everything["score_bp"] == 0


@pytest.mark.parametrize("payload, message", [
    ({}, "give region"),
    ({"region": 7}, "give region"),
    ({"region": "chr1:150001-151001"}, "1,001 bp; /api/ism takes at most 1,000"),
    ({"region": "chrZ:1-10"}, "chromosome 'chrZ' is not in the genome"),
    ({"region": "chr1:10-5"}, "region:"),
    ({"region": "chr1:1-10", "targets": "MGC"}, "targets must be a non-empty list"),
    ({"region": "chr1:1-10", "targets": []}, "targets must be a non-empty list"),
    ({"region": "chr1:1-10", "targets": ["MGC", "nope"]}, "unknown target(s) 'nope'"),
    ({"region": "chr1:1-10", "score_bp": -1}, "score_bp"),
])
def test_bad_ism_requests_are_400(api, payload, message):
    answer = api.post("/api/ism", json=payload)
    assert answer.status_code == 400 and message in answer.json["error"]["message"], answer.json


def test_answers_list_a_bounded_number_of_problems(precomputed, tmp_path):
    """A 1,000,000-byte body of bad edits is one short 400 (more than max_edits); bad edits or
    variants within the limits list the first MAX_PROBLEMS problems and count them all."""
    app = make_model_app(precomputed, tmp_path / "hub", max_body_bytes=1_000_000, max_variants=100)
    client = app.test_client()
    try:
        head, edit = b'{"region": "chr1:150,001-150,100", "edits": [', b'{"pos": 1},'
        flood = head + edit * ((1_000_000 - len(head) - 20) // len(edit)) + b'{"pos": 1}]}'
        response = client.post("/api/predict", data=flood, content_type="application/json")
        assert response.status_code == 400 and len(response.data) < 1_000, response.data[:300]
        assert "edits in one request; at most 1,000 (max_edits)" in response.json["error"]["message"]
        response = client.post("/api/predict", json={"region": "chr1:150,001-150,100", "edits": [{"pos": 1}] * 1_000})
        error = response.json["error"]
        assert response.status_code == 400 and len(response.data) < 16_384
        assert len(error["problems"]) == MAX_PROBLEMS and error["problem_count"] == 1_000
        response = client.post("/api/variants", json={"variants": ["chr1:5:A"] * 100})
        error = response.json["error"]
        assert response.status_code == 422 and len(error["problems"]) == MAX_PROBLEMS and error["problem_count"] == 100
        assert [p["index"] for p in error["problems"]] == list(range(MAX_PROBLEMS))
    finally:
        app.config["PREDICTOR"].close()


def test_a_request_never_waits_past_request_timeout_s(precomputed, tmp_path, genome):
    """request_timeout_s counts from admission, however many waits a request makes and whoever
    computes what it waits for: a variant request whose second batch is stuck after a slow first
    one, then identical ISM requests (sharing one computation) and a variant request from four
    addresses, all while the batcher is stuck: each is 504 (or 429) within the timeout and a
    margin, never a 500."""
    timeout, margin = 3.0, 1.0
    app = make_model_app(precomputed, tmp_path / "hub", request_timeout_s=timeout, proxy_hops=1)
    predictor = app.config["PREDICTOR"]
    cached = snv(genome, pos=140_001)
    assert app.test_client().post("/api/variants", json={"variants": [cached]}).status_code == 200
    stuck, release = threading.Event(), threading.Event()
    run_groups = predictor.batcher._run_groups

    def slow_then_stuck(groups):
        if not stuck.is_set():                  # the first batch: slow, within the timeout
            stuck.set()
            time.sleep(timeout * 0.7)
        else:                                   # every later one: until the test ends
            release.wait(60)
        return run_groups(groups)

    predictor.batcher._run_groups = slow_then_stuck
    answers: dict[str, tuple[int, float]] = {}

    def ask(name: str, path: str, body: dict, start: threading.Barrier | None = None) -> None:
        if start is not None:
            start.wait()
        began = time.monotonic()
        response = app.test_client().post(path, json=body, headers={"X-Forwarded-For": f"10.0.0.{len(name)}"})
        answers[name] = response.status_code, time.monotonic() - began

    try:
        # a new window (first batch), then a new variant of the cached window (second batch)
        ask("a", "/api/variants", {"variants": [snv(genome, pos=240_001), snv(genome, pos=140_002)]})
        start = threading.Barrier(4)
        threads = [threading.Thread(target=ask, args=(name, "/api/ism", {"region": "chr1:160,001-160,050"}, start))
                   for name in ("bb", "ccc", "dddd")]
        threads.append(threading.Thread(target=ask, args=("eeeee", "/api/variants",
                                                           {"variants": [snv(genome, pos=250_001)]}, start)))
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        release.set()
        predictor.close()
    assert set(answers) == {"a", "bb", "ccc", "dddd", "eeeee"}
    for name, (status, seconds) in answers.items():
        assert status in (504, 429) and seconds < timeout + margin, (name, status, seconds)


@given(st.integers(1, 10), st.integers(1, 10), st.lists(st.tuples(st.booleans(), st.integers(0, 6)), max_size=60))
def test_full_prediction_slots_are_held_by_four_addresses_at_least(total, per_client, steps):
    """Whatever the order of acquires and releases, every slot taken means min(4, total)
    addresses hold them, and an address holding none gets a slot whenever one is free."""
    slots = ClientSlots(total, min(per_client, total))
    for acquire, who in steps:
        client = f"10.0.0.{who}"
        if acquire:
            held = slots.running.get(client, 0)
            free = total - sum(slots.running.values())
            refused = slots.acquire(client)
            assert refused is None or held or not free, "an address holding none is refused a free slot"
        elif client in slots.running:
            slots.release(client)
        assert sum(slots.running.values()) <= total and all(0 < n <= slots.per_client for n in slots.running.values())
        if sum(slots.running.values()) == total:
            assert len(slots.running) >= min(4, total), slots.running


def test_another_address_is_answered_while_one_floods(precomputed, tmp_path, genome):
    """One address keeps three 1 kb ISM requests (3,000 alternates each) running; another
    address's single-variant queries, each in a new window, still answer within
    FLOODED_QUERY_S (the batcher takes each address's work in turn, in batches of max_batch)."""
    app = make_model_app(precomputed, tmp_path / "hub", proxy_hops=1, cache_windows=0, request_timeout_s=8)
    predictor = app.config["PREDICTOR"]
    flooding, stop = threading.Event(), threading.Event()
    statuses: list[int] = []
    run_groups = predictor.batcher._run_groups

    def running(groups):
        flooding.set()                          # the flood's forward passes have begun
        return run_groups(groups)

    predictor.batcher._run_groups = running

    def flood(k: int) -> None:
        region = f"chr1:{100_001 + 20_000 * k:,}-{101_000 + 20_000 * k:,}"
        while not stop.is_set():
            response = app.test_client().post("/api/ism", json={"region": region},
                                              headers={"X-Forwarded-For": "10.0.0.1"})
            statuses.append(response.status_code)

    flooders = [threading.Thread(target=flood, args=(k,)) for k in range(3)]
    for thread in flooders:
        thread.start()
    seconds = []
    try:
        assert flooding.wait(60)
        for k in range(4):
            began = time.monotonic()
            response = app.test_client().post("/api/variants", json={"variants": [snv(genome, pos=180_001 + 9_000 * k)]},
                                              headers={"X-Forwarded-For": "10.0.0.2"})
            seconds.append(time.monotonic() - began)
            assert response.status_code == 200, response.json
    finally:
        stop.set()
        for thread in flooders:
            thread.join()
        predictor.close()
    assert set(statuses) <= {200, 504}
    assert max(seconds) < FLOODED_QUERY_S, seconds
