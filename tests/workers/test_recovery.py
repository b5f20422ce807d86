"""Leases renewed while a job runs, and re-publishing from the database when Redis lost
its data; on PostgreSQL and a real Redis (whole-fleet faults: test_faults.py)."""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Iterator

import pytest
import redis
from sqlalchemy import Engine, select, text
from sqlalchemy.orm import Session, sessionmaker

from models.db import make_sessionmaker
from models.fair_intake import WAITING_WORKER
from models.redis_keys import DELAYED_JOBS, EPOCH
from models.tables import Job, utcnow
from tests.conftest import migrated_database
from tests.support.brokers import REDIS_BASE
from tests.workers.test_jobstore import add_job
from workers import jobstore, recovery
from workers.delayed import DelayedJobs
from workers.leases import Leases

RECOVERY_DB = 8


@pytest.fixture(scope="module")
def engine() -> Iterator[Engine]:
    with migrated_database("llmfleet_test_recovery") as (_url, eng):
        yield eng


@pytest.fixture
def sessions(engine: Engine) -> sessionmaker[Session]:
    with engine.begin() as conn:
        conn.execute(text("TRUNCATE jobs CASCADE"))
    return make_sessionmaker(engine)


@pytest.fixture
def client() -> Iterator[redis.Redis]:
    conn = redis.Redis.from_url(f"{REDIS_BASE}/{RECOVERY_DB}")
    conn.flushdb()
    yield conn
    conn.close()


def lease_of(sessions: sessionmaker[Session], job_id: str) -> dt.datetime | None:
    with sessions() as session:
        return session.scalar(select(Job.lease_until).where(Job.id == job_id))


def test_a_held_job_keeps_its_lease_and_others_do_not(sessions: sessionmaker[Session]) -> None:
    held, dropped = add_job(sessions), add_job(sessions)
    for job_id in (held, dropped):
        assert jobstore.claim(sessions, job_id, lease_seconds=3) is not None
    leases = Leases(sessions, lease_seconds=3, max_seconds=600)
    before = lease_of(sessions, held)
    with leases.holding(held, 1):
        time.sleep(0.05)
        assert leases.renew() == 1
    leases.stop()
    after = lease_of(sessions, held)
    assert before is not None and after is not None and after > before
    other = lease_of(sessions, dropped)
    assert other is not None and other < after
    # once the block ended, nothing is renewed any more
    assert leases.renew() == 0


def test_no_renewal_past_the_job_timeout(sessions: sessionmaker[Session]) -> None:
    job_id = add_job(sessions)
    assert jobstore.claim(sessions, job_id, lease_seconds=3) is not None
    leases = Leases(sessions, lease_seconds=3, max_seconds=0)
    with leases.holding(job_id, 1):
        assert leases.renew() == 0
    leases.stop()


def test_a_run_taken_over_renews_nothing(sessions: sessionmaker[Session]) -> None:
    # Given a claim whose lease lapsed and whose job another worker then claimed
    job_id = add_job(sessions)
    first = jobstore.claim(sessions, job_id, lease_seconds=0.01)
    assert first is not None
    time.sleep(0.05)
    assert job_id in [i for i, _ in jobstore.requeue_stale(sessions)]
    second = jobstore.claim(sessions, job_id, lease_seconds=3)
    assert second is not None and second.attempt == first.attempt + 1
    before = lease_of(sessions, job_id)
    # When the first run, still going, renews what it holds
    leases = Leases(sessions, lease_seconds=600, max_seconds=600)
    with leases.holding(job_id, first.attempt):
        renewed = leases.renew()
    leases.stop()
    # Then the second claim's lease is left as it was: its own worker keeps it alive
    assert renewed == 0 and lease_of(sessions, job_id) == before


def test_a_lost_epoch_republishes_queued_work_once(
    sessions: sessionmaker[Session], client: redis.Redis
) -> None:
    soon = utcnow() + dt.timedelta(minutes=5)
    queued = add_job(sessions)
    waiting = add_job(sessions, not_before=soon)
    # a job that waited for a free worker in a fleet room (its not_before only a lease)
    for_a_worker = add_job(sessions, not_before=soon, wait_reason=WAITING_WORKER)
    unpublished = add_job(sessions, published_at=None)
    running = add_job(sessions)
    assert jobstore.claim(sessions, running, lease_seconds=60) is not None
    published: list[str] = []

    def publish(job_id: str, _priority: int) -> None:
        published.append(job_id)

    delayed = DelayedJobs(client)
    # A Redis without the marker (a new one, or one that lost its data)
    assert recovery.epoch_lost([client]) is True
    assert recovery.republish_queued(sessions, delayed, publish) == 3
    # the fleet rooms went with the data: that job is published at once, not after its lease
    assert sorted(published) == sorted([queued, for_a_worker])
    entries = client.zrange(DELAYED_JOBS, 0, -1, withscores=True)
    members = {member.decode().partition("|")[0]: score for member, score in entries}
    assert members == {waiting: int(soon.timestamp() * 1000)}
    # The marker is back: the next sweep re-publishes nothing
    assert client.exists(EPOCH) and recovery.epoch_lost([client]) is False
    # until the data is lost again
    client.flushdb()
    assert recovery.epoch_lost([client]) is True
    assert unpublished not in published and running not in published
