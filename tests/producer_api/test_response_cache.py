"""The response cache end to end: a cached request repeated 100 times — one after
another, or all at once — reaches the provider once; identical batch lines run once;
hits are recorded as cached jobs with cost 0; tenants never share an entry."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import openai
from sqlalchemy import text

from tests.conftest import MASTER_KEY, Fleet
from tests.support.tenancy import batch_file, chat, make_key, wait_batch, wait_job


def provider_calls(fleet: Fleet) -> int:
    return int(fleet.mock_stats()["calls"])  # type: ignore[call-overload]


def stored(fleet: Fleet, job_ids: list[str]) -> list[dict[str, Any]]:
    with fleet.engine.connect() as conn:
        rows = conn.execute(
            text("SELECT id, cached, cost, request, total_tokens FROM jobs WHERE id = ANY(:ids)"),
            {"ids": job_ids},
        )
        return [dict(r._mapping) for r in rows]


def test_a_cached_request_repeated_100_times_reaches_the_provider_once(
    clean_fleet: Fleet,
) -> None:
    # Given a key that caches every response for 10 minutes
    tenant = make_key(clean_fleet.api_url, cache_ttl=600)
    client = openai.OpenAI(base_url=f"{clean_fleet.api_url}/v1", api_key=tenant.key, max_retries=0)
    # When the same chat completion is asked 100 times, one after another
    answers = {
        client.chat.completions.create(
            model="mock-model", messages=[{"role": "user", "content": "same"}], temperature=0
        )
        .choices[0]
        .message.content
        for _ in range(100)
    }
    # Then the provider saw it once, and every caller got the same answer
    assert answers == {"Echo: same"}
    assert provider_calls(clean_fleet) == 1
    with clean_fleet.engine.connect() as conn:
        cached, cost = conn.execute(
            text("SELECT count(*) FILTER (WHERE cached), sum(cost) FROM jobs WHERE cached")
        ).one()
    assert cached == 99 and cost == 0


def test_100_identical_jobs_at_once_make_one_call(clean_fleet: Fleet) -> None:
    # Given a provider that takes a second to answer, and a caching key
    tenant = make_key(clean_fleet.api_url, cache_ttl=600)
    body = chat("[mock:latency=1] all at once")

    def post(_: int) -> str:
        with clean_fleet.client(tenant.key) as client:
            response = client.post("/v1/jobs", json=body)
            assert response.status_code == 202, response.text
            return str(response.json()["id"])

    # When 100 identical jobs arrive at once
    with ThreadPoolExecutor(100) as pool:
        ids = list(pool.map(post, range(100)))
    with clean_fleet.client(tenant.key) as client:
        jobs = [wait_job(client, i) for i in ids]
    # Then one reached the provider; the 99 others were served its response, marked cached
    assert {j["status"] for j in jobs} == {"succeeded"}
    assert provider_calls(clean_fleet) == 1
    assert sum(j["cached"] for j in jobs) == 99
    hit = next(j for j in jobs if j["cached"])
    assert hit["attempts"] == 0 and hit["usage"] is None and hit["deployment"] is None
    assert hit["result"] == next(j for j in jobs if not j["cached"])["result"]


def test_identical_batch_lines_run_once(clean_fleet: Fleet, tmp_path: Path) -> None:
    tenant = make_key(clean_fleet.api_url, cache_ttl=600)
    lines = [chat("[mock:latency=0.5] the same line")] * 20 + [chat("another line")]
    path = batch_file(tmp_path / "same.jsonl", lines)
    with clean_fleet.client(tenant.key) as client, path.open("rb") as handle:
        file_id = client.post(
            "/v1/files", files={"file": ("same.jsonl", handle)}, data={"purpose": "batch"}
        ).json()["id"]
        batch = client.post(
            "/v1/batches", json={"input_file_id": file_id, "endpoint": "/v1/chat/completions"}
        ).json()
        done = wait_batch(client, batch["id"], timeout=120)
    assert done["status"] == "completed" and done["request_counts"]["completed"] == 21
    assert provider_calls(clean_fleet) == 2


def test_cache_per_request_its_opt_out_and_no_sharing_between_tenants(
    clean_fleet: Fleet,
) -> None:
    caching = make_key(clean_fleet.api_url, cache_ttl=600)
    other = make_key(clean_fleet.api_url, cache_ttl=600)
    ids: list[str] = []
    # The master key caches only when the request asks for it
    with clean_fleet.client(MASTER_KEY) as client:
        for _ in range(3):
            job = client.post("/v1/jobs", json=chat("per request", cache={"ttl": 60})).json()
            ids.append(job["id"])
            assert wait_job(client, job["id"])["status"] == "succeeded"
    assert provider_calls(clean_fleet) == 1
    # `cache: {"ttl": 0}` turns a caching key's cache off for that request
    with clean_fleet.client(caching.key) as client:
        for _ in range(2):
            job = client.post("/v1/jobs", json=chat("fresh", cache={"ttl": 0})).json()
            assert wait_job(client, job["id"])["cached"] is False
    assert provider_calls(clean_fleet) == 3
    # Two tenants asking the same thing each reach the provider once
    for tenant in (caching, other, caching, other):
        with clean_fleet.client(tenant.key) as client:
            job = client.post("/v1/jobs", json=chat("shared?")).json()
            ids.append(job["id"])
            wait_job(client, job["id"])
    assert provider_calls(clean_fleet) == 5
    # The `cache` option is the fleet's: never stored in, nor sent with, the request
    rows = stored(clean_fleet, ids)
    assert all("cache" not in r["request"] for r in rows)
    assert [r["cached"] for r in rows if r["id"] in ids[:3]].count(True) == 2


def test_identical_jobs_outwaiting_the_inline_budget_wait_outside_and_hit(
    clean_fleet: Fleet,
) -> None:
    # Given a call that takes longer than a worker's inline wait budget (3 s)
    tenant = make_key(clean_fleet.api_url, cache_ttl=600)
    body = chat("[mock:latency=4] slow and popular")
    with clean_fleet.client(tenant.key) as client:
        ids = [client.post("/v1/jobs", json=body).json()["id"] for _ in range(5)]
        jobs = [wait_job(client, i, timeout=30) for i in ids]
    # Then the others gave their slots back, waited, and were served from the cache
    assert {j["status"] for j in jobs} == {"succeeded"}
    assert provider_calls(clean_fleet) == 1
    assert sum(j["cached"] for j in jobs) == 4
