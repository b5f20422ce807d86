"""A claim's charge is written by `jobstore.finish`, in the transaction that ends the
job: spend row and usage events commit with the end state or not at all, once per
(job, claim); the post-call task and the sweeper's pick are left for claims that ended
without one."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from decimal import Decimal

import pytest
from pydantic import SecretStr
from sqlalchemy import Engine, event, func, select, text, update
from sqlalchemy.orm import Session, sessionmaker

from models.accounting import Budget, Spend, UsageOutbox
from models.db import make_sessionmaker
from models.fleet_config import FleetConfig, parse_fleet_config
from models.ids import new_id
from models.settings import CommonSettings
from models.tables import Job, JobStatus, utcnow
from models.tenancy import ApiKey
from tests.conftest import migrated_database
from workers import jobstore
from workers.accounting.billing import PayerCache
from workers.accounting.post_call import Billing, price_claim, record_spend, unbilled_claims
from workers.providers.base import Usage

USAGE = Usage(prompt_tokens=100, completion_tokens=50, total_tokens=150)
BILLING = Billing(external_subscription_id="sub-acme")


@pytest.fixture(scope="module")
def engine() -> Iterator[Engine]:
    with migrated_database("llmfleet_test_charge") as (_url, eng):
        yield eng


@pytest.fixture
def sessions(engine: Engine) -> sessionmaker[Session]:
    with engine.begin() as conn:
        conn.execute(text("TRUNCATE jobs, spend, usage_outbox, budgets, api_keys CASCADE"))
    return make_sessionmaker(engine)


def config() -> FleetConfig:
    dep = {
        "model": "openai_compatible/mock-model",
        "api_base": "http://127.0.0.1:1/v1",
        "input_cost_per_token": "0.000001",
        "output_cost_per_token": "0.000002",
    }
    raw = {"model_list": [{"model_name": "m", "litellm_params": dep, "model_info": {"id": "d1"}}]}
    return parse_fleet_config(raw, {})


def settings() -> CommonSettings:
    return CommonSettings(LAGO_API_URL="http://lago.invalid", LAGO_API_KEY=SecretStr("k"))


def running_job(sessions: sessionmaker[Session]) -> jobstore.Claim:
    now = utcnow()
    job_id = new_id("job")
    with sessions.begin() as session:
        session.add(
            Job(
                id=job_id,
                status=JobStatus.QUEUED,
                model="m",
                request={"model": "m", "messages": []},
                attempts=0,
                calls=0,
                priority=5,
                created_at=now,
                queued_at=now,
                published_at=now,
                cancel_requested=False,
                owner_key="key-acme",
            )
        )
    claimed = jobstore.claim(sessions, job_id, lease_seconds=60)
    assert claimed is not None
    return claimed


def finish_charged(
    sessions: sessionmaker[Session], claimed: jobstore.Claim
) -> jobstore.Stored | None:
    charge = price_claim(
        config(),
        settings(),
        claimed.job_id,
        claimed.attempt,
        claimed.owner,
        "m",
        "d1",
        USAGE,
        BILLING,
    )
    outcome = jobstore.Outcome(
        JobStatus.SUCCEEDED, deployment_id="d1", served_group="m", response={}, usage=USAGE
    )
    return jobstore.finish(sessions, claimed, outcome, [], charge)


def counts(sessions: sessionmaker[Session], job_id: str) -> tuple[int, int]:
    with sessions() as session:
        spend = session.scalar(select(func.count()).where(Spend.job_id == job_id))
        events = session.scalar(
            select(func.count()).where(UsageOutbox.transaction_id.startswith(f"{job_id}:"))
        )
    return int(spend or 0), int(events or 0)


def test_the_end_spend_row_and_events_commit_together(
    engine: Engine, sessions: sessionmaker[Session]
) -> None:
    claimed = running_job(sessions)
    commits: list[int] = []

    def committed(_conn: object) -> None:
        commits.append(1)

    event.listen(engine, "commit", committed)
    try:
        # When the worker ends the job with its charge
        stored = finish_charged(sessions, claimed)
    finally:
        event.remove(engine, "commit", committed)
    # Then one commit holds the end state, the spend row and both usage events
    assert stored == jobstore.Stored(JobStatus.SUCCEEDED, (), charged=True)
    assert len(commits) == 1
    assert counts(sessions, claimed.job_id) == (1, 2)
    with sessions() as session:
        job = session.get(Job, claimed.job_id)
        spend = session.scalars(select(Spend).where(Spend.job_id == claimed.job_id)).one()
    assert job is not None and job.cost == spend.cost == Decimal("0.0002")
    assert spend.claim == claimed.attempt and spend.called_at == job.started_at
    # and nothing is left for the post-call task: a redelivery changes nothing
    result = record_spend(sessions, config(), settings(), claimed.job_id, claimed.attempt, BILLING)
    assert not result.created and counts(sessions, claimed.job_id) == (1, 2)


def test_a_lost_claim_writes_no_charge(sessions: sessionmaker[Session]) -> None:
    first = running_job(sessions)
    # Given the lease passed and another worker claimed the job
    with sessions.begin() as session:
        session.execute(
            update(Job)
            .where(Job.id == first.job_id)
            .values(lease_until=utcnow() - dt.timedelta(seconds=1))
        )
    second = jobstore.claim(sessions, first.job_id, lease_seconds=60)
    assert second is not None
    assert finish_charged(sessions, first) is None
    assert counts(sessions, first.job_id) == (0, 0)
    assert finish_charged(sessions, second) == jobstore.Stored(JobStatus.SUCCEEDED, (), True)
    with sessions() as session:
        claims = session.scalars(select(Spend.claim).where(Spend.job_id == first.job_id)).all()
    assert claims == [second.attempt]


def test_a_job_cancelled_while_it_ran_still_pays_for_its_call(
    sessions: sessionmaker[Session],
) -> None:
    claimed = running_job(sessions)
    with sessions.begin() as session:
        session.execute(update(Job).where(Job.id == claimed.job_id).values(cancel_requested=True))
    stored = finish_charged(sessions, claimed)
    assert stored is not None and stored.status is JobStatus.CANCELLED and stored.charged
    assert counts(sessions, claimed.job_id) == (1, 2)
    with sessions() as session:
        job = session.get(Job, claimed.job_id)
    assert job is not None and job.error and job.error["code"] == "job_cancelled"
    assert job.total_tokens == 150 and job.response is None


def test_the_sweeper_finds_a_claim_that_ended_unpriced_and_post_call_bills_it_once(
    sessions: sessionmaker[Session],
) -> None:
    # Given a job that ended with usage but without its charge (pricing failed)
    claimed = running_job(sessions)
    outcome = jobstore.Outcome(
        JobStatus.SUCCEEDED, deployment_id="d1", served_group="m", response={}, usage=USAGE
    )
    assert jobstore.finish(sessions, claimed, outcome, []) == jobstore.Stored(JobStatus.SUCCEEDED)
    assert unbilled_claims(sessions) == []  # within the grace period
    picked = unbilled_claims(sessions, grace_seconds=-60)
    assert picked == [(claimed.job_id, claimed.attempt)]
    # When the post-call task runs for it, twice
    first = record_spend(sessions, config(), settings(), *picked[0], BILLING)
    second = record_spend(sessions, config(), settings(), *picked[0], BILLING)
    # Then it is billed exactly once, as finish would have
    assert first.created and first.cost == Decimal("0.0002") and first.events == 2
    assert not second.created
    assert counts(sessions, claimed.job_id) == (1, 2)
    assert unbilled_claims(sessions, grace_seconds=-60) == []


def test_payers_are_cached_for_a_few_seconds(sessions: sessionmaker[Session]) -> None:
    now = [0.0]
    cache = PayerCache(sessions, ttl=5.0, clock=lambda: now[0])
    with sessions.begin() as session:
        session.add(
            ApiKey(id="key-acme", key_hash="h", prefix="sk-", external_subscription_id="sub-a")
        )
    assert cache.get("key-acme").billing == Billing(None, "sub-a")
    assert cache.get("key-acme").budgets == ()
    with sessions.begin() as session:
        session.add(
            Budget(id="b1", scope="key", scope_id="key-acme", period="day", max_spend=Decimal(1))
        )
    now[0] = 4.0
    assert cache.get("key-acme").budgets == ()  # still trusted
    now[0] = 5.5
    assert [b.id for b in cache.get("key-acme").budgets] == ["b1"]
