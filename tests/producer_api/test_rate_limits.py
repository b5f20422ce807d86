"""A key's limits at intake, fleet-wide: rpm (exact sliding minute), tpm (estimate at
intake, corrected by the real usage at the end), parallel jobs, the priority ceiling,
and the batch allowance — which batch lines count against instead of rpm."""

from __future__ import annotations

import os
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from tests.conftest import Fleet
from tests.support.tenancy import Minted, batch_file, chat, make_key, wait_batch, wait_job


def post_jobs(fleet: Fleet, key: str, bodies: list[dict[str, object]]) -> list[httpx.Response]:
    """All at once, from as many threads."""

    def post(body: dict[str, object]) -> httpx.Response:
        with fleet.client(key) as client:
            return client.post("/v1/jobs", json=body)

    with ThreadPoolExecutor(len(bodies)) as pool:
        return list(pool.map(post, bodies))


def assert_rpm_refusal(response: httpx.Response) -> int:
    assert response.status_code == 429, response.text
    error = response.json()["error"]
    assert (error["type"], error["code"], error["param"]) == (
        "rate_limit_error",
        "rate_limit_exceeded",
        "rpm",
    )
    assert "30 interactive jobs per minute (rpm)" in error["message"]
    retry = int(response.headers["Retry-After"])
    assert 1 <= retry <= 60
    return retry


def test_rpm_30_of_60_at_once_the_rest_429_with_retry_after(clean_fleet: Fleet) -> None:
    # Given a key allowed 30 interactive jobs a minute
    tenant = make_key(clean_fleet.api_url, rpm=30)
    # When it sends 60 jobs at once
    started = time.monotonic()
    responses = post_jobs(clean_fleet, tenant.key, [chat(f"n{i}") for i in range(60)])
    # Then 30 are accepted at once and 30 are refused, each saying when to retry
    accepted = [r for r in responses if r.status_code == 202]
    refused = [r for r in responses if r.status_code != 202]
    assert len(accepted) == 30 and len(refused) == 30
    retries = [assert_rpm_refusal(r) for r in refused]
    assert min(retries) >= 60 - (time.monotonic() - started) - 2
    # And the window holds: a minute has not passed, so the next one is refused too
    time.sleep(2)
    assert_rpm_refusal(post_jobs(clean_fleet, tenant.key, [chat("again")])[0])
    # The 30 accepted all ran
    with clean_fleet.client(tenant.key) as client:
        for response in accepted:
            assert wait_job(client, response.json()["id"])["status"] == "succeeded"


@pytest.mark.skipif(not os.environ.get("LLMFLEET_SLOW_TESTS"), reason="waits a minute")
def test_rpm_window_reopens_after_a_minute_and_never_holds_more(clean_fleet: Fleet) -> None:
    tenant = make_key(clean_fleet.api_url, rpm=30)
    times: list[float] = []
    until = time.monotonic() + 75
    while time.monotonic() < until:
        for response in post_jobs(clean_fleet, tenant.key, [chat("x")] * 10):
            if response.status_code == 202:
                times.append(time.monotonic())
        time.sleep(1)
    assert len(times) > 30
    for i, start in enumerate(times):
        assert len([t for t in times[i:] if t - start < 59]) <= 30


def test_tpm_counts_the_estimate_then_the_real_usage(clean_fleet: Fleet) -> None:
    # Stay clear of a minute boundary: the tpm window is the clock minute
    if time.time() % 60 > 45:
        time.sleep(61 - time.time() % 60)
    tenant = make_key(clean_fleet.api_url, tpm=1000)
    with clean_fleet.client(tenant.key) as client:
        # Given a job that may use 900 tokens (its max_tokens), estimated so at intake
        first = client.post("/v1/jobs", json=chat("hi", max_tokens=900))
        assert first.status_code == 202
        # Then another that may use 200 does not fit the minute
        refused = client.post("/v1/jobs", json=chat("hi", max_tokens=200))
        assert refused.status_code == 429
        error = refused.json()["error"]
        assert error["param"] == "tpm" and "1000 tokens per minute (tpm)" in error["message"]
        assert 1 <= int(refused.headers["Retry-After"]) <= 60
        # When the first ends having used a few tokens, the difference is given back
        done = wait_job(client, first.json()["id"])
        assert done["status"] == "succeeded" and done["usage"]["total_tokens"] < 50
        assert client.post("/v1/jobs", json=chat("hi", max_tokens=200)).status_code == 202


def test_max_parallel_jobs_counts_queued_and_running_jobs(clean_fleet: Fleet) -> None:
    tenant = make_key(clean_fleet.api_url, max_parallel_jobs=2)
    with clean_fleet.client(tenant.key) as client:
        slow = [client.post("/v1/jobs", json=chat(f"[mock:latency=1.5] {i}")) for i in range(2)]
        assert [r.status_code for r in slow] == [202, 202]
        refused = client.post("/v1/jobs", json=chat("third"))
        assert (
            refused.status_code == 429 and refused.json()["error"]["param"] == "max_parallel_jobs"
        )
        assert "2 interactive jobs queued or running at once" in refused.json()["error"]["message"]
        # A cancelled queued job and a finished one give their slots back
        for response in slow:
            wait_job(client, response.json()["id"])
        waiting = client.post("/v1/jobs", json=chat("later", completion_window="1h"))
        assert waiting.status_code == 202
        client.delete(f"/v1/jobs/{waiting.json()['id']}")
        # (a worker may have claimed it already: then it ends when its call returns)
        assert wait_job(client, waiting.json()["id"])["status"] in ("cancelled", "succeeded")
        ok = [client.post("/v1/jobs", json=chat(f"after {i}")).status_code for i in range(2)]
        assert ok == [202, 202]


def test_priority_ceiling_lowers_interactive_jobs(clean_fleet: Fleet) -> None:
    tenant = make_key(clean_fleet.api_url, max_priority=3)
    with clean_fleet.client(tenant.key) as client:
        job = client.post("/v1/jobs", json=chat("urgent", priority=9)).json()
        assert job["priority"] == 3
        assert wait_job(client, job["id"])["status"] == "succeeded"


def submit_batch(fleet: Fleet, tenant: Minted, path: Path) -> httpx.Response:
    with fleet.client(tenant.key) as client, path.open("rb") as handle:
        file_id = client.post(
            "/v1/files", files={"file": (path.name, handle)}, data={"purpose": "batch"}
        ).json()["id"]
        return client.post(
            "/v1/batches", json={"input_file_id": file_id, "endpoint": "/v1/chat/completions"}
        )


def test_batch_lines_count_against_the_allowance_not_rpm(
    clean_fleet: Fleet, tmp_path: Path
) -> None:
    # Given a key allowed 2 interactive jobs a minute and 3 batch lines at once
    tenant = make_key(clean_fleet.api_url, rpm=2, max_batch_lines=3)
    slow = chat("[mock:latency=1] slow")
    # A batch larger than the allowance is refused whole, saying so
    too_big = submit_batch(clean_fleet, tenant, batch_file(tmp_path / "4.jsonl", [slow] * 4))
    assert too_big.status_code == 429
    error = too_big.json()["error"]
    assert error["code"] == "batch_allowance_exceeded" and "split it" in error["message"]
    assert too_big.headers["Retry-After"]
    # Three lines fit; while they run, one more line does not
    first = submit_batch(clean_fleet, tenant, batch_file(tmp_path / "3.jsonl", [slow] * 3))
    assert first.status_code == 200 and first.json()["status"] == "in_progress"
    more = submit_batch(clean_fleet, tenant, batch_file(tmp_path / "1.jsonl", [chat("one")]))
    assert more.status_code == 429 and "3 are" in more.json()["error"]["message"]
    # Batch lines did not use the key's rpm: both interactive jobs are accepted
    assert [r.status_code for r in post_jobs(clean_fleet, tenant.key, [chat("i")] * 2)] == [202] * 2
    with clean_fleet.client(tenant.key) as client:
        assert wait_batch(client, first.json()["id"])["request_counts"]["completed"] == 3
    # Once the lines have run, the allowance is free again
    again = submit_batch(clean_fleet, tenant, batch_file(tmp_path / "1b.jsonl", [chat("one")]))
    assert again.status_code == 200
