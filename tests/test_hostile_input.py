"""Hostile input never gets a 500: generated JSON bodies (deep nesting, unicode digits, huge
numbers, control characters, NUL) for the prediction endpoints and generated query strings and
paths for the others are all answered 4xx with a JSON problem, or 200."""
from __future__ import annotations

import json
from urllib.parse import quote

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from .helpers import make_model_app

SETTINGS = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
HOSTILE_TEXT = st.one_of(
    st.text(max_size=30),
    st.text(alphabet="0123456789²³¹٣٤੩߂\u0000\u000b\r\n\t-:,.", max_size=20),
    st.sampled_from(["²", "9" * 5000, "chr1:²:A:G", "chr1:%C2%B2:A:G", "hub.txt\u0000", "../../etc/passwd", "\u0000"]),
)
SCALARS = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), HOSTILE_TEXT)
JSON = st.recursive(SCALARS, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                      st.dictionaries(HOSTILE_TEXT, inner, max_size=4)), max_leaves=12)
BASE = st.one_of(st.sampled_from(["A", "C", "G", "T", "", "-"]), HOSTILE_TEXT)
VARIANT = st.one_of(
    st.fixed_dictionaries({"chrom": st.one_of(st.sampled_from(["chr1", "chr2"]), HOSTILE_TEXT),
                           "pos": st.one_of(HOSTILE_TEXT, st.integers(), JSON), "ref": BASE, "alt": BASE}),
    st.builds(lambda c, p, r, a: f"{c}:{p}:{r}:{a}", st.sampled_from(["chr1", "chr2"]), HOSTILE_TEXT, BASE, BASE),
    JSON)
VARIANT_BODIES = st.one_of(
    st.fixed_dictionaries({"variants": st.lists(VARIANT, min_size=1, max_size=4)},
                          optional={"score_bp": JSON, "tracks": JSON}),
    JSON)
PREDICT_BODIES = st.one_of(
    st.fixed_dictionaries({"region": st.one_of(HOSTILE_TEXT, JSON)}, optional={"edits": st.lists(VARIANT, max_size=3)}),
    st.fixed_dictionaries({"region": st.just("chr1:100,001-100,200")}, optional={"edits": st.lists(VARIANT, max_size=3)}),
    st.fixed_dictionaries({"sequence": st.one_of(HOSTILE_TEXT, JSON)}, optional={"conservation": JSON}),
    JSON)


@pytest.fixture(scope="module")
def hostile_client(precomputed, tmp_path_factory):
    app = make_model_app(precomputed, tmp_path_factory.mktemp("hub"))
    yield app.test_client()
    app.config["PREDICTOR"].close()


def answered(response) -> None:
    assert response.status_code < 500, response.get_data(as_text=True)[:500]
    if response.status_code >= 400:
        assert response.is_json and response.json["error"]["message"]


@SETTINGS
@given(body=VARIANT_BODIES)
def test_generated_variant_requests_are_never_a_500(hostile_client, body):
    answered(hostile_client.post("/api/variants", data=json.dumps(body), content_type="application/json"))


@SETTINGS
@given(body=PREDICT_BODIES)
def test_generated_predict_requests_are_never_a_500(hostile_client, body):
    answered(hostile_client.post("/api/predict", data=json.dumps(body), content_type="application/json"))


@pytest.mark.parametrize("depth", [100, 1_000, 5_000, 50_000])
def test_deep_nesting_is_a_400(hostile_client, depth):
    for endpoint, key in (("/api/variants", "variants"), ("/api/predict", "region")):
        response = hostile_client.post(endpoint, data=f'{{"{key}": ' + "[" * depth + "]" * depth + "}",
                                       content_type="application/json")
        answered(response)
        if depth >= 5_000:
            assert response.status_code == 400 and "nested too deeply" in response.json["error"]["message"]


def test_named_cases_get_their_reason(hostile_client):
    cases = [
        ("post", "/api/variants", {"variants": [{"chrom": "chr1", "pos": "²", "ref": "A", "alt": "G"}]},
         422, "pos must be a positive integer (1-based) of at most 11 digits"),
        ("post", "/api/variants", {"variants": [{"chrom": "chr1", "pos": "9" * 5000, "ref": "A", "alt": "G"}]},
         422, "(5000 characters)"),
        ("get", "/api/variant-track?variant=chr1:%C2%B2:A:G", None, 400, "pos must be a positive integer"),
        ("get", "/api/sequence?region=chr1:%D9%A3-%D9%A5", None, 400, "is not chr:start-end"),
        ("get", "/hub/hub.txt%00", None, 404, "not found"),
    ]
    for method, url, body, status, message in cases:
        response = getattr(hostile_client, method)(url, json=body) if body else getattr(hostile_client, method)(url)
        assert response.status_code == status, url
        assert message in json.dumps(response.json), (url, response.json)
    raw = hostile_client.post("/api/variants", data='{"variants": [{"pos": ' + "9" * 5000 + "}]}",
                              content_type="application/json")
    assert raw.status_code == 400 and "not JSON that can be read" in raw.json["error"]["message"]


def test_errors_name_files_not_local_paths(hostile_client, precomputed):
    response = hostile_client.get("/api/sequence?region=chrX:1-10")
    assert response.status_code == 400 and "is not in genome.fa" in response.json["error"]["message"]
    assert str(precomputed.parent.parent) not in response.get_data(as_text=True)


@SETTINGS
@given(text=HOSTILE_TEXT, kind=st.sampled_from(["variant-track", "sequence", "hub"]))
def test_generated_queries_and_paths_are_never_a_500(hostile_client, text, kind):
    url = {"variant-track": f"/api/variant-track?variant={quote(text)}",
           "sequence": f"/api/sequence?region={quote(text)}", "hub": f"/hub/{quote(text)}"}[kind]
    answered(hostile_client.get(url))



def test_security_headers(hostile_client):
    """nosniff on every answer; the page may be framed by no one and runs only this origin's code."""
    for url in ("/", "/api/tracks", "/healthz", "/hub/hub.txt", "/static/app.js", "/api/sequence?region=x"):
        assert hostile_client.get(url).headers["X-Content-Type-Options"] == "nosniff", url
    page = hostile_client.get("/")
    assert page.headers["X-Frame-Options"] == "DENY"
    policy = page.headers["Content-Security-Policy"]
    assert "default-src 'self'" in policy and "frame-ancestors 'none'" in policy and "script-src 'self';" in policy


def test_a_forged_host_cannot_choose_the_links(precomputed, tmp_path):
    """Without public_url, links come from the Host only when it is allowed (else 400), answers that
    depend on it say Vary: Host, and forwarded headers count only with proxy_hops."""
    from epiformer.server import create_app

    base = {"precompute_dir": str(precomputed), "hub_dir": str(tmp_path / "hub"), "log_requests": False}
    client = create_app(base).test_client()
    for url in ("/api/tracks", "/api/openapi.json"):
        forged = client.get(url, headers={"Host": "evil.example"})
        assert forged.status_code == 400 and "set public_url, or add the name to allowed_hosts" in \
            forged.json["error"]["message"]
        fine = client.get(url, headers={"Host": "127.0.0.1:8000"})
        assert fine.status_code == 200 and fine.headers["Vary"] == "Host" and "evil" not in fine.get_data(as_text=True)
    assert client.get("/hub/hub.txt", headers={"Host": "evil.example"}).status_code == 200, "files need no links"
    tricked = client.get("/api/tracks", headers={"X-Forwarded-Proto": "https", "X-Forwarded-Host": "evil.example"})
    assert tricked.json["hub"] == "http://localhost/hub/hub.txt", "forwarded headers are not trusted by default"
    named = create_app({**base, "allowed_hosts": ["tracks.lab.org"]}).test_client()
    assert named.get("/api/tracks", headers={"Host": "tracks.lab.org"}).json["hub"] == "http://tracks.lab.org/hub/hub.txt"
    assert named.get("/api/tracks").status_code == 400, "the list replaces the defaults"
    public = create_app({**base, "public_url": "https://tracks.example.org/"}).test_client()
    assert public.get("/api/tracks", headers={"Host": "evil.example"}).json["hub"] == \
        "https://tracks.example.org/hub/hub.txt"
    proxied = create_app({**base, "proxy_hops": 1}).test_client()
    assert proxied.get("/api/tracks", headers={"X-Forwarded-Proto": "https"}).json["hub"] == \
        "https://localhost/hub/hub.txt"
