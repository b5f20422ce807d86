"""Intake refuses what it cannot run: bad bodies, unknown models, missing keys —
and a refused request leaves nothing behind."""

from __future__ import annotations

import httpx
import pytest
from sqlalchemy import text

from tests.conftest import Fleet


def job_count(fleet: Fleet) -> int:
    with fleet.engine.connect() as conn:
        return int(conn.execute(text("SELECT count(*) FROM jobs")).scalar_one())


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"messages": [{"role": "user", "content": "hi"}]}, "model"),
        ({"model": "mock-model", "messages": []}, "messages"),
        ({"model": "mock-model", "messages": [{"role": "robot", "content": "x"}]}, "messages.0"),
        (
            {
                "model": "mock-model",
                "messages": [{"role": "user", "content": "x"}],
                "temperature": 7,
            },
            "temperature",
        ),
        (
            {"model": "mock-model", "messages": [{"role": "user", "content": "x"}], "priority": 11},
            "priority",
        ),
        (
            {
                "model": "mock-model",
                "messages": [{"role": "user", "content": "x"}],
                "completion_window": "soon",
            },
            "completion_window",
        ),
    ],
)
def test_invalid_body_is_400_naming_the_field_and_nothing_persisted(
    clean_fleet: Fleet, body: dict[str, object], param: str
) -> None:
    with clean_fleet.client() as client:
        response = client.post("/v1/jobs", json=body)
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error"
    assert error["param"].startswith(param)
    assert param in error["message"]
    assert job_count(clean_fleet) == 0


def test_unknown_model_is_404_and_nothing_persisted(clean_fleet: Fleet) -> None:
    with clean_fleet.client() as client:
        response = client.post(
            "/v1/jobs", json={"model": "gpt-nope", "messages": [{"role": "user", "content": "x"}]}
        )
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "model_not_found"
    assert "gpt-nope" in response.json()["error"]["message"]
    assert job_count(clean_fleet) == 0


def test_not_json_is_400_naming_the_body(clean_fleet: Fleet) -> None:
    with clean_fleet.client() as client:
        response = client.post(
            "/v1/jobs", content=b"{not json", headers={"content-type": "application/json"}
        )
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "body"
    assert "not valid JSON" in response.json()["error"]["message"]
    assert job_count(clean_fleet) == 0


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer wrong-key"},
        {"Authorization": "Basic abc"},
        {"Authorization": "Bearer"},
    ],
)
def test_missing_or_wrong_key_is_401(clean_fleet: Fleet, headers: dict[str, str]) -> None:
    body = {"model": "mock-model", "messages": [{"role": "user", "content": "x"}]}
    for method, path in (("POST", "/v1/jobs"), ("GET", "/v1/jobs"), ("GET", "/v1/jobs/job_x")):
        response = httpx.request(method, clean_fleet.api_url + path, headers=headers, json=body)
        assert response.status_code == 401, (method, path)
        assert response.json()["error"]["code"] == "invalid_api_key"
    assert job_count(clean_fleet) == 0


def test_unknown_job_is_404(clean_fleet: Fleet) -> None:
    with clean_fleet.client() as client:
        assert client.get("/v1/jobs/job_missing").status_code == 404
        assert client.delete("/v1/jobs/job_missing").status_code == 404


def test_health_readiness_and_openapi(clean_fleet: Fleet) -> None:
    assert httpx.get(clean_fleet.api_url + "/healthz").json() == {"status": "ok"}
    ready = httpx.get(clean_fleet.api_url + "/readyz").json()
    assert ready["checks"] == {"database": "ok", "redis": "ok"}
    spec = httpx.get(clean_fleet.api_url + "/openapi.json").json()
    assert {"/v1/jobs", "/v1/jobs/{job_id}", "/v1/chat/completions"} <= set(spec["paths"])
