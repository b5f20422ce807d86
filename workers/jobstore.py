"""The job row's state machine, as plain functions over a sessionmaker.

The claim is one conditional UPDATE: whichever delivery of a job's message wins it
runs the job; a duplicate delivery finds the row no longer `queued` and does nothing.
A claim carries a lease; a `running` row whose lease has passed (its worker died)
may be claimed again, and `attempts` fences the older worker out.

An end state, its webhook event (if the job asked for one) and the claim's charge (spend
row and usage events, priced by the caller) are written in the same transaction
(`workers.job_end`, re-exported here); the caller publishes the returned delivery ids
once it has committed.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Protocol

from sqlalchemy import and_, insert, or_, select, update
from sqlalchemy.orm import Session, sessionmaker

from models.accounting import ChargeRows
from models.tables import Job, JobAttempt, JobStatus, locked_in_id_order, utcnow
from workers.job_end import (
    CANCELLED_WHILE_RUNNING,
    Ending,
    Stored,
    attempt_rows,
    finish,
    finish_many,
    job_webhooks,
)
from workers.providers.base import Usage

__all__ = [
    "AttemptRecord",
    "Charge",
    "Claim",
    "Ending",
    "Outcome",
    "Stored",
    "claim",
    "claim_many",
    "defer",
    "finish",
    "finish_many",
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
    #: When this claim was taken (the row's `started_at`).
    started_at: dt.datetime | None = None
    #: The job's trace (models.tracing), when it has one.
    trace_context: str | None = None


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


class Charge(ChargeRows, Protocol):
    """What a claim cost, priced before `finish` (see workers.accounting.post_call)."""

    @property
    def cost(self) -> Decimal | None: ...

    @property
    def cost_source(self) -> str | None: ...


def claim(sessions: sessionmaker[Session], job_id: str, lease_seconds: float) -> Claim | None:
    claims = claim_many(sessions, [job_id], lease_seconds)
    return claims[0] if claims else None


def claim_many(
    sessions: sessionmaker[Session], job_ids: Sequence[str], lease_seconds: float
) -> list[Claim]:
    """Claim every job of `job_ids` that may run now, in one UPDATE; the others (done,
    running under a live lease, cancelled) are left alone. The claims come back in the
    order of `job_ids`."""
    if not job_ids:
        return []
    now = utcnow()
    stmt = (
        update(Job)
        .where(
            # several rows are locked in id order (see models.tables.locked_in_id_order)
            Job.id.in_(locked_in_id_order(Job.id.in_(job_ids)))
            if len(job_ids) > 1
            else Job.id == job_ids[0],
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
            Job.id,
            Job.attempts,
            Job.kind,
            Job.model,
            Job.request,
            Job.deadline,
            Job.priority,
            Job.meta.label("meta"),
            Job.wait_reason,
            Job.owner_key,
            Job.batch_id,
            Job.estimated_tokens,
            Job.cache_ttl,
            Job.queued_at,
            Job.not_before,
            Job.trace_context,
        )
        .execution_options(synchronize_session=False)
    )
    with sessions.begin() as session:
        rows = {row.id: row for row in session.connection().execute(stmt)}
    return [_claim_of(rows[job_id], now) for job_id in dict.fromkeys(job_ids) if job_id in rows]


def _claim_of(row: Any, started_at: dt.datetime) -> Claim:
    return Claim(
        row.id,
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
        started_at=started_at,
        trace_context=row.trace_context,
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


def _insert_attempts(session: Session, claimed: Claim, records: Sequence[AttemptRecord]) -> None:
    if records:
        session.execute(insert(JobAttempt), attempt_rows(claimed, records))


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
                JobStatus.CANCELLED, job_webhooks(session, job.id, job.webhook_url, job.status)
            )
        job.status = JobStatus.QUEUED
        job.lease_until = None
        job.not_before = not_before
        job.wait_reason = reason
        job.published_at = utcnow()
        return Stored(JobStatus.QUEUED)


def _cancel(job: Job) -> None:
    job.status = JobStatus.CANCELLED
    job.finished_at = utcnow()
    job.lease_until = None
    job.error = CANCELLED_WHILE_RUNNING


def is_cancel_requested(sessions: sessionmaker[Session], job_id: str) -> bool:
    with sessions() as session:
        return bool(session.scalar(select(Job.cancel_requested).where(Job.id == job_id)))


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
            locked = locked_in_id_order(Job.id.in_(ids))
            session.execute(
                update(Job)
                .where(Job.id.in_(locked), Job.status == JobStatus.RUNNING, Job.lease_until < now)
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
