"""The job row's state machine on PostgreSQL: claims, fences, leases, the sweeper's
picks."""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
from sqlalchemy import Engine, event, select, text
from sqlalchemy.orm import Session, sessionmaker

from models.db import make_sessionmaker
from models.ids import new_id
from models.tables import Batch, Job, JobStatus, WebhookDelivery, utcnow
from tests.conftest import migrated_database
from workers import batches, jobstore
from workers.claimer import Claimer
from workers.providers.base import Usage


@pytest.fixture(scope="module")
def engine() -> Iterator[Engine]:
    with migrated_database("llmfleet_test_jobstore") as (_url, eng):
        yield eng


@pytest.fixture
def sessions(engine: Engine) -> sessionmaker[Session]:
    with engine.begin() as conn:
        conn.execute(text("TRUNCATE jobs, batches, webhook_deliveries CASCADE"))
    return make_sessionmaker(engine)


def add_job(sessions: sessionmaker[Session], **fields: object) -> str:
    now = utcnow()
    values: dict[str, object] = {
        "id": new_id("job"),
        "status": JobStatus.QUEUED,
        "kind": "chat.completions",
        "model": "m",
        "request": {"model": "m", "messages": []},
        "attempts": 0,
        "calls": 0,
        "priority": 5,
        "created_at": now,
        "queued_at": now,
        "published_at": now,
        "cancel_requested": False,
        "owner_key": "master",
        **fields,
    }
    with sessions.begin() as session:
        session.add(Job(**values))
    return str(values["id"])


def test_only_one_claim_wins_and_the_loser_cannot_finish(sessions: sessionmaker[Session]) -> None:
    job_id = add_job(sessions)
    first = jobstore.claim(sessions, job_id, lease_seconds=60)
    assert first is not None and first.attempt == 1
    assert jobstore.claim(sessions, job_id, lease_seconds=60) is None

    # The lease passes (the worker died): a new claim takes over, fencing the old one.
    with sessions.begin() as session:
        session.get(Job, job_id).lease_until = utcnow() - dt.timedelta(seconds=1)  # type: ignore[union-attr]
    second = jobstore.claim(sessions, job_id, lease_seconds=60)
    assert second is not None and second.attempt == 2
    done = jobstore.Outcome(JobStatus.SUCCEEDED, response={"ok": 1}, usage=Usage(1, 2, 3))
    assert jobstore.finish(sessions, first, done) is None
    assert jobstore.finish(sessions, second, done) == jobstore.Stored(JobStatus.SUCCEEDED)


def test_cancelled_job_is_never_claimed(sessions: sessionmaker[Session]) -> None:
    job_id = add_job(sessions, status=JobStatus.CANCELLED, cancel_requested=True)
    assert jobstore.claim(sessions, job_id, lease_seconds=60) is None


def test_defer_returns_the_job_to_the_queue_with_its_attempts(
    sessions: sessionmaker[Session],
) -> None:
    job_id = add_job(sessions, meta={"tags": "eu, fast"})
    claimed = jobstore.claim(sessions, job_id, lease_seconds=60)
    assert claimed is not None and claimed.tags == ("eu", "fast")
    record = jobstore.AttemptRecord("m", "dep-a", "RateLimitedError", 429, 12, utcnow())
    due = utcnow() + dt.timedelta(seconds=30)
    stored = jobstore.defer(sessions, claimed, due, "m: dep-a cooldown", [record])
    assert stored == jobstore.Stored(JobStatus.QUEUED)
    with sessions() as session:
        job = session.scalars(select(Job).where(Job.id == job_id)).one()
    assert (job.status, job.calls, job.wait_reason) == ("queued", 1, "m: dep-a cooldown")
    assert job.not_before == due


def deliveries(sessions: sessionmaker[Session]) -> list[WebhookDelivery]:
    with sessions() as session:
        return list(session.scalars(select(WebhookDelivery).order_by(WebhookDelivery.id)))


def test_end_state_records_its_webhook_in_the_same_transaction(
    sessions: sessionmaker[Session],
) -> None:
    # Given a job that asked for a webhook, and one that did not
    hooked = add_job(sessions, webhook_url="https://example.test/hook")
    plain = add_job(sessions)
    failed = jobstore.Outcome(JobStatus.FAILED, error={"message": "no"})

    # When both end
    stored = jobstore.finish(sessions, _claim(sessions, hooked), failed)
    assert jobstore.finish(sessions, _claim(sessions, plain), failed) == jobstore.Stored(
        JobStatus.FAILED
    )

    # Then only the first has a pending `job.failed` delivery, returned to publish
    [row] = deliveries(sessions)
    assert stored == jobstore.Stored(JobStatus.FAILED, (row.id,))
    assert (row.status, row.event_type, row.url) == (
        "pending",
        "job.failed",
        "https://example.test/hook",
    )
    assert row.payload["data"] == {"id": hooked, "status": "failed"}


def test_cancel_seen_at_defer_records_job_cancelled(sessions: sessionmaker[Session]) -> None:
    job_id = add_job(sessions, webhook_url="https://example.test/hook")
    claimed = _claim(sessions, job_id)
    with sessions.begin() as session:
        session.get(Job, job_id).cancel_requested = True  # type: ignore[union-attr]

    stored = jobstore.defer(sessions, claimed, utcnow(), "waiting", [])

    [row] = deliveries(sessions)
    assert stored == jobstore.Stored(JobStatus.CANCELLED, (row.id,))
    assert row.event_type == "job.cancelled"


def test_lost_claim_records_no_webhook(sessions: sessionmaker[Session]) -> None:
    job_id = add_job(sessions, webhook_url="https://example.test/hook")
    claimed = _claim(sessions, job_id)
    with sessions.begin() as session:
        session.get(Job, job_id).attempts = 2  # type: ignore[union-attr]
    assert jobstore.finish(sessions, claimed, jobstore.Outcome(JobStatus.SUCCEEDED)) is None
    assert deliveries(sessions) == []


def _claim(sessions: sessionmaker[Session], job_id: str) -> jobstore.Claim:
    claimed = jobstore.claim(sessions, job_id, lease_seconds=60)
    assert claimed is not None
    return claimed


def test_sweeper_picks_lost_jobs_only(sessions: sessionmaker[Session]) -> None:
    old = utcnow() - dt.timedelta(minutes=5)
    unpublished = add_job(sessions, published_at=None, queued_at=old)
    fresh_unpublished = add_job(sessions, published_at=None)
    published = add_job(sessions, queued_at=old)
    dead_worker = add_job(
        sessions, status=JobStatus.RUNNING, lease_until=utcnow() - dt.timedelta(seconds=1)
    )
    live_worker = add_job(
        sessions, status=JobStatus.RUNNING, lease_until=utcnow() + dt.timedelta(minutes=5)
    )
    lost_wake = add_job(sessions, not_before=old)
    # a batch line not dispatched yet waits for the dispatcher, however old
    undispatched_line = add_job(sessions, published_at=None, queued_at=old, batch_id="batch_x")

    picked = {job_id for job_id, _ in jobstore.requeue_stale(sessions, grace_seconds=30)}

    assert picked == {unpublished, dead_worker, lost_wake}
    assert not picked & {fresh_unpublished, published, live_worker, undispatched_line}
    with sessions() as session:
        assert session.get(Job, dead_worker).status == "queued"  # type: ignore[union-attr]


def add_batch(sessions: sessionmaker[Session], status: str) -> str:
    batch_id = new_id("batch")
    with sessions.begin() as session:
        session.add(
            Batch(
                id=batch_id,
                owner_key="master",
                endpoint="/v1/chat/completions",
                completion_window="24h",
                status=status,
            )
        )
    return batch_id


def test_lines_whose_message_was_lost_go_back_to_dispatch(
    sessions: sessionmaker[Session],
) -> None:
    # Given lines of a running batch published 11 minutes ago, past a 10-minute
    # visibility timeout, and others that must stay as they are
    running_batch, ended_batch = (
        add_batch(sessions, "in_progress"),
        add_batch(sessions, "cancelling"),
    )
    old = utcnow() - dt.timedelta(minutes=11)
    lost = [add_job(sessions, batch_id=running_batch, published_at=old) for _ in range(2)]
    kept = [
        add_job(sessions, batch_id=running_batch),  # published just now
        add_job(sessions, batch_id=running_batch, published_at=old, not_before=utcnow()),
        add_job(
            sessions,
            batch_id=running_batch,
            published_at=old,
            status=JobStatus.RUNNING,
            lease_until=utcnow() + dt.timedelta(minutes=1),
        ),
        add_job(sessions, batch_id=ended_batch, published_at=old),
        add_job(sessions, published_at=old),  # not a batch line
    ]

    # When the tick finds the batch queue empty
    assert batches.redispatch_lost(sessions, older_than_s=600) == 2

    # Then only the lost lines wait for dispatch again
    with sessions() as session:
        unpublished = set(session.scalars(select(Job.id).where(Job.published_at.is_(None))))
    assert unpublished == set(lost)
    assert not unpublished & set(kept)


def test_lines_whose_worker_died_go_back_to_dispatch_at_the_next_tick(
    sessions: sessionmaker[Session],
) -> None:
    # Given lines of a running batch left running past their lease by a dead worker,
    # and others that must stay as they are
    running_batch, ended_batch = (
        add_batch(sessions, "in_progress"),
        add_batch(sessions, "cancelling"),
    )
    old = utcnow() - dt.timedelta(minutes=1)
    lapsed = [
        add_job(
            sessions,
            batch_id=running_batch,
            published_at=old,
            status=JobStatus.RUNNING,
            attempts=1,
            lease_until=_in(-1),
        )
        for _ in range(2)
    ]
    kept = [
        add_job(
            sessions,
            batch_id=running_batch,
            published_at=old,
            status=JobStatus.RUNNING,
            attempts=1,
            lease_until=_in(30),
        ),
        add_job(
            sessions,
            batch_id=ended_batch,
            published_at=old,
            status=JobStatus.RUNNING,
            attempts=1,
            lease_until=_in(-1),
        ),
        add_job(
            sessions, published_at=old, status=JobStatus.RUNNING, attempts=1, lease_until=_in(-1)
        ),  # not a batch line: the sweeper's
    ]

    # When the tick runs
    assert batches.release_lapsed(sessions) == 2

    # Then only the lapsed lines are queued again, waiting for dispatch, and a second
    # claim of one fences the first
    with sessions() as session:
        rows = {j.id: j for j in session.scalars(select(Job))}
    assert {(rows[i].status, rows[i].published_at, rows[i].lease_until) for i in lapsed} == {
        (JobStatus.QUEUED, None, None)
    }
    assert all(rows[i].status == JobStatus.RUNNING for i in kept)
    claims = jobstore.claim_many(sessions, lapsed, lease_seconds=60)
    assert [c.attempt for c in claims] == [2, 2]


def test_one_update_claims_the_claimable_lines_of_a_message(
    sessions: sessionmaker[Session],
) -> None:
    # Given the lines of one message: two queued, one done, one cancelled, one running
    # under a live lease, one whose worker died
    queued = [add_job(sessions), add_job(sessions)]
    done = add_job(sessions, status=JobStatus.SUCCEEDED)
    cancelled = add_job(sessions, status=JobStatus.CANCELLED, cancel_requested=True)
    live = add_job(sessions, status=JobStatus.RUNNING, attempts=1, lease_until=_in(300))
    dead = add_job(sessions, status=JobStatus.RUNNING, attempts=1, lease_until=_in(-1))
    ids = [queued[1], done, dead, cancelled, live, queued[0]]

    claims = jobstore.claim_many(sessions, ids, lease_seconds=60)

    # Then the claimable ones are claimed, in the message's order, each with its fence
    assert [(c.job_id, c.attempt) for c in claims] == [(queued[1], 1), (dead, 2), (queued[0], 1)]
    assert all(c.started_at is not None for c in claims)
    # and a second delivery of the same message claims nothing
    assert jobstore.claim_many(sessions, ids, lease_seconds=60) == []


def test_ends_stored_together_keep_their_own_fences(sessions: sessionmaker[Session]) -> None:
    # Given three claimed lines: one is cancelled while it runs, one loses its claim
    kept, cancelled, lost = (add_job(sessions) for _ in range(3))
    claims = jobstore.claim_many(sessions, [kept, cancelled, lost], lease_seconds=60)
    with sessions.begin() as session:
        session.get(Job, cancelled).cancel_requested = True  # type: ignore[union-attr]
        session.get(Job, lost).attempts = 2  # type: ignore[union-attr]
    record = jobstore.AttemptRecord("m", "dep-a", None, None, 12, utcnow())
    done = jobstore.Outcome(JobStatus.SUCCEEDED, response={"ok": 1}, usage=Usage(1, 2, 3))

    # When their ends are stored in one transaction
    stored = jobstore.finish_many(sessions, [jobstore.Ending(c, done, [record]) for c in claims])

    # Then each got what its own claim allows, and only the kept claims wrote attempts
    assert stored == [
        jobstore.Stored(JobStatus.SUCCEEDED),
        jobstore.Stored(JobStatus.CANCELLED),
        None,
    ]
    with sessions() as session:
        jobs = {j.id: j for j in session.scalars(select(Job))}
        attempts = session.execute(text("SELECT job_id FROM job_attempts")).scalars().all()
    assert (jobs[kept].status, jobs[kept].total_tokens, jobs[kept].calls) == ("succeeded", 3, 1)
    assert jobs[cancelled].status == "cancelled"
    assert (jobs[lost].status, jobs[lost].calls) == ("running", 0)
    assert sorted(attempts) == sorted([kept, cancelled])
    # and ending the same claims again stores nothing more
    again = jobstore.finish_many(sessions, [jobstore.Ending(c, done, [record]) for c in claims])
    assert again == [None, None, None]


def _in(seconds: float) -> dt.datetime:
    return utcnow() + dt.timedelta(seconds=seconds)


def test_the_claimer_claims_several_messages_jobs_in_one_round_each_once(
    sessions: sessionmaker[Session], engine: Engine
) -> None:
    # Given messages asking for claims while the claimer waits for a lock on the table:
    # three jobs each, one job asked for by two of them, and a job already done
    done = add_job(sessions, status=JobStatus.SUCCEEDED)
    asks = [[add_job(sessions) for _ in range(3)] for _ in range(4)]
    asks[3][0] = asks[0][1]  # a second message of the same job
    asks[2][2] = done
    claimer = Claimer(sessions, lease_seconds=60)
    statements: list[str] = []

    def count(*args: object) -> None:
        statements.append(str(args[2]))

    try:
        with engine.connect() as locker:
            locker.execute(text("LOCK TABLE jobs IN EXCLUSIVE MODE"))
            with ThreadPoolExecutor(len(asks) + 1) as pool:
                first = pool.submit(claimer.claim, [asks[0][0]])
                time.sleep(0.2)  # the claimer's first round waits for the lock
                event.listen(engine, "before_cursor_execute", count)
                futures = [pool.submit(claimer.claim, ids) for ids in asks]
                time.sleep(0.3)
                locker.commit()
                claimed = [f.result(timeout=30) for f in futures]
            assert first.result(timeout=30)[0].job_id == asks[0][0]
    finally:
        event.remove(engine, "before_cursor_execute", count)
        claimer.close()
    # Then the four asks were claimed in one UPDATE; each asker got its claimable jobs in
    # its order, the job asked for twice went to one asker only, the done one to none
    got = [[c.job_id for c in claims] for claims in claimed]
    assert sum("UPDATE jobs" in s for s in statements) == 1, statements
    assert sorted(job for ids in got for job in ids) == sorted(
        {job for ids in asks for job in ids} - {done, asks[0][0]}
    )
    assert sum(ids.count(asks[0][1]) for ids in got) == 1
    for ids, mine in zip(asks, got, strict=True):
        assert mine == [job for job in ids if job in mine]
