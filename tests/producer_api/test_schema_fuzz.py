"""The live API against its own OpenAPI document (schemathesis), and the request-body
limit (413 before anything is stored).

Every documented operation is called with generated requests, once under the master
key and once under a virtual key with limits (a key's own checks are code paths of
their own: model patterns, rpm / tpm, parallel jobs, admin routes answering 403): no
answer may be a 5xx, and every answer must be one the document declares (status code,
content type, body schema).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis import APIOperation
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)
from sqlalchemy import text

from tests.conftest import MASTER_KEY, Fleet
from tests.support.processes import start_api
from tests.support.tenancy import make_key

AUTH = {"Authorization": f"Bearer {MASTER_KEY}"}
#: The virtual key's limits: each one is checked at intake, none so tight that most
#: generated jobs answer 429 instead of reaching the code behind the limit.
VIRTUAL_KEY_LIMITS = {
    "alias": "fuzz",
    "models": ["mock-*"],
    "rpm": 10_000,
    "tpm": 10_000_000,
    "max_parallel_jobs": 1_000,
    "max_batch_lines": 1_000,
}
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]
#: Small limits for the API process of the 413 tests.
BODY_LIMIT = 1024
FILE_LIMIT = 4096


#: Bounded: about 25 examples an operation; no shrinking, so that a failure is reported
#: as found and a slow endpoint cannot make the shrinker replay it hundreds of times.
FUZZ = settings(
    max_examples=25,
    deadline=None,
    phases=[Phase.explicit, Phase.generate],
    suppress_health_check=list(HealthCheck),
    database=None,
)


@pytest.mark.timeout(600)
@pytest.mark.parametrize("key_kind", ["master", "virtual"])
def test_every_operation_answers_as_documented(
    clean_fleet: Fleet, subtests: pytest.Subtests, key_kind: str
) -> None:
    # schemathesis' own pytest loader (`schemathesis.pytest.from_fixture`, needed because
    # the API starts with the session) fails on pytest 9.2 (`Function._nodeid` is gone),
    # so each operation runs as a subtest of its own here.
    key = MASTER_KEY
    if key_kind == "virtual":
        key = make_key(clean_fleet.api_url, **VIRTUAL_KEY_LIMITS).key
    auth = {"Authorization": f"Bearer {key}"}
    schema = schemathesis.openapi.from_url(f"{clean_fleet.api_url}/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) > 30
    for operation in operations:
        with subtests.test(operation.label):
            _fuzz(operation, clean_fleet.api_url, auth)


def _fuzz(operation: APIOperation, api_url: str, auth: dict[str, str]) -> None:
    @FUZZ
    @given(case=operation.as_strategy())
    def run(case: schemathesis.Case) -> None:
        response = case.call(base_url=api_url, headers=auth, timeout=60)
        case.validate_response(response, checks=CHECKS)

    run()


@pytest.fixture(scope="module")
def small_api(fleet: Fleet, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A second API process on the session fleet's DB and Redis, with small limits."""
    env = {
        **fleet.env,
        "LLMFLEET_MAX_BODY_BYTES": str(BODY_LIMIT),
        "LLMFLEET_MAX_FILE_BYTES": str(FILE_LIMIT),
    }
    proc, url = start_api(env, tmp_path_factory.mktemp("small-api"), name="api-small-body")
    try:
        yield url
    finally:
        proc.stop()


def _job_body(content_bytes: int) -> bytes:
    content = "x" * content_bytes
    return (
        b'{"model": "mock-model", "messages": [{"role": "user", "content": "'
        + content.encode()
        + b'"}]}'
    )


def _count(fleet: Fleet, table: str) -> int:
    with fleet.engine.connect() as conn:
        return int(conn.execute(text(f"SELECT count(*) FROM {table}")).scalar_one())


def _assert_too_large(response: httpx.Response, limit: int) -> None:
    assert response.status_code == 413, response.text
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error"
    assert error["code"] == "request_too_large"
    assert str(limit) in error["message"]


def test_declared_body_over_the_limit_is_refused_unread(clean_fleet: Fleet, small_api: str) -> None:
    body = _job_body(2 * BODY_LIMIT)
    with httpx.Client(base_url=small_api, headers=AUTH, timeout=30) as client:
        response = client.post(
            "/v1/jobs", content=body, headers={"content-type": "application/json"}
        )
        listed = client.get("/v1/jobs").json()

    _assert_too_large(response, BODY_LIMIT)
    assert listed["data"] == []
    assert _count(clean_fleet, "jobs") == 0


def test_chunked_body_over_the_limit_is_refused(clean_fleet: Fleet, small_api: str) -> None:
    body = _job_body(2 * BODY_LIMIT)

    def chunks() -> Iterator[bytes]:
        # An iterator has no length: httpx sends it chunked, without Content-Length.
        for start in range(0, len(body), 256):
            yield body[start : start + 256]

    with httpx.Client(base_url=small_api, headers=AUTH, timeout=30) as client:
        request = client.build_request(
            "POST", "/v1/jobs", content=chunks(), headers={"content-type": "application/json"}
        )
        assert "content-length" not in request.headers
        assert request.headers["transfer-encoding"] == "chunked"
        response = client.send(request)
        listed = client.get("/v1/jobs").json()

    _assert_too_large(response, BODY_LIMIT)
    assert listed["data"] == []
    assert _count(clean_fleet, "jobs") == 0


def test_a_body_within_the_limit_is_served(clean_fleet: Fleet, small_api: str) -> None:
    body = _job_body(BODY_LIMIT // 2)
    assert len(body) <= BODY_LIMIT
    with httpx.Client(base_url=small_api, headers=AUTH, timeout=30) as client:
        response = client.post(
            "/v1/jobs", content=body, headers={"content-type": "application/json"}
        )
    assert response.status_code == 202, response.text


def test_uploads_have_the_file_limit_not_the_json_one(clean_fleet: Fleet, small_api: str) -> None:
    line = b'{"custom_id": "a", "method": "POST", "url": "/v1/chat/completions", "body": {}}\n'
    fits = line * (FILE_LIMIT // len(line))
    too_big = line * (2 * FILE_LIMIT // len(line))
    assert BODY_LIMIT < len(fits) <= FILE_LIMIT < len(too_big)
    files_dir = Path(clean_fleet.env["LLMFLEET_FILES_DIR"])
    before = _stored(files_dir)
    with httpx.Client(base_url=small_api, headers=AUTH, timeout=30) as client:
        accepted = client.post(
            "/v1/files", files={"file": ("in.jsonl", fits)}, data={"purpose": "batch"}
        )
        refused = client.post(
            "/v1/files", files={"file": ("in.jsonl", too_big)}, data={"purpose": "batch"}
        )

    assert accepted.status_code == 200, accepted.text
    assert refused.status_code == 413, refused.text
    assert refused.json()["error"]["param"] == "file"
    assert _count(clean_fleet, "files") == 1
    # Nothing half-written: only the accepted upload is in file storage.
    assert _stored(files_dir) - before == {accepted.json()["id"]}


def _stored(root: Path) -> set[str]:
    """Names of the files in file storage, temporary `.part` files included."""
    return {p.name for p in root.rglob("*") if p.is_file()}
