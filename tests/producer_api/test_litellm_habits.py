"""A LiteLLM user's first hour: their proxy config file, loaded unchanged, drives a
fleet, and their clients and habits work against it (the `openai` SDK, routes without
`/v1`, LiteLLM's health routes, request ids, errors as OpenAI answers them)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from sqlalchemy import text

from tests.conftest import migrated_database
from tests.support.fleet import MiniFleet, mini_fleet
from tests.support.processes import start_mock

PROXY_CONFIG = Path(__file__).resolve().parents[1] / "fixtures" / "litellm" / "proxy_config.yaml"
LITELLM_MASTER_KEY = "sk-litellm-master"
PROMPT = " ".join(f"w{i}" for i in range(300))


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MiniFleet]:
    log_dir = tmp_path_factory.mktemp("litellm-fleet")
    mock, mock_url = start_mock({}, log_dir)
    env: dict[str, str | None] = {
        "MOCK_BASE": f"{mock_url}/v1",
        "OPENAI_API_KEY": "sk-provider",
        "LITELLM_MASTER_KEY": LITELLM_MASTER_KEY,
        "LLMFLEET_MASTER_KEY": None,  # the config's general_settings.master_key serves
    }
    try:
        with (
            migrated_database("llmfleet_test_litellm") as (url, engine),
            mini_fleet(log_dir, url, engine, PROXY_CONFIG, {}, dbs=(7, 8), extra_env=env) as f,
        ):
            yield f
    finally:
        mock.stop()


@pytest.fixture
def sdk(fleet: MiniFleet) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{fleet.api_url}/v1", api_key=LITELLM_MASTER_KEY)


def job(fleet: MiniFleet, **body: Any) -> dict[str, Any]:
    headers = {"Authorization": f"Bearer {LITELLM_MASTER_KEY}"}
    with httpx.Client(base_url=fleet.api_url, headers=headers, timeout=60) as client:
        created = client.post("/v1/jobs", json=body)
        assert created.status_code == 202, created.text
        job_id = created.json()["id"]
        until = time.monotonic() + 60
        while True:
            found: dict[str, Any] = client.get(f"/v1/jobs/{job_id}", params={"wait": 20}).json()
            if found["status"] not in ("queued", "running") and (
                found["status"] != "succeeded" or found["cost"] is not None
            ):
                return found
            assert time.monotonic() < until, found
            time.sleep(0.2)


def test_the_deployments_call_defaults_apply_and_a_request_overrides_them(
    sdk: openai.OpenAI,
) -> None:
    # The config's gpt-4o sets max_tokens 256 (the mock stops its echo there)
    messages: Any = [{"role": "user", "content": PROMPT}]
    defaulted = sdk.chat.completions.create(model="gpt-4o", messages=messages)
    assert defaulted.choices[0].finish_reason == "length"
    assert defaulted.usage is not None and defaulted.usage.completion_tokens == 256
    own = sdk.chat.completions.create(model="gpt-4o", messages=messages, max_tokens=280)
    assert own.usage is not None and own.usage.completion_tokens == 280
    # gpt-4o-mini sets none: the whole echo
    plain = sdk.chat.completions.create(model="gpt-4o-mini", messages=messages)
    assert plain.choices[0].finish_reason == "stop"
    assert plain.usage is not None and plain.usage.completion_tokens == 301


def test_a_job_carries_its_cost_from_the_model_info_prices(fleet: MiniFleet) -> None:
    done = job(fleet, model="gpt-4o", messages=[{"role": "user", "content": "price me"}])
    usage = done["usage"]
    expected = usage["prompt_tokens"] * Decimal("0.0000025") + usage["completion_tokens"] * Decimal(
        "0.00001"
    )
    assert Decimal(done["cost"]) == expected
    assert done["cost_source"] == "override"
    assert "E" not in done["cost"]


def test_an_alias_runs_and_is_billed_as_its_real_group(fleet: MiniFleet) -> None:
    done = job(fleet, model="gpt-4", messages=[{"role": "user", "content": "alias"}])
    assert (done["model"], done["served_group"], done["deployment"]) == (
        "gpt-4",
        "gpt-4o",
        "gpt-4o-primary",
    )
    with fleet.engine.connect() as conn:
        group = conn.execute(
            text("SELECT model_group FROM spend WHERE job_id = :id"), {"id": done["id"]}
        ).scalar_one()
    assert group == "gpt-4o"


def test_invalid_bodies_are_openai_400s_naming_the_field(
    fleet: MiniFleet, sdk: openai.OpenAI
) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        sdk.chat.completions.create(
            model="gpt-4o",
            messages=[{"role": "user", "content": "x"}],
            temperature="hot",  # type: ignore[arg-type]
        )
    assert caught.value.status_code == 400
    assert isinstance(caught.value.body, dict) and caught.value.body["param"] == "temperature"
    broken = httpx.post(
        f"{fleet.api_url}/v1/chat/completions",
        content=b'{"model": "gpt-4o", "messages": [',
        headers={"Authorization": f"Bearer {LITELLM_MASTER_KEY}"},
    )
    assert broken.status_code == 400
    assert broken.json()["error"]["param"] == "body"


def test_litellm_routes_without_v1_and_its_health_routes_answer(fleet: MiniFleet) -> None:
    root = openai.OpenAI(base_url=fleet.api_url, api_key=LITELLM_MASTER_KEY)
    reply = root.chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "no prefix"}]
    )
    assert reply.choices[0].message.content == "Echo: no prefix"
    assert {m.id for m in root.models.list()} >= {"gpt-4o", "gpt-4o-mini", "gpt-4"}
    assert httpx.get(f"{fleet.api_url}/health/liveliness").status_code == 200
    assert httpx.get(f"{fleet.api_url}/health/readiness").json()["status"] == "ready"


def test_every_answer_carries_a_request_id(fleet: MiniFleet, sdk: openai.OpenAI) -> None:
    raw = sdk.chat.completions.with_raw_response.create(
        model="gpt-4o-mini",
        messages=[{"role": "user", "content": "id"}],
        extra_headers={"x-request-id": "trace-42"},
    )
    assert raw.headers["x-request-id"] == "trace-42"
    missing = httpx.get(f"{fleet.api_url}/v1/jobs/job_nope")
    assert missing.status_code == 401 and missing.headers["x-request-id"].startswith("req_")
    assert httpx.get(f"{fleet.api_url}/healthz").headers["x-request-id"].startswith("req_")


def test_what_the_fleet_does_not_honour_is_printed_and_served(fleet: MiniFleet) -> None:
    headers = {"Authorization": f"Bearer {LITELLM_MASTER_KEY}"}
    served = httpx.get(f"{fleet.api_url}/v1/config/warnings", headers=headers).json()
    paths = {w["path"] for w in served["data"]}
    assert {"litellm_settings.success_callback", "general_settings.alerting"} <= paths
    assert "litellm_settings.num_retries" not in paths  # honoured
    for proc in fleet.procs:
        if proc.name.startswith(("w", "api")):
            assert "general_settings.alerting" in proc.output(), proc.name


@pytest.mark.parametrize("status", [401, 404, 500])
def test_the_attempt_log_keeps_the_providers_status(fleet: MiniFleet, status: int) -> None:
    content = f"[mock:status={status}]"
    done = job(fleet, model="gpt-4o-mini", messages=[{"role": "user", "content": content}])
    assert done["status"] == "failed"
    headers = {"Authorization": f"Bearer {LITELLM_MASTER_KEY}"}
    read = httpx.get(f"{fleet.api_url}/v1/jobs/{done['id']}", headers=headers).json()
    assert read["attempt_log"] and {a["status_code"] for a in read["attempt_log"]} == {status}


def test_answers_carry_the_keys_rate_limits_and_the_deployment_that_served(
    fleet: MiniFleet,
) -> None:
    # Given a virtual key with 5 requests and 10,000 tokens a minute
    headers = {"Authorization": f"Bearer {LITELLM_MASTER_KEY}"}
    created = httpx.post(f"{fleet.api_url}/v1/keys", json={"rpm": 5, "tpm": 10000}, headers=headers)
    assert created.status_code in (200, 201), created.text
    client = openai.OpenAI(base_url=f"{fleet.api_url}/v1", api_key=created.json()["key"])
    messages: Any = [{"role": "user", "content": "limits"}]
    # When it makes calls
    first = client.chat.completions.with_raw_response.create(model="gpt-4o", messages=messages)
    second = client.chat.completions.with_raw_response.create(model="gpt-4o", messages=messages)
    # Then each answer says what is left, as OpenAI's headers do
    assert first.headers["x-ratelimit-limit-requests"] == "5"
    assert first.headers["x-ratelimit-remaining-requests"] == "4"
    assert second.headers["x-ratelimit-remaining-requests"] == "3"
    assert first.headers["x-ratelimit-reset-requests"] in ("59s", "1m0s")
    assert first.headers["x-ratelimit-limit-tokens"] == "10000"
    assert 0 < int(first.headers["x-ratelimit-remaining-tokens"]) < 10000
    # and which deployment served it, under LiteLLM's names
    assert first.headers["x-litellm-model-id"] == "gpt-4o-primary"
    assert first.headers["x-litellm-model-group"] == "gpt-4o"
    assert first.headers["x-llmfleet-job-id"].startswith("job_")
    # and past the limit, a 429 whose headers say when
    for _ in range(3):
        client.chat.completions.create(model="gpt-4o", messages=messages)
    with pytest.raises(openai.RateLimitError) as caught:
        client.with_options(max_retries=0).chat.completions.create(
            model="gpt-4o", messages=messages
        )
    refused = caught.value.response.headers
    assert refused["x-ratelimit-remaining-requests"] == "0"
    assert int(refused["retry-after"]) >= 1


def test_a_webhook_without_a_signing_secret_is_refused_naming_the_setting(
    fleet: MiniFleet, sdk: openai.OpenAI
) -> None:
    # Given a fleet started without LLMFLEET_WEBHOOK_SECRET
    headers = {"Authorization": f"Bearer {LITELLM_MASTER_KEY}"}
    with fleet.engine.connect() as conn:
        before = conn.execute(text("SELECT count(*) FROM jobs")).scalar_one()
    body = {
        "model": "gpt-4o",
        "messages": [{"role": "user", "content": "tell me"}],
        "webhook_url": "https://example.com/hook",
    }
    # When a job, or a batch, asks for a webhook
    refused = httpx.post(f"{fleet.api_url}/v1/jobs", json=body, headers=headers)
    upload = sdk.files.create(
        file=(
            "in.jsonl",
            b'{"custom_id": "a", "method": "POST", "url": "/v1/chat/completions",'
            b' "body": {"model": "gpt-4o", "messages": []}}\n',
        ),
        purpose="batch",
    )
    with pytest.raises(openai.BadRequestError) as batch:
        sdk.batches.create(
            input_file_id=upload.id,
            endpoint="/v1/chat/completions",
            completion_window="24h",
            extra_body={"webhook_url": "https://example.com/hook"},
        )
    # Then both are refused with a 400 that names the setting, and nothing is stored
    assert refused.status_code == 400
    assert refused.json()["error"]["param"] == "webhook_url"
    assert "LLMFLEET_WEBHOOK_SECRET" in refused.json()["error"]["message"]
    assert "LLMFLEET_WEBHOOK_SECRET" in str(batch.value)
    with fleet.engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM jobs")).scalar_one() == before
        assert conn.execute(text("SELECT count(*) FROM batches")).scalar_one() == 0


def test_concurrent_jobs_overshoot_a_budget_by_one_job_at_most(fleet: MiniFleet) -> None:
    # Given a customer with a budget of $0.005, and a key of theirs
    admin = {"Authorization": f"Bearer {LITELLM_MASTER_KEY}"}
    api = fleet.api_url
    customer = httpx.post(f"{api}/v1/customers", json={"name": "thrifty"}, headers=admin).json()
    budget = {"scope": "customer", "scope_id": customer["id"], "max_spend": "0.005"}
    assert httpx.post(f"{api}/v1/budgets", json=budget, headers=admin).status_code == 200
    key = httpx.post(f"{api}/v1/keys", json={"customer_id": customer["id"]}, headers=admin)
    client = openai.OpenAI(base_url=f"{api}/v1", api_key=key.json()["key"], max_retries=0)
    # (each call costs about $0.0033 on gpt-4o's prices, and takes a second)
    messages: Any = [{"role": "user", "content": f"[mock:latency=1] {PROMPT}"}]

    def call(_: int) -> int:
        try:
            client.chat.completions.create(model="gpt-4o", messages=messages)
        except openai.RateLimitError as refused:
            assert isinstance(refused.body, dict) and refused.body["code"] == "budget_exceeded"
            return 429
        return 200

    # When 10 calls arrive at once
    with ThreadPoolExecutor(10) as pool:
        answers = list(pool.map(call, range(10)))
    # Then only those that fit the budget's room ran, and the spend passed the budget by
    # less than one call's cost
    assert 1 <= answers.count(200) <= 2 and answers.count(429) >= 8
    with fleet.engine.connect() as conn:
        spent, calls = conn.execute(
            text("SELECT sum(cost), count(*) FROM spend WHERE customer_id = :c"),
            {"c": customer["id"]},
        ).one()
    assert calls == answers.count(200)
    assert spent < Decimal("0.005") + spent / calls
