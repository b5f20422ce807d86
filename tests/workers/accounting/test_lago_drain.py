"""The outbox drain against a Lago stand-in that enforces Lago's rules: every event
recorded exactly once through resends, outages, rate limits and bad events."""

from __future__ import annotations

import random
from collections.abc import Iterator

import httpx2 as httpx
import pytest
from pydantic import SecretStr
from sqlalchemy import Engine, func, select, text, update
from sqlalchemy.orm import Session, sessionmaker

from models.accounting import OutboxStatus, UsageOutbox
from models.db import make_sessionmaker
from models.settings import CommonSettings
from models.tables import utcnow
from tests.conftest import migrated_database
from tests.support.lago import API_KEY, LagoStandIn
from workers.accounting.lago import drain


@pytest.fixture(scope="module")
def engine() -> Iterator[Engine]:
    with migrated_database("llmfleet_test_lago") as (_url, eng):
        yield eng


@pytest.fixture
def sessions(engine: Engine) -> sessionmaker[Session]:
    with engine.begin() as conn:
        conn.execute(text("TRUNCATE usage_outbox"))
    return make_sessionmaker(engine)


@pytest.fixture
def lago() -> Iterator[LagoStandIn]:
    stand_in = LagoStandIn()
    stand_in.start()
    yield stand_in
    stand_in.stop()


def settings(lago: LagoStandIn) -> CommonSettings:
    return CommonSettings(LAGO_API_URL=lago.url, LAGO_API_KEY=SecretStr(API_KEY))  # type: ignore[call-arg]


def add_events(sessions: sessionmaker[Session], n: int, start: int = 0, **extra: object) -> None:
    with sessions.begin() as session:
        for i in range(start, start + n):
            session.add(
                UsageOutbox(
                    transaction_id=f"job_{i}:1:llm_input_tokens",
                    external_subscription_id="sub-1",
                    code="llm_input_tokens",
                    timestamp=1_763_700_000 + i,
                    properties={"value": str(i + 1), "model": "m", **extra},
                    status=OutboxStatus.PENDING,
                    attempts=0,
                    next_attempt_at=utcnow(),
                    created_at=utcnow(),
                )
            )


def statuses(sessions: sessionmaker[Session]) -> dict[str, int]:
    with sessions() as session:
        rows = session.execute(
            select(UsageOutbox.status, func.count()).group_by(UsageOutbox.status)
        ).all()
    return {status: n for status, n in rows}


def make_due(sessions: sessionmaker[Session]) -> None:
    with sessions.begin() as session:
        session.execute(update(UsageOutbox).values(next_attempt_at=utcnow()))


def run(sessions: sessionmaker[Session], lago: LagoStandIn, timeout: float = 5.0):  # type: ignore[no-untyped-def]
    with httpx.Client() as http:
        return drain(sessions, http, settings(lago), random.Random(1), timeout=timeout)


def test_events_go_in_batches_of_at_most_100(
    sessions: sessionmaker[Session], lago: LagoStandIn
) -> None:
    add_events(sessions, 250)
    report = run(sessions, lago)
    assert (report.sent, report.requests) == (250, 3)
    assert len(lago.events) == 250 and statuses(sessions) == {"sent": 250}


def test_resent_events_count_as_recorded_and_the_rest_still_go(
    sessions: sessionmaker[Session], lago: LagoStandIn
) -> None:
    add_events(sessions, 30)
    run(sessions, lago)
    # The same 30 come back (a crash after Lago recorded them), with 20 new ones.
    with sessions.begin() as session:
        session.execute(update(UsageOutbox).values(status=OutboxStatus.PENDING))
    add_events(sessions, 20, start=30)
    report = run(sessions, lago)
    assert lago.rejected_batches == 1  # Lago rejected the mixed batch whole
    assert report.sent == 50 and len(lago.events) == 50
    assert statuses(sessions) == {"sent": 50}


def test_one_bad_event_is_isolated_and_dead(
    sessions: sessionmaker[Session], lago: LagoStandIn
) -> None:
    add_events(sessions, 10)
    with sessions.begin() as session:
        bad = session.scalars(
            select(UsageOutbox).where(
                UsageOutbox.id == select(func.min(UsageOutbox.id)).scalar_subquery()
            )
        ).one()
        bad.properties = {"value": 7, "model": "m"}  # Lago wants strings
    report = run(sessions, lago)
    assert report.dead == 1 and "properties" in report.dead_reasons[0]
    assert report.sent == 9 and len(lago.events) == 9
    assert statuses(sessions) == {"sent": 9, "dead": 1}


@pytest.mark.parametrize("mode", ["5xx", "429"])
def test_outage_and_rate_limit_leave_events_for_later(
    sessions: sessionmaker[Session], lago: LagoStandIn, mode: str
) -> None:
    add_events(sessions, 5)
    lago.mode, lago.reset_seconds = mode, 30
    report = run(sessions, lago)
    assert report.deferred == 5 and statuses(sessions) == {"pending": 5}
    with sessions() as session:
        row = session.scalars(select(UsageOutbox)).first()
        assert row is not None and row.attempts == 1 and row.last_error
        wait = (row.next_attempt_at - utcnow()).total_seconds()
    if mode == "429":
        assert 28 <= wait <= 30  # x-ratelimit-reset honoured
    assert run(sessions, lago).requests == 0  # not due yet
    lago.mode = "ok"
    make_due(sessions)
    assert run(sessions, lago).sent == 5 and len(lago.events) == 5


def test_a_hanging_lago_times_out_and_loses_nothing(
    sessions: sessionmaker[Session], lago: LagoStandIn
) -> None:
    add_events(sessions, 3)
    lago.mode, lago.hang_seconds = "hang", 3
    report = run(sessions, lago, timeout=0.5)
    assert report.deferred == 3 and statuses(sessions) == {"pending": 3}
    lago.mode = "ok"
    make_due(sessions)
    assert run(sessions, lago).sent == 3
