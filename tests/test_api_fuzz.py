"""Hostile input: schemathesis generates requests from /api/openapi.json (valid and invalid) and
every answer must be a documented status, never a 5xx, with a body matching the schema."""
from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis import checks

from server import create_app
from server.openapi import openapi_document

EXAMPLES_PER_OPERATION = 300
MIN_REQUESTS = 1000
CHECKS = [checks.not_a_server_error, checks.status_code_conformance, checks.content_type_conformance,
          checks.response_schema_conformance, checks.response_headers_conformance, checks.negative_data_rejection]


@pytest.fixture(scope="module")
def fuzzed_app(precomputed, tmp_path_factory):
    app = create_app({"precompute_dir": str(precomputed), "hub_dir": str(tmp_path_factory.mktemp("hub")),
                      "log_requests": False, "models": [str(precomputed.parent / "model.pth.tar")],
                      "device": "cpu", "max_variants": 5, "max_body_bytes": 20_000})
    yield app
    app.config["PREDICTOR"].close()


@pytest.fixture(scope="module")
def sent():
    """Requests sent per operation; at the end, all operations together must have had enough."""
    counts: dict[str, int] = {}
    yield counts
    if len(counts) == len(OPERATIONS):
        assert sum(counts.values()) >= MIN_REQUESTS, counts


schema = schemathesis.openapi.from_dict(openapi_document("http://localhost/"))
OPERATIONS = [f"{method.upper()} {path}" for path, methods in schema.raw_schema["paths"].items() for method in methods]


@pytest.mark.slow
@schema.parametrize()
@settings(max_examples=EXAMPLES_PER_OPERATION, deadline=None, derandomize=True,
          suppress_health_check=list(HealthCheck))
def test_api_answers_every_generated_request_within_its_schema(case, fuzzed_app, sent):
    response = case.call_and_validate(app=fuzzed_app, checks=CHECKS)
    key = f"{case.operation.method.upper()} {case.operation.path}"
    sent[key] = sent.get(key, 0) + 1
    assert response.status_code < 500
