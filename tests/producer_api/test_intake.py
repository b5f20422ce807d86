"""Accepted jobs stored and published in groups (producer_api/intake.py), on a real
PostgreSQL database and a real broker: every job of a burst is stored and published
once, in far fewer commits than jobs, and a row the database refuses fails alone."""

from __future__ import annotations

import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
from sqlalchemy import Engine, event, select, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from models.db import make_sessionmaker
from models.settings import CommonSettings
from models.tables import Job
from producer_api.intake import Intake
from producer_api.publish import Publisher
from tests.conftest import migrated_database
from tests.support.brokers import Broker, broker_for
from tests.support.core import queued_job

BROKER_DB = 13


@pytest.fixture(scope="module")
def database() -> Iterator[tuple[str, Engine]]:
    with migrated_database("llmfleet_test_intake") as (url, engine):
        yield url, engine


@pytest.fixture
def parts(
    database: tuple[str, Engine],
) -> Iterator[tuple[Intake, sessionmaker[Session], Broker, list[int]]]:
    """An Intake on the database and a broker of its own; the list counts commits."""
    url, engine = database
    broker = broker_for(BROKER_DB)
    broker.reset()
    settings = CommonSettings.model_validate({"DATABASE_URL": url, "BROKER_URL": broker.url})
    publisher = Publisher(settings)
    sessions = make_sessionmaker(engine)
    commits: list[int] = []

    def count(_conn: object) -> None:
        commits.append(1)

    event.listen(engine, "commit", count)
    intake = Intake(sessions, publisher)
    try:
        yield intake, sessions, broker, commits
    finally:
        intake.close()
        event.remove(engine, "commit", count)
        publisher.close()
        broker.close()


def job(job_id: str | None = None) -> Job:
    return queued_job("mock-model", job_id)


def test_a_burst_is_stored_and_published_once_in_few_commits(
    parts: tuple[Intake, sessionmaker[Session], Broker, list[int]],
) -> None:
    intake, sessions, broker, commits = parts
    # Given 200 jobs handed over from 50 threads at once
    jobs = [job() for _ in range(200)]
    with ThreadPoolExecutor(50) as pool:
        list(pool.map(lambda j: intake.store(j).result(timeout=30), jobs))
    # Then every one is stored, marked published and has one message waiting
    ids = {j.id for j in jobs}
    with sessions() as session:
        rows = session.scalars(select(Job).where(Job.id.in_(ids))).all()
    assert {r.id for r in rows} == ids
    assert all(r.published_at is not None for r in rows)
    assert broker.waiting() == 200
    # in groups: two commits a round (insert, mark), far fewer than two a job
    assert len(commits) < 200, len(commits)


def test_a_row_the_database_refuses_fails_alone(
    database: tuple[str, Engine],
    parts: tuple[Intake, sessionmaker[Session], Broker, list[int]],
) -> None:
    _, engine = database
    intake, sessions, broker, _ = parts
    taken = job()
    intake.store(taken).result(timeout=30)
    # Given a group in which one row repeats a stored job's id, handed over while the
    # writer waits for a lock on the table, so that it takes them in one round
    group = [job() for _ in range(5)] + [job(taken.id)] + [job() for _ in range(5)]
    with engine.connect() as locker:
        locker.execute(text("LOCK TABLE jobs IN EXCLUSIVE MODE"))
        blocked = intake.store(job())
        futures = [intake.store(j) for j in group]
        time.sleep(0.3)
        assert not blocked.done()
        locker.commit()
    # Then that one fails with the database's refusal, and the others are stored and
    # published
    blocked.result(timeout=30)
    outcomes = [f.exception(timeout=30) for f in futures]
    assert [o is None for o in outcomes] == [True] * 5 + [False] + [True] * 5
    assert isinstance(outcomes[5], IntegrityError)
    fine = {j.id for j in group} - {taken.id}
    with sessions() as session:
        stored = set(session.scalars(select(Job.id).where(Job.id.in_(fine))))
    assert stored == fine
    assert broker.waiting() == 2 + len(fine)
