"""The end of a claim: its outcome, its attempts, its charge and its webhook event,
written in one transaction, fenced by the claim number (see workers.jobstore for the
claim side). Every way a claim ends goes through `finish_many`: a success, a provider
error, a rejection by a hook, an expiry, a crash (workers.crashes); so webhooks, key
usage and the long-poll publish follow from any of them alike."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from sqlalchemy import Integer, Update, bindparam, func, insert, select, update
from sqlalchemy.orm import Session, sessionmaker

from models.accounting import write_charges
from models.tables import Job, JobAttempt, JobStatus, utcnow
from models.webhooks import record_job_event

if TYPE_CHECKING:
    from workers.jobstore import AttemptRecord, Charge, Claim, Outcome
    from workers.providers.base import Usage

__all__ = [
    "CANCELLED_WHILE_RUNNING",
    "Ending",
    "Stored",
    "attempt_rows",
    "finish",
    "finish_many",
    "job_webhooks",
]


@dataclass(frozen=True, slots=True)
class Stored:
    """The status written, and the webhook deliveries to publish now it is committed."""

    status: JobStatus
    webhooks: tuple[str, ...] = ()
    #: The claim's charge was written with it (False: none given, or already there).
    charged: bool = False


def attempt_rows(claimed: Claim, records: Sequence[AttemptRecord]) -> list[dict[str, Any]]:
    """The `job_attempts` rows of a claim's calls (written by an end or a deferral)."""
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


def job_webhooks(
    session: Session, job_id: str, webhook_url: str | None, status: str
) -> tuple[str, ...]:
    """The delivery of the job's event, recorded in the caller's transaction (if the
    job asked for a webhook), to publish once it has committed."""
    delivery_id = record_job_event(session, job_id, webhook_url, status)
    return (delivery_id,) if delivery_id else ()


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
    the call consumed are still recorded and charged (a batch line that got its answer
    keeps it). Returns what was stored, or None
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
                row = conn.execute(_cancelled_while_running(ending, now)).first()
            elif row.status != ending.outcome.status or row.finished_at != now:
                row = None  # not ended by this call: back in the queue, or ended before
            if row is not None:
                ended.append((ending, row))
        attempts = [r for e, _ in ended for r in attempt_rows(e.claimed, e.records)]
        if attempts:
            conn.execute(insert(JobAttempt), attempts)
        charged = write_charges(
            session,
            [(e.charge, row.started_at or now) for e, row in ended if e.charge is not None],
        )
        results = {
            e.claimed.job_id: Stored(
                JobStatus(row.status),
                job_webhooks(session, e.claimed.job_id, row.webhook_url, row.status),
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

#: The cost source of a job served from the response cache (its cost is 0).
CACHE_COST_SOURCE = "cache"

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
        cost_source=func.coalesce(bindparam("b_cost_source"), Job.cost_source),
        **{f: func.coalesce(bindparam(f"b_{f}", type_=Integer), getattr(Job, f)) for f in _USAGE},
    )
)


def _finish_params(ending: Ending, now: dt.datetime) -> dict[str, Any]:
    outcome, charge = ending.outcome, ending.charge
    usage = _usage_values(outcome.usage) if outcome.usage is not None else {}
    cost, cost_source = _cost(outcome, charge)
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
        "b_cost_source": cost_source,
        **{f"b_{f}": usage.get(f) for f in _USAGE},
    }


def _cost(outcome: Outcome, charge: Charge | None) -> tuple[Decimal | None, str | None]:
    """A job's cost and its source: 0 from the cache, else its charge's, if priced."""
    if outcome.cached:
        return Decimal(0), CACHE_COST_SOURCE
    if charge is None or charge.cost is None:
        return None, None
    return charge.cost, charge.cost_source


def _cancelled_while_running(ending: Ending, now: dt.datetime) -> Update:
    """A claim asked to cancel while it ran: it ends `cancelled`, its usage still
    counted; but a batch line that got its answer keeps it (OpenAI's batch cancel: the
    requests in flight finish and are in the output file), since it is billed."""
    claimed, outcome = ending.claimed, ending.outcome
    end = _end(claimed, outcome, len(ending.records), ending.charge, now).where(
        Job.cancel_requested.is_(True)
    )
    if claimed.batch_id is not None and outcome.status is JobStatus.SUCCEEDED:
        return end.values(status=JobStatus.SUCCEEDED, response=outcome.response)
    return end.values(status=JobStatus.CANCELLED, error=CANCELLED_WHILE_RUNNING)


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
        values["cached"] = True
    cost, cost_source = _cost(outcome, charge)
    if cost is not None:
        values.update(cost=cost, cost_source=cost_source)
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
