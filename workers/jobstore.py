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
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Protocol

from sqlalchemy import Integer, Update, and_, bindparam, func, insert, or_, select, update
from sqlalchemy.orm import Session, sessionmaker

from models.accounting import ChargeRows, write_charges
from models.tables import Job, JobAttempt, JobStatus, locked_in_id_order, utcnow
from models.webhooks import record_job_event
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


class Charge(ChargeRows, Protocol):
    """What a claim cost, priced before `finish` (see workers.accounting.post_call)."""

    @property
    def cost(self) -> Decimal | None: ...


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
        session.execute(insert(JobAttempt), _attempt_rows(claimed, records))


def _attempt_rows(claimed: Claim, records: Sequence[AttemptRecord]) -> list[dict[str, Any]]:
    return [
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
    ]


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


@dataclass(frozen=True, slots=True)
class Ending:
    """A claim's end, as `finish_many` stores it."""

    claimed: Claim
    outcome: Outcome
    records: Sequence[AttemptRecord] = ()
    charge: Charge | None = None


def finish(
    sessions: sessionmaker[Session],
    claimed: Claim,
    outcome: Outcome,
    records: Sequence[AttemptRecord] = (),
    charge: Charge | None = None,
) -> Stored | None:
    """Store the outcome, its attempts and its charge in one transaction if this worker
    still holds the claim.

    A cancel requested while the call ran wins: the job ends `cancelled`; the tokens
    the call consumed are still recorded and charged. Returns what was stored, or None
    when the claim was lost (then nothing is written).
    """
    return finish_many(sessions, [Ending(claimed, outcome, records, charge)])[0]


def finish_many(sessions: sessionmaker[Session], endings: Sequence[Ending]) -> list[Stored | None]:
    """`finish` for several claims in one transaction: one executemany UPDATE ends the
    claims still held (each fenced on its own attempt number), one SELECT tells which
    did, and their attempts, spend rows and events go in with a statement each. A lost
    claim stores nothing (None in its place)."""
    if not endings:
        return []
    now = utcnow()
    stored: list[Stored | None] = []
    with sessions.begin() as session:
        conn = session.connection()
        # in id order, as every statement that changes several job rows
        ordered = sorted(endings, key=lambda e: e.claimed.job_id)
        conn.execute(_FINISH, [_finish_params(e, now) for e in ordered])
        rows = {
            row.id: row
            for row in conn.execute(
                select(
                    Job.id,
                    Job.status,
                    Job.attempts,
                    Job.cancel_requested,
                    Job.webhook_url,
                    Job.started_at,
                    Job.finished_at,
                ).where(Job.id.in_([e.claimed.job_id for e in endings]))
            )
        }
        ended: list[tuple[Ending, Any]] = []
        for ending in endings:
            claimed = ending.claimed
            row = rows.get(claimed.job_id)
            if row is None or row.attempts != claimed.attempt:
                row = None  # the claim was lost (the job was handed to another worker)
            elif row.status == JobStatus.RUNNING and row.cancel_requested:
                # cancelled while it ran: it ends `cancelled`, its usage still counted
                row = conn.execute(
                    _end(claimed, ending.outcome, len(ending.records), ending.charge, now)
                    .where(Job.cancel_requested.is_(True))
                    .values(status=JobStatus.CANCELLED, error=CANCELLED_WHILE_RUNNING)
                ).first()
            elif row.status != ending.outcome.status or row.finished_at != now:
                row = None  # not ended by this call: back in the queue, or ended before
            if row is not None:
                ended.append((ending, row))
        attempts = [r for e, _ in ended for r in _attempt_rows(e.claimed, e.records)]
        if attempts:
            conn.execute(insert(JobAttempt), attempts)
        charged = write_charges(
            session,
            [(e.charge, row.started_at or now) for e, row in ended if e.charge is not None],
        )
        results = {
            e.claimed.job_id: Stored(
                JobStatus(row.status),
                _webhooks(session, e.claimed.job_id, row.webhook_url, row.status),
                (e.claimed.job_id, e.claimed.attempt) in charged,
            )
            for e, row in ended
        }
        stored = [results.get(e.claimed.job_id) for e in endings]
    return stored


_USAGE = (
    "prompt_tokens",
    "completion_tokens",
    "total_tokens",
    "cached_tokens",
    "cache_creation_tokens",
    "reasoning_tokens",
)

#: Ends a claim still held and not asked to cancel: one statement for any number of
#: claims (executemany). A value given as NULL leaves the column as it was.
_FINISH = (
    update(Job)
    .where(
        Job.id == bindparam("b_id"),
        Job.attempts == bindparam("b_attempt"),
        Job.status == JobStatus.RUNNING,
        Job.cancel_requested.is_(False),
    )
    .values(
        status=bindparam("b_status"),
        response=bindparam("b_response", type_=Job.response.type),
        error=bindparam("b_error", type_=Job.error.type),
        deployment_id=bindparam("b_deployment_id"),
        served_group=bindparam("b_served_group"),
        not_before=None,
        finished_at=bindparam("b_now", type_=Job.finished_at.type),
        lease_until=None,
        calls=func.coalesce(Job.calls, 0) + bindparam("b_calls"),
        cached=func.coalesce(bindparam("b_cached", type_=Job.cached.type), Job.cached),
        cost=func.coalesce(bindparam("b_cost", type_=Job.cost.type), Job.cost),
        **{f: func.coalesce(bindparam(f"b_{f}", type_=Integer), getattr(Job, f)) for f in _USAGE},
    )
)


def _finish_params(ending: Ending, now: dt.datetime) -> dict[str, Any]:
    outcome, charge = ending.outcome, ending.charge
    usage = _usage_values(outcome.usage) if outcome.usage is not None else {}
    cost = Decimal(0) if outcome.cached else (charge.cost if charge is not None else None)
    return {
        "b_id": ending.claimed.job_id,
        "b_attempt": ending.claimed.attempt,
        "b_status": outcome.status,
        "b_response": outcome.response,
        "b_error": outcome.error,
        "b_deployment_id": outcome.deployment_id,
        "b_served_group": outcome.served_group,
        "b_now": now,
        "b_calls": len(ending.records),
        "b_cached": True if outcome.cached else None,
        "b_cost": cost,
        **{f"b_{f}": usage.get(f) for f in _USAGE},
    }


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
