"""Fuzzing the API from its own OpenAPI schema (schemathesis): no generated request, with or without
the API key, may end in a 5xx. The database is real (the suite's embedded PostgreSQL), so generated
writes reach it; a few signers with references are enrolled first so reads and verification find data."""
from __future__ import annotations

import pytest
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings

from sigverify.serving.app import Limits, Settings, create_app
from sigverify.serving.store import SignatureStore
from sigverify.serving.verifier import Verifier

from service_helpers import fresh_database, signature_png
from test_service import postgres  # noqa: F401  (the session's database server)

KEY = "fuzz-key"


@pytest.fixture(scope="module")
def fuzzed_app(postgres, served_model):  # noqa: F811
    verifier = Verifier(served_model[3], threads=1)
    store = SignatureStore(fresh_database(postgres, "fuzz"), verifier.model.model_id,
                           verifier.model.config.embedding_dim, timeout=2)
    app = create_app(Verifier(verifier.model, threads=1, max_pixels=2_000_000), store,
                     Settings(api_key=KEY, limits=Limits(max_upload_bytes=200_000)))
    with TestClient(app) as client:
        for signer in ("s1", "s2"):
            client.post("/signers", json={"id": signer}, headers={"X-API-Key": KEY})
            client.post(f"/signers/{signer}/references", headers={"X-API-Key": KEY},
                        files=[("files", (f"{signer}-{i}.png", signature_png(hash(signer) % 1000 + i), "image/png"))
                               for i in range(3)])
    yield app
    store.close()


def check(case, headers: dict) -> None:
    response = case.call(headers=headers)
    assert response.status_code < 500, f"{case.method} {case.formatted_path}: {response.status_code} {response.text}"
    if response.status_code >= 400:
        assert "Traceback" not in response.text and "detail" in response.json()


# Every operation of the schema, a test each (schemathesis's own pytest plugin does not run under this pytest).
OPERATIONS = ["POST /signers", "GET /signers", "GET /signers/{signer_id}", "DELETE /signers/{signer_id}",
              "POST /signers/{signer_id}/references", "GET /signers/{signer_id}/references",
              "DELETE /signers/{signer_id}/references/{reference_id}", "POST /signers/{signer_id}/verify",
              "POST /signers/{signer_id}/report",
              "POST /identify", "GET /healthz", "GET /readyz", "GET /model"]


def test_the_fuzzed_operations_are_all_of_the_api(fuzzed_app):
    schema = schemathesis.openapi.from_asgi("/openapi.json", fuzzed_app)
    found = {f"{op.ok().method.upper()} {op.ok().path}" for op in schema.get_all_operations()}
    assert found == set(OPERATIONS)


@pytest.mark.parametrize("with_key", [True, False], ids=["with-key", "without-key"])
@pytest.mark.parametrize("operation", OPERATIONS)
def test_no_generated_request_ends_in_a_server_error(fuzzed_app, operation, with_key):
    schema = schemathesis.openapi.from_asgi("/openapi.json", fuzzed_app)
    method, path = operation.split(" ")
    headers = {"X-API-Key": KEY} if with_key else {}

    @given(case=schema[path][method].as_strategy())
    @settings(max_examples=15 if with_key else 5, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    def fuzz(case):
        check(case, headers)

    fuzz()
