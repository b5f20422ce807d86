"""Storing what claims' runs came to: the ends of those that arrive together in one
transaction (outcome, attempts, spend row and outbox events: `jobstore.finish_many`),
each wait for capacity on its own (`jobstore.defer` and the delayed set), then what
follows an end (key limits and budgets settled, webhooks published, long-polls woken).
A passing outage of the database or Redis is waited out here: an answer in hand is
stored, never asked for again."""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from models.fair_room import ROOM_LEASE_S
from models.logging_setup import log_context
from models.redis_keys import JOB_EVENTS_CHANNEL
from models.tables import JobStatus
from workers import crashes, jobstore, metrics
from workers.accounting import charge as charges
from workers.accounting.post_call import Charge
from workers.job_trace import trace_endings
from workers.key_usage import release_budgets, settle_job
from workers.resources import WorkerContext
from workers.streaming import end_stream
from workers.waits import Deferral

__all__ = ["Ran", "job_log", "store"]

log = logging.getLogger(__name__)

#: Backoff between tries to store runs while the database or Redis is away.
STORE_RETRY_BASE_S = 0.5
STORE_RETRY_MAX_S = 8.0


@dataclass(frozen=True, slots=True)
class Ran:
    """A claimed job after its calls: an outcome to store, or a wait for capacity."""

    claimed: jobstore.Claim
    result: jobstore.Outcome | Deferral
    records: list[jobstore.AttemptRecord]


def job_log(
    claimed: jobstore.Claim, deployment: str | None = None
) -> contextlib.AbstractContextManager[None]:
    """Every line logged about this job carries its ids (on whichever thread), and the
    deployment that served it once its calls are done (they may have run on the loop)."""
    return log_context(
        job_id=claimed.job_id,
        attempt=claimed.attempt,
        batch_id=claimed.batch_id,
        deployment=deployment,
    )


def store(
    ctx: WorkerContext, runs: Sequence[Ran], publish_webhook: Callable[[str], None]
) -> list[JobStatus | None]:
    """Store what the runs came to. A passing outage of the database or Redis is waited
    out here, with backoff, for up to a lease: the answers in hand are stored, never
    asked for again. Trying again is safe: an end already stored is fenced out."""
    delay, until = STORE_RETRY_BASE_S, time.monotonic() + ctx.settings.lease_seconds
    while True:
        try:
            return _store_once(ctx, runs, publish_webhook)
        except crashes.TRANSIENT as exc:
            if time.monotonic() + delay > until:
                raise
            log.warning(
                "storing %d run(s) failed (%s); trying again in %.1f s",
                len(runs),
                type(exc).__name__,
                delay,
            )
            time.sleep(delay)
            delay = min(2 * delay, STORE_RETRY_MAX_S)


def _store_once(
    ctx: WorkerContext, runs: Sequence[Ran], publish_webhook: Callable[[str], None]
) -> list[JobStatus | None]:
    """The ends in one transaction, each wait on its own; the statuses in `runs`' order."""
    ended = [r for r in runs if not isinstance(r.result, Deferral)]
    finished = iter(_finish(ctx, ended, publish_webhook) if ended else [])
    statuses = []
    for ran in runs:
        if isinstance(ran.result, Deferral):
            with job_log(ran.claimed):
                deferred = _defer(ctx, ran.claimed, ran.result, ran.records, publish_webhook)
            statuses.append(deferred)
        else:
            statuses.append(next(finished))
    return statuses


def _defer(
    ctx: WorkerContext,
    claimed: jobstore.Claim,
    deferral: Deferral,
    records: list[jobstore.AttemptRecord],
    publish_webhook: Callable[[str], None],
) -> JobStatus | None:
    room = deferral.room if ctx.fair is not None else None
    # In a fair room the job waits for its turn, not a time: its row is looked at
    # again (by the sweeper) only should the room lose it.
    due_s = deferral.due_s if room is None else time.time() + ROOM_LEASE_S
    due = dt.datetime.fromtimestamp(due_s, dt.UTC)
    expiring = claimed.deadline is not None and due > claimed.deadline
    if expiring and claimed.deadline is not None:
        due = claimed.deadline  # wake at the deadline to end it `expired`
    stored = jobstore.defer(ctx.sessions, claimed, due, deferral.reason, records)
    if stored is None or stored.status is not JobStatus.QUEUED:
        settle_job(ctx, claimed, stored, None)
        status = _ended(ctx, claimed, stored, None, publish_webhook)
        _announce(ctx, [(claimed, None, status)] if status else [])
        return status
    if room is not None and ctx.fair is not None:
        ctx.fair.wait(
            room.group,
            room.share,
            claimed.job_id,
            claimed.priority,
            room.cost,
            due_ms=room.due_ms,
            score=room.score,
        )
    if room is None or expiring:
        ctx.delayed.add(claimed.job_id, claimed.priority, int(due.timestamp() * 1000))
    metrics.job_deferred(claimed)
    until = f"for its turn in {room.group}'s fair room" if room else f"until {due.isoformat()}"
    log.info("job %s attempt %d: waiting %s", claimed.job_id, claimed.attempt, until)
    return JobStatus.QUEUED


def _finish(
    ctx: WorkerContext, ended: Sequence[Ran], publish_webhook: Callable[[str], None]
) -> list[JobStatus | None]:
    """Store the ends with their charges (spend rows and usage events) in one
    transaction; then settle key limits and budgets, which live in Redis."""
    outcomes = [(r.claimed, r.result) for r in ended if isinstance(r.result, jobstore.Outcome)]
    priced = [charges.prepare(ctx, claimed, outcome) for claimed, outcome in outcomes]
    endings = [
        jobstore.Ending(claimed, outcome, ran.records, charge)
        for (claimed, outcome), ran, charge in zip(outcomes, ended, priced, strict=True)
    ]
    stored = _store_ends(ctx, endings)
    trace_endings(ctx.config, endings)
    statuses = []
    for (claimed, outcome), charge, s in zip(outcomes, priced, stored, strict=True):
        with job_log(claimed, outcome.deployment_id):
            statuses.append(_after_finish(ctx, claimed, outcome, charge, s, publish_webhook))
    ends = zip(endings, statuses, strict=True)
    _announce(ctx, [(e.claimed, e.outcome, s) for e, s in ends if s is not None])
    return statuses


def _store_ends(
    ctx: WorkerContext, endings: Sequence[jobstore.Ending]
) -> list[jobstore.Stored | None]:
    """`finish_many`; ends the database refuses are stored one by one, and the one it
    refuses alone ends `failed` instead (workers.crashes.unstorable)."""
    try:
        return jobstore.finish_many(ctx.sessions, endings)
    except crashes.TRANSIENT:
        raise
    except Exception as exc:
        if len(endings) > 1:
            return [stored for e in endings for stored in _store_ends(ctx, [e])]
        instead = crashes.unstorable(endings[0], exc)
    return jobstore.finish_many(ctx.sessions, [instead])


def _after_finish(
    ctx: WorkerContext,
    claimed: jobstore.Claim,
    outcome: jobstore.Outcome,
    charge: Charge | None,
    stored: jobstore.Stored | None,
    publish_webhook: Callable[[str], None],
) -> JobStatus | None:
    settle_job(ctx, claimed, stored, outcome)
    status = _ended(ctx, claimed, stored, outcome.deployment_id, publish_webhook)
    if status is not None and stored is not None and outcome.usage is not None:
        metrics.tokens_used(claimed, outcome.served_group, outcome.usage)
        if charge is not None and stored.charged:
            charges.settle(ctx, claimed.owner, charge.model_group, charge.cost)
        elif charge is None and outcome.usage.total_tokens and not outcome.cached:
            _post_call(ctx, claimed)
    release_budgets(ctx, claimed, stored)
    return status


def _post_call(ctx: WorkerContext, claimed: jobstore.Claim) -> None:
    """A claim that used tokens but could not be priced here is priced by the post-call
    task. If this message is lost the sweeper finds the claim without a spend row and
    sends it again."""
    try:
        ctx.publish_post_call(claimed.job_id, claimed.attempt)
    except Exception as exc:
        log.warning("job %s: post-call not published: %s", claimed.job_id, type(exc).__name__)


def _ended(
    ctx: WorkerContext,
    claimed: jobstore.Claim,
    stored: jobstore.Stored | None,
    deployment_id: str | None,
    publish_webhook: Callable[[str], None],
) -> JobStatus | None:
    if stored is None:
        log.warning(
            "job %s attempt %d: claim lost before it ended", claimed.job_id, claimed.attempt
        )
        return None
    metrics.job_ended(claimed, stored.status)
    for delivery_id in stored.webhooks:
        _publish_webhook(publish_webhook, claimed.job_id, delivery_id)
    log.info(
        "job %s attempt %d: %s via %s",
        claimed.job_id,
        claimed.attempt,
        stored.status,
        deployment_id,
    )
    return stored.status


def _announce(
    ctx: WorkerContext, ends: Sequence[tuple[jobstore.Claim, jobstore.Outcome | None, JobStatus]]
) -> None:
    """Now that the ends are stored: end streamed jobs' streams, and wake long-polling
    API requests (one round trip for all). A stream's end comes after its row's, so a
    client that has read the end reads the stored job. Losing this only delays
    waiters to their timeout (a relay reads the row then)."""
    if not ends:
        return
    try:
        with ctx.redis.pipeline(transaction=False) as pipe:
            for claimed, outcome, status in ends:
                if claimed.request.get("stream"):
                    end_stream(pipe, claimed, status, outcome)
            for claimed, _, _ in ends:
                pipe.publish(JOB_EVENTS_CHANNEL, claimed.job_id)
            pipe.execute()
    except Exception as exc:
        log.warning("%d job(s): could not announce their end: %s", len(ends), type(exc).__name__)


def _publish_webhook(publish: Callable[[str], None], job_id: str, delivery_id: str) -> None:
    """The delivery row is committed; if its message is lost the sweeper sends it."""
    try:
        publish(delivery_id)
    except Exception as exc:
        log.warning("job %s: webhook %s not published: %s", job_id, delivery_id, type(exc).__name__)
