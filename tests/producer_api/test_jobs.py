"""Jobs over HTTP, executed by a real worker process against the mock provider."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

from sqlalchemy import text

from models.contract import QUEUES
from tests.conftest import Fleet


def chat(content: str, **extra: object) -> dict[str, object]:
    return {"model": "mock-model", "messages": [{"role": "user", "content": content}], **extra}


def wait_job(fleet: Fleet, job_id: str, timeout: float = 60) -> dict:
    with fleet.client() as client:
        until = time.monotonic() + timeout
        job = client.get(f"/v1/jobs/{job_id}").json()
        while job["status"] in ("queued", "running") and time.monotonic() < until:
            job = client.get(f"/v1/jobs/{job_id}", params={"wait": 10}).json()
    return job


def test_job_is_executed_and_its_result_read_back(clean_fleet: Fleet) -> None:
    with clean_fleet.client() as client:
        created = client.post("/v1/jobs", json=chat("hello fleet", metadata={"team": "a"}))
        assert created.status_code == 202
        assert created.json()["status"] == "queued"
        job = client.get(f"/v1/jobs/{created.json()['id']}", params={"wait": 30}).json()

    assert job["status"] == "succeeded"
    assert job["result"]["object"] == "chat.completion"
    assert job["result"]["choices"][0]["message"]["content"] == "Echo: hello fleet"
    assert job["usage"] == {
        "prompt_tokens": 2,
        "completion_tokens": 3,
        "total_tokens": 5,
        "cached_tokens": 0,
        "cache_creation_tokens": 0,
        "reasoning_tokens": 0,
    }
    assert job["deployment"] in ("mock-a", "mock-b")
    assert job["metadata"] == {"team": "a"}
    assert job["attempts"] == 1


def test_long_poll_returns_when_the_job_ends_not_at_the_timeout(clean_fleet: Fleet) -> None:
    with clean_fleet.client() as client:
        job_id = client.post("/v1/jobs", json=chat("slow [mock:latency=1]")).json()["id"]
        started = time.monotonic()
        job = client.get(f"/v1/jobs/{job_id}", params={"wait": 30}).json()
        waited = time.monotonic() - started
    assert job["status"] == "succeeded"
    assert 0.8 < waited < 10


def test_long_poll_gives_up_after_wait_seconds(clean_fleet: Fleet) -> None:
    with clean_fleet.client() as client:
        job_id = client.post("/v1/jobs", json=chat("slow [mock:latency=4]")).json()["id"]
        started = time.monotonic()
        job = client.get(f"/v1/jobs/{job_id}", params={"wait": 1}).json()
    assert job["status"] in ("queued", "running")
    assert 0.9 < time.monotonic() - started < 3.5


def test_200_concurrent_jobs_all_complete(clean_fleet: Fleet) -> None:
    with clean_fleet.client() as client, ThreadPoolExecutor(32) as pool:
        ids = list(
            pool.map(
                lambda i: client.post("/v1/jobs", json=chat(f"job {i} [mock:latency=0.2]")).json()[
                    "id"
                ],
                range(200),
            )
        )
        jobs = list(pool.map(lambda job_id: wait_job(clean_fleet, job_id), ids))
    assert [j["status"] for j in jobs] == ["succeeded"] * 200
    assert {j["result"]["choices"][0]["message"]["content"] for j in jobs} == {
        f"Echo: job {i} [mock:latency=0.2]" for i in range(200)
    }
    assert clean_fleet.mock_stats()["calls"] == 200


def test_provider_400_fails_the_job_with_the_providers_message(clean_fleet: Fleet) -> None:
    with clean_fleet.client() as client:
        job_id = client.post("/v1/jobs", json=chat("please [mock:status=400]")).json()["id"]
    job = wait_job(clean_fleet, job_id)
    assert job["status"] == "failed"
    assert job["result"] is None
    assert job["error"]["type"] == "invalid_request_error"
    assert "refused by the mock provider" in job["error"]["message"]
    assert set(job["error"]) == {"message", "type", "param", "code"}
    # A request error is not retried: one call.
    assert clean_fleet.mock_stats()["calls"] == 1


def test_list_pages_by_cursor_and_filters_by_status(clean_fleet: Fleet) -> None:
    with clean_fleet.client() as client:
        ids = [client.post("/v1/jobs", json=chat(f"n{i}")).json()["id"] for i in range(5)]
        for job_id in ids:
            wait_job(clean_fleet, job_id)
        failed = client.post("/v1/jobs", json=chat("x [mock:status=400]")).json()["id"]
        wait_job(clean_fleet, failed)

        first = client.get("/v1/jobs", params={"limit": 4}).json()
        second = client.get("/v1/jobs", params={"limit": 4, "after": first["last_id"]}).json()
        only_failed = client.get("/v1/jobs", params={"status": "failed"}).json()

    assert first["has_more"] is True and second["has_more"] is False
    listed = [j["id"] for j in first["data"] + second["data"]]
    assert listed == [failed, *reversed(ids)]
    assert [j["id"] for j in only_failed["data"]] == [failed]


def _pause_consumers(fleet: Fleet) -> None:
    for queue in QUEUES:
        fleet.celery.control.cancel_consumer(queue, reply=True, timeout=5, limit=1)


def _resume_consumers(fleet: Fleet) -> None:
    for queue in QUEUES:
        replies = fleet.celery.control.add_consumer(queue, reply=True, timeout=5, limit=1)
        assert replies, f"the worker did not confirm consuming {queue} again"


def test_cancelled_queued_job_never_reaches_the_provider(clean_fleet: Fleet) -> None:
    # Given a job that is queued while no worker consumes
    _pause_consumers(clean_fleet)
    try:
        with clean_fleet.client() as client:
            job_id = client.post("/v1/jobs", json=chat("never run me")).json()["id"]
            # When it is cancelled
            cancelled = client.delete(f"/v1/jobs/{job_id}").json()
    finally:
        _resume_consumers(clean_fleet)
    # Then its message is consumed and dropped, and the provider never saw it
    clean_fleet.broker.wait_idle()
    assert cancelled["status"] == "cancelled"
    assert wait_job(clean_fleet, job_id)["status"] == "cancelled"
    assert clean_fleet.mock_stats()["calls"] == 0


def test_cancelling_a_running_job_stops_it(clean_fleet: Fleet) -> None:
    with clean_fleet.client() as client:
        job_id = client.post("/v1/jobs", json=chat("long [mock:latency=2]")).json()["id"]
        until = time.monotonic() + 10
        while client.get(f"/v1/jobs/{job_id}").json()["status"] != "running":
            assert time.monotonic() < until
            time.sleep(0.05)
        client.delete(f"/v1/jobs/{job_id}")
    job = wait_job(clean_fleet, job_id)
    assert job["status"] == "cancelled"
    assert job["result"] is None
    assert job["error"]["code"] == "job_cancelled"


def test_same_message_delivered_twice_calls_the_provider_once(clean_fleet: Fleet) -> None:
    _pause_consumers(clean_fleet)
    try:
        with clean_fleet.client() as client:
            job_id = client.post("/v1/jobs", json=chat("once [mock:latency=0.5]")).json()["id"]
        # The broker delivers the same job's message a second time.
        clean_fleet.celery.send_task("llmfleet.execute", args=[job_id], queue=QUEUES[1])
    finally:
        _resume_consumers(clean_fleet)
    clean_fleet.broker.wait_idle()
    job = wait_job(clean_fleet, job_id)
    assert job["status"] == "succeeded"
    assert job["attempts"] == 1
    assert clean_fleet.mock_stats()["calls"] == 1


def test_job_past_its_deadline_ends_expired_without_a_call(clean_fleet: Fleet) -> None:
    _pause_consumers(clean_fleet)
    try:
        with clean_fleet.client() as client:
            job_id = client.post("/v1/jobs", json=chat("late", completion_window="1s")).json()["id"]
        time.sleep(1.5)
    finally:
        _resume_consumers(clean_fleet)
    job = wait_job(clean_fleet, job_id)
    assert job["status"] == "expired"
    assert job["error"]["code"] == "job_expired"
    assert clean_fleet.mock_stats()["calls"] == 0


def test_no_prompt_in_task_arguments(clean_fleet: Fleet) -> None:
    """A message carries the job id only: the broker never holds the prompt (headers
    and decoded bodies of every waiting message, on Redis or RabbitMQ)."""
    _pause_consumers(clean_fleet)
    try:
        with clean_fleet.client() as client:
            client.post("/v1/jobs", json=chat("a very secret prompt"))
        raw = b"".join(clean_fleet.broker.peek())
    finally:
        _resume_consumers(clean_fleet)
    assert raw and b"job_" in raw
    assert b"secret" not in raw


def test_rows_are_the_truth(clean_fleet: Fleet) -> None:
    with clean_fleet.client() as client:
        job_id = client.post("/v1/jobs", json=chat("persist me")).json()["id"]
    wait_job(clean_fleet, job_id)
    with clean_fleet.engine.connect() as conn:
        row = conn.execute(
            text("SELECT status, total_tokens, request FROM jobs WHERE id = :id"), {"id": job_id}
        ).one()
    assert row.status == "succeeded" and row.total_tokens == 5
    assert row.request["messages"][0]["content"] == "persist me"
