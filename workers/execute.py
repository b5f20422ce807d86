"""Run one job: claim it, let a JobRun make its calls, store the outcome or put the
job to wait for capacity. Plain functions with no Celery import; `workers.tasks`
wraps them thinly."""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable

from models.logging_setup import bind_log_context
from models.redis_keys import JOB_EVENTS_CHANNEL
from models.tables import JobStatus, utcnow
from workers import jobstore, metrics
from workers.accounting import charge as charges
from workers.key_usage import settle_job
from workers.resources import WorkerContext
from workers.runner import Deferral, JobRun

__all__ = ["execute_job"]

log = logging.getLogger(__name__)


def execute_job(
    ctx: WorkerContext, job_id: str, publish_webhook: Callable[[str], None]
) -> JobStatus | None:
    """Returns the status stored (QUEUED when the job now waits), or None when this
    delivery had nothing to do. `publish_webhook` sends the webhook task of a delivery
    recorded with the job's end."""
    claimed = jobstore.claim(ctx.sessions, job_id, lease_seconds=ctx.settings.lease_seconds)
    if claimed is None:
        log.info("job %s: not claimable (done, running elsewhere or cancelled)", job_id)
        return None
    bind_log_context(attempt=claimed.attempt, batch_id=claimed.batch_id)
    metrics.job_claimed(claimed)
    if claimed.deadline is not None and claimed.deadline <= utcnow():
        expired = jobstore.Outcome(JobStatus.EXPIRED, error=_expired(claimed))
        return _finish(ctx, claimed, expired, [], publish_webhook)
    run = JobRun(ctx, claimed)
    result = run.execute()
    if isinstance(result, Deferral):
        due = dt.datetime.fromtimestamp(result.due_s, dt.UTC)
        if claimed.deadline is not None and due > claimed.deadline:
            due = claimed.deadline  # wake at the deadline to end it `expired`
        stored = jobstore.defer(ctx.sessions, claimed, due, result.reason, run.records)
        if stored is None or stored.status is not JobStatus.QUEUED:
            settle_job(ctx, claimed, stored, None)
            return _ended(ctx, claimed, stored, None, publish_webhook)
        ctx.delayed.add(job_id, claimed.priority, int(due.timestamp() * 1000))
        metrics.job_deferred(claimed)
        log.info("job %s attempt %d: waiting until %s", job_id, claimed.attempt, due.isoformat())
        return JobStatus.QUEUED
    return _finish(ctx, claimed, result, run.records, publish_webhook)


def _finish(
    ctx: WorkerContext,
    claimed: jobstore.Claim,
    outcome: jobstore.Outcome,
    records: list[jobstore.AttemptRecord],
    publish_webhook: Callable[[str], None],
) -> JobStatus | None:
    """Store the end with its charge (spend row and usage events) in one transaction;
    then settle key limits and budgets, which live in Redis."""
    charge = charges.prepare(ctx, claimed, outcome)
    stored = jobstore.finish(ctx.sessions, claimed, outcome, records, charge)
    settle_job(ctx, claimed, stored, outcome)
    status = _ended(ctx, claimed, stored, outcome.deployment_id, publish_webhook)
    if status is None or stored is None or outcome.usage is None:
        return status
    metrics.tokens_used(claimed, outcome.served_group, outcome.usage)
    if charge is not None and stored.charged:
        charges.settle(ctx, claimed.owner, charge.model_group, charge.cost)
    elif charge is None and outcome.usage.total_tokens and not outcome.cached:
        _post_call(ctx, claimed)
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
    _announce(ctx, claimed.job_id)
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


def _announce(ctx: WorkerContext, job_id: str) -> None:
    """Wake long-polling API requests. Losing this only delays them to their timeout."""
    try:
        ctx.redis.publish(JOB_EVENTS_CHANNEL, job_id)
    except Exception as exc:
        log.warning("job %s: could not announce its end: %s", job_id, type(exc).__name__)


def _publish_webhook(publish: Callable[[str], None], job_id: str, delivery_id: str) -> None:
    """The delivery row is committed; if its message is lost the sweeper sends it."""
    try:
        publish(delivery_id)
    except Exception as exc:
        log.warning("job %s: webhook %s not published: %s", job_id, delivery_id, type(exc).__name__)


def _expired(claimed: jobstore.Claim) -> dict[str, object]:
    message = "the job's deadline passed before it could run"
    if claimed.wait_reason:
        message = f"the job's deadline passed while waiting for capacity ({claimed.wait_reason})"
    return {
        "message": message,
        "type": "expired",
        "param": "deadline",
        "code": "job_expired",
        "status_code": 408,
    }
