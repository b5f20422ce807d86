"""The job row's state machine, as plain functions over a sessionmaker.

The claim is one conditional UPDATE: whichever delivery of a job's message wins it
runs the job; a duplicate delivery finds the row no longer `queued` and does nothing.
A claim carries a lease; a `running` row whose lease has passed (its worker died)
may be claimed again, and `attempts` fences the older worker out.

An end state, its webhook event (if the job asked for one) and the claim's charge (spend
row and usage events, priced by the caller) are written in the same transaction; the
caller publishes the returned delivery ids once it has committed.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Protocol

from sqlalchemy import Update, and_, func, insert, or_, select, update
from sqlalchemy.orm import Session, sessionmaker

from models.tables import Job, JobAttempt, JobStatus, utcnow
from models.webhooks import record_job_event
from workers.providers.base import Usage

__all__ = [
    "AttemptRecord",
    "Charge",
    "Claim",
    "Outcome",
    "Stored",
    "claim",
    "defer",
    "finish",
    "requeue_stale",
]


@dataclass(frozen=True, slots=True)
class Claim:
    job_id: str
    attempt: int
    kind: str
    model: str
    request: dict[str, Any]
    deadline: dt.datetime | None
    priority: int = 5
    tags: tuple[str, ...] = ()
    wait_reason: str | None = None
    #: The tenant (`owner_key`): a key id, or `master`.
    owner: str = "master"
    batch_id: str | None = None
    #: Tokens charged to the key's tpm at intake (None: not admitted by key limits).
    estimated_tokens: int | None = None
    #: Response-cache lifetime (seconds); None = not cached.
    cache_ttl: int | None = None
    #: Since when the job could run: queued, or the end of its wait for capacity.
    queued_since: dt.datetime | None = None


@dataclass(frozen=True, slots=True)
class AttemptRecord:
    """One provider call, written with the outcome in the same transaction."""

    model_group: str
    deployment_id: str
    error_class: str | None
    status_code: int | None
    latency_ms: int
    started_at: dt.datetime


@dataclass(frozen=True, slots=True)
class Outcome:
    status: JobStatus
    deployment_id: str | None = None
    served_group: str | None = None
    response: dict[str, Any] | None = None
    error: dict[str, Any] | None = None
    usage: Usage | None = None
    #: Served from the response cache: no call, no usage, cost 0.
    cached: bool = False


@dataclass(frozen=True, slots=True)
class Stored:
    """The status written, and the webhook deliveries to publish now it is committed."""

    status: JobStatus
    webhooks: tuple[str, ...] = ()
    #: The claim's charge was written with it (False: none given, or already there).
    charged: bool = False


class Charge(Protocol):
    """What a claim cost, priced before `finish` (see workers.accounting.post_call)."""

    @property
    def cost(self) -> Decimal | None: ...

    def write(self, session: Session, called_at: dt.datetime) -> bool: ...


def claim(sessions: sessionmaker[Session], job_id: str, lease_seconds: float) -> Claim | None:
    now = utcnow()
    stmt = (
        update(Job)
        .where(
            Job.id == job_id,
            Job.cancel_requested.is_(False),
            or_(
                Job.status == JobStatus.QUEUED,
                and_(Job.status == JobStatus.RUNNING, Job.lease_until < now),
            ),
        )
        .values(
            status=JobStatus.RUNNING,
            attempts=Job.attempts + 1,
            started_at=now,
            lease_until=now + dt.timedelta(seconds=lease_seconds),
        )
        .returning(
            Job.attempts,
            Job.kind,
            Job.model,
            Job.request,
            Job.deadline,
            Job.priority,
            Job.meta,
            Job.wait_reason,
            Job.owner_key,
            Job.batch_id,
            Job.estimated_tokens,
            Job.cache_ttl,
            Job.queued_at,
            Job.not_before,
        )
        .execution_options(synchronize_session=False)
    )
    with sessions.begin() as session:
        row = session.execute(stmt).first()
    if row is None:
        return None
    return Claim(
        job_id,
        row.attempts,
        row.kind,
        row.model,
        row.request,
        row.deadline,
        priority=row.priority,
        tags=_tags(row.meta),
        wait_reason=row.wait_reason,
        owner=row.owner_key,
        batch_id=row.batch_id,
        estimated_tokens=row.estimated_tokens,
        cache_ttl=row.cache_ttl,
        queued_since=max((t for t in (row.queued_at, row.not_before) if t), default=None),
    )


def _tags(meta: dict[str, Any] | None) -> tuple[str, ...]:
    """`metadata.tags` as a list, or a comma-separated string (metadata values are
    strings in OpenAI's shape)."""
    raw = (meta or {}).get("tags")
    if isinstance(raw, str):
        raw = raw.split(",")
    if not isinstance(raw, list):
        return ()
    return tuple(t.strip() for t in raw if isinstance(t, str) and t.strip())


def _locked_running(session: Session, claimed: Claim) -> Job | None:
    """The job row, locked, if this worker still holds its claim."""
    return session.scalars(
        select(Job)
        .where(
            Job.id == claimed.job_id,
            Job.attempts == claimed.attempt,
            Job.status == JobStatus.RUNNING,
        )
        .with_for_update()
    ).first()


def _record_attempts(
    session: Session, job: Job, claimed: Claim, records: list[AttemptRecord]
) -> None:
    job.calls = (job.calls or 0) + len(records)
    _insert_attempts(session, claimed, records)


def _insert_attempts(session: Session, claimed: Claim, records: list[AttemptRecord]) -> None:
    if records:
        session.execute(
            insert(JobAttempt),
            [
                {
                    "job_id": claimed.job_id,
                    "claim": claimed.attempt,
                    "model_group": r.model_group,
                    "deployment_id": r.deployment_id,
                    "error_class": r.error_class,
                    "status_code": r.status_code,
                    "latency_ms": r.latency_ms,
                    "started_at": r.started_at,
                }
                for r in records
            ],
        )


def defer(
    sessions: sessionmaker[Session],
    claimed: Claim,
    not_before: dt.datetime,
    reason: str,
    records: list[AttemptRecord],
) -> Stored | None:
    """Give the job back to the queue until `not_before` (waiting for capacity).
    Returns `queued`, or `cancelled` when a cancel arrived meanwhile, or None when the
    claim was lost."""
    with sessions.begin() as session:
        job = _locked_running(session, claimed)
        if job is None:
            return None
        _record_attempts(session, job, claimed, records)
        if job.cancel_requested:
            _cancel(job)
            return Stored(
                JobStatus.CANCELLED, _webhooks(session, job.id, job.webhook_url, job.status)
            )
        job.status = JobStatus.QUEUED
        job.lease_until = None
        job.not_before = not_before
        job.wait_reason = reason
        job.published_at = utcnow()
        return Stored(JobStatus.QUEUED)


def _usage_values(usage: Usage) -> dict[str, int]:
    return {
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "total_tokens": usage.total_tokens,
        "cached_tokens": usage.cached_tokens,
        "cache_creation_tokens": usage.cache_creation_tokens,
        "reasoning_tokens": usage.reasoning_tokens,
    }


CANCELLED_WHILE_RUNNING: dict[str, Any] = {
    "message": "the job was cancelled while it ran",
    "type": "cancelled",
    "param": None,
    "code": "job_cancelled",
}


def _cancel(job: Job) -> None:
    job.status = JobStatus.CANCELLED
    job.finished_at = utcnow()
    job.lease_until = None
    job.error = CANCELLED_WHILE_RUNNING


def _webhooks(
    session: Session, job_id: str, webhook_url: str | None, status: str
) -> tuple[str, ...]:
    delivery_id = record_job_event(session, job_id, webhook_url, status)
    return (delivery_id,) if delivery_id else ()


def is_cancel_requested(sessions: sessionmaker[Session], job_id: str) -> bool:
    with sessions() as session:
        return bool(session.scalar(select(Job.cancel_requested).where(Job.id == job_id)))


def finish(
    sessions: sessionmaker[Session],
    claimed: Claim,
    outcome: Outcome,
    records: list[AttemptRecord] | None = None,
    charge: Charge | None = None,
) -> Stored | None:
    """Store the outcome, its attempts and its charge in one transaction if this worker
    still holds the claim.

    A cancel requested while the call ran wins: the job ends `cancelled`; the tokens
    the call consumed are still recorded and charged. Returns what was stored, or None
    when the claim was lost (then nothing is written).
    """
    records = records or []
    now = utcnow()
    with sessions.begin() as session:
        ended = session.execute(
            _end(claimed, outcome, len(records), charge, now)
            .where(Job.cancel_requested.is_(False))
            .values(status=outcome.status, response=outcome.response, error=outcome.error)
        ).first()
        if ended is None:  # cancelled meanwhile, or the claim was lost
            ended = session.execute(
                _end(claimed, outcome, len(records), charge, now)
                .where(Job.cancel_requested.is_(True))
                .values(status=JobStatus.CANCELLED, error=CANCELLED_WHILE_RUNNING)
            ).first()
        if ended is None:
            return None
        _insert_attempts(session, claimed, records)
        charged = charge.write(session, ended.started_at or now) if charge else False
        webhooks = _webhooks(session, claimed.job_id, ended.webhook_url, ended.status)
        return Stored(JobStatus(ended.status), webhooks, charged)


def _end(
    claimed: Claim, outcome: Outcome, calls: int, charge: Charge | None, now: dt.datetime
) -> Update:
    """The fenced UPDATE that ends a running claim: it matches only while the row still
    carries this claim's attempt number and is `running`."""
    values: dict[str, Any] = {
        "deployment_id": outcome.deployment_id,
        "served_group": outcome.served_group,
        "not_before": None,
        "finished_at": now,
        "lease_until": None,
    }
    if calls:
        values["calls"] = func.coalesce(Job.calls, 0) + calls
    if outcome.usage is not None:
        values.update(_usage_values(outcome.usage))
    if outcome.cached:
        values.update(cached=True, cost=Decimal(0))
    elif charge is not None:
        values["cost"] = charge.cost
    return (
        update(Job)
        .where(
            Job.id == claimed.job_id,
            Job.attempts == claimed.attempt,
            Job.status == JobStatus.RUNNING,
        )
        .values(values)
        .returning(Job.status, Job.webhook_url, Job.started_at)
        .execution_options(synchronize_session=False)
    )


def requeue_stale(
    sessions: sessionmaker[Session], grace_seconds: float = 30.0, limit: int = 500
) -> list[tuple[str, int]]:
    """Jobs whose message may be lost: queued but never published, running past
    their lease (the worker died and the broker lost the message), or waiting for
    capacity well past their wake time (the wake-up was lost). They go back to
    `queued` and are returned as (id, priority) to be published again."""
    now = utcnow()
    unpublished_before = now - dt.timedelta(seconds=grace_seconds)
    with sessions.begin() as session:
        rows = session.execute(
            select(Job.id, Job.priority)
            .where(
                or_(
                    and_(
                        Job.status == JobStatus.QUEUED,
                        Job.published_at.is_(None),
                        Job.queued_at < unpublished_before,
                        # batch lines wait for the dispatcher, which bounds the backlog
                        Job.batch_id.is_(None),
                    ),
                    and_(Job.status == JobStatus.RUNNING, Job.lease_until < now),
                    and_(Job.status == JobStatus.QUEUED, Job.not_before < unpublished_before),
                )
            )
            .order_by(Job.id)
            .limit(limit)
        ).all()
        ids = [r.id for r in rows]
        if ids:
            session.execute(
                update(Job)
                .where(Job.id.in_(ids), Job.status == JobStatus.RUNNING, Job.lease_until < now)
                .values(status=JobStatus.QUEUED, lease_until=None)
                .execution_options(synchronize_session=False)
            )
            session.execute(
                update(Job)
                .where(Job.id.in_(ids))
                .values(published_at=now, not_before=None)
                .execution_options(synchronize_session=False)
            )
    return [(r.id, r.priority) for r in rows]
