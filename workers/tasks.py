"""Thin Celery tasks: ids in, a plain function does the work."""

from __future__ import annotations

import logging

from celery import Task

from models.contract import EXECUTE_TASK, SWEEP_TASK, WEBHOOK_TASK, queue_for_priority
from models.logging_setup import log_context
from workers import jobstore, webhooks
from workers.celery_app import app, publish_webhook
from workers.execute import execute_job

log = logging.getLogger(__name__)


@app.task(name=EXECUTE_TASK)
def execute(job_id: str) -> None:
    with log_context(job_id=job_id):  # every line of this job carries its ids
        execute_job(app.get_context(), job_id, publish_webhook)


@app.task(name=WEBHOOK_TASK, bind=True)
def webhook(self: Task, delivery_id: str) -> None:
    """Send one webhook delivery; while it is not taken, send this task again later."""
    ctx = app.get_context()
    settings = ctx.settings
    delay = webhooks.deliver(
        ctx.http,
        ctx.sessions,
        settings.webhook_secret,
        settings.webhook_max_attempts,
        delivery_id,
        ctx.rng,
    )
    if delay is not None:
        # A countdown message waits unacknowledged inside a worker, and Redis hands out
        # again any message unacknowledged past the visibility timeout (2 h): a longer
        # countdown would be delivered twice. 15 min (the backoff's cap) is far below.
        self.apply_async(args=[delivery_id], countdown=min(delay, webhooks.MAX_BACKOFF_SECONDS))


@app.task(name=SWEEP_TASK)
def sweep() -> int:
    """Re-publish jobs and webhooks whose message may have been lost (see
    jobstore.requeue_stale and webhooks.requeue_lost)."""
    ctx = app.get_context()
    stale = jobstore.requeue_stale(ctx.sessions)
    for job_id, priority in stale:
        execute.apply_async(args=[job_id], queue=queue_for_priority(priority))
    lost = webhooks.requeue_lost(ctx.sessions)
    for delivery_id in lost:
        publish_webhook(delivery_id)
    if stale or lost:
        log.warning("sweep: re-published %d job(s), %d webhook(s)", len(stale), len(lost))
    return len(stale) + len(lost)
