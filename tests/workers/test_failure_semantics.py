"""What a provider failure means for a job (docs/ROUTING.md, "What a failure means"),
as a table of in-process runs: a job row in PostgreSQL, router state in Redis, the
provider an `httpx.MockTransport` answering as scripted, and the whole of
`execute.execute_job` (claim, route, call, retry, fall back, wait, store).

capacity (429) -> the job waits; refused (400, 422) -> fails at once; 401/403/404 ->
the other deployments, the fallbacks, then fails with the provider's status; context
window / content policy -> their fallback lists, then fail; transient (5xx, timeouts,
resets, malformed replies) -> `num_retries` with backoff, the fallbacks, then fails
with the last error.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Iterator

import httpx2 as httpx
import pytest
from sqlalchemy import Engine, update

from models.tables import Job, JobStatus, utcnow
from tests.conftest import migrated_database
from tests.support.core import (
    CoreFactory,
    Reply,
    deployment,
    malformed,
    ok,
    status,
    timeout,
)


@pytest.fixture(scope="module")
def database() -> Iterator[tuple[str, Engine]]:
    with migrated_database("llmfleet_test_failures") as db:
        yield db


TWO = [deployment("main", "a"), deployment("main", "b")]


@pytest.mark.parametrize(
    ("replies", "status_", "http_status", "calls"),
    [
        # refused: the request is at fault; one call, no retry, no other deployment
        ({"a": [status(400)], "b": [status(400)]}, JobStatus.FAILED, 400, 1),
        ({"a": [status(422)], "b": [status(422)]}, JobStatus.FAILED, 422, 1),
        # 401/403/404: each deployment once, then the provider's status
        ({"a": [status(401)], "b": [status(401)]}, JobStatus.FAILED, 401, 2),
        ({"a": [status(403)], "b": [status(403)]}, JobStatus.FAILED, 403, 2),
        ({"a": [status(404)], "b": [status(404)]}, JobStatus.FAILED, 404, 2),
        # ... but a deployment that can serve it does
        ({"a": [status(401)], "b": [ok]}, JobStatus.SUCCEEDED, None, 2),
        # transient: num_retries (2) more tries across the deployments, then the last error
        ({"a": [status(500)], "b": [status(500)]}, JobStatus.FAILED, 500, 3),
        ({"a": [status(503)], "b": [status(502)]}, JobStatus.FAILED, None, 3),
        ({"a": [timeout], "b": [timeout]}, JobStatus.FAILED, 504, 3),
        ({"a": [malformed], "b": [malformed]}, JobStatus.FAILED, 502, 3),
        ({"a": [status(500)], "b": [ok]}, JobStatus.SUCCEEDED, None, 2),
        # capacity: a 429 never fails the job; it waits
        (
            {"a": [status(429, retry_after="30")], "b": [status(429, retry_after="30")]},
            JobStatus.QUEUED,
            None,
            2,
        ),
        # a 5xx with a long Retry-After is the provider asking for time: it waits too
        (
            {"a": [status(503, retry_after="30")], "b": [status(503, retry_after="30")]},
            JobStatus.QUEUED,
            None,
            1,
        ),
    ],
)
def test_failure_table(
    core: CoreFactory,
    replies: dict[str, list[Reply]],
    status_: JobStatus,
    http_status: int | None,
    calls: int,
) -> None:
    c = core(replies, TWO)
    started = time.monotonic()
    job = c.run()
    assert job.status == status_, job.error
    assert sum(c.provider.calls.values()) == calls
    assert len(c.attempts(job.id)) == calls
    if status_ is JobStatus.FAILED:
        assert job.error is not None and job.error["message"]
        assert job.error["code"] not in ("job_expired", "job_crashed")
        if http_status is not None:
            assert job.error["status_code"] == http_status
            assert c.attempts(job.id)[-1].status_code == http_status
    if status_ is JobStatus.QUEUED:
        assert job.not_before is not None and job.wait_reason
    assert time.monotonic() - started < 10


@pytest.mark.parametrize(
    ("first", "setting"),
    [
        (status(400, "context_length_exceeded"), "context_window_fallbacks"),
        (status(400, "content_policy_violation"), "content_policy_fallbacks"),
        (status(500), "fallbacks"),
        (status(401), "fallbacks"),
    ],
)
def test_each_failure_takes_its_fallback_list(
    core: CoreFactory, first: Reply, setting: str
) -> None:
    c = core(
        {"a": [first], "z": [ok]},
        [deployment("main", "a"), deployment("spare", "z")],
        **{setting: [{"main": ["spare"]}]},
    )
    job = c.run()
    assert job.status == JobStatus.SUCCEEDED, job.error
    assert job.served_group == "spare" and job.deployment_id == "z"


def test_a_failure_with_no_fallback_for_it_fails_with_the_providers_error(
    core: CoreFactory,
) -> None:
    # Given fallbacks for 5xx only, a context-window error has nowhere to go
    c = core(
        {"a": [status(400, "context_length_exceeded")], "z": [ok]},
        [deployment("main", "a"), deployment("spare", "z")],
        fallbacks=[{"main": ["spare"]}],
    )
    job = c.run()
    assert job.status == JobStatus.FAILED and job.error is not None
    assert job.error["status_code"] == 400 and c.provider.calls == {"a": 1}


def test_cooldowns_from_its_own_failures_end_the_job_not_a_wait(
    core: CoreFactory,
) -> None:
    # Given deployments that cool down at the first failure
    c = core({"a": [status(500)], "b": [status(500)]}, TWO, allowed_fails=0, num_retries=5)
    job = c.run()
    # Then once both cooled after failing this job, it fails instead of waiting
    assert job.status == JobStatus.FAILED and job.error is not None
    assert job.error["status_code"] == 500
    assert sum(c.provider.calls.values()) == 2


def test_cooldowns_from_others_failures_are_waited_out(core: CoreFactory) -> None:
    c = core({"a": [status(500)], "b": [status(500)]}, TWO, allowed_fails=0, cooldown_time=30)
    first = c.run()
    assert first.status == JobStatus.FAILED
    # A job that finds every deployment cooling by another job's failures waits for them
    second = c.run()
    assert second.status == JobStatus.QUEUED, second.error
    assert second.wait_reason is not None and "cooldown" in second.wait_reason
    assert sum(c.provider.calls.values()) == 2


def test_a_cancel_stops_the_retries(core: CoreFactory) -> None:
    c = core({"a": [status(500)], "b": [status(500)]}, TWO)

    def cancel_then_fail(request: httpx.Request) -> httpx.Response:
        with c.sessions.begin() as session:
            session.execute(update(Job).values(cancel_requested=True))
        return status(500)(request)

    c.provider.replies["a"] = c.provider.replies["b"] = [cancel_then_fail]
    job = c.run()
    assert job.status == JobStatus.CANCELLED
    assert sum(c.provider.calls.values()) == 1


@pytest.mark.parametrize(
    ("batch_id", "ends"), [(None, JobStatus.CANCELLED), ("batch_x", JobStatus.SUCCEEDED)]
)
def test_a_cancel_during_the_call_keeps_a_batch_lines_answer(
    core: CoreFactory, batch_id: str | None, ends: JobStatus
) -> None:
    c = core({"a": [ok], "b": [ok]}, TWO)

    def cancelled_while_answering(request: httpx.Request) -> httpx.Response:
        with c.sessions.begin() as session:
            session.execute(update(Job).values(cancel_requested=True))
        return ok(request)

    c.provider.replies["a"] = c.provider.replies["b"] = [cancelled_while_answering]
    job = c.run(batch_id=batch_id)
    # An interactive job asked to cancel ends cancelled; a batch line that got its
    # answer (and is billed for it) keeps it, for the batch's output file
    assert job.status == ends
    assert (job.response is not None) is (ends == JobStatus.SUCCEEDED)
    assert job.total_tokens == 4 and sum(c.provider.calls.values()) == 1


def test_a_job_past_its_deadline_ends_expired_without_a_call(core: CoreFactory) -> None:
    c = core({"a": [ok], "b": [ok]}, TWO)
    job = c.run(deadline=utcnow() - dt.timedelta(seconds=1))
    assert job.status == JobStatus.EXPIRED and c.provider.calls == {}
