"""Thin Celery tasks: ids in, a plain function does the work."""

from __future__ import annotations

import logging
from typing import NoReturn

from celery import Task
from celery.exceptions import Reject
from kombu.exceptions import OperationalError as BrokerError

from models import fleet_name
from models.contract import (
    EXECUTE_LINES_TASK,
    EXECUTE_TASK,
    FAIR_TURN_TASK,
    SWEEP_TASK,
    WEBHOOK_TASK,
    queue_for_priority,
)
from models.logging_setup import log_context
from workers import fleet_presence, jobstore, recovery, webhooks
from workers.accounting.post_call import unbilled_claims
from workers.celery_app import app, publish_execute, publish_webhook
from workers.crashes import TRANSIENT
from workers.execute import SendOn, execute_job, execute_lines, execute_turn
from workers.resources import WorkerContext

log = logging.getLogger(__name__)

RETRY_CAP_SECONDS = 30
#: Outages a task waits out by sending itself again: the database's, Redis', and the
#: broker's refusing a message the task sends.
RETRY_LATER = (*TRANSIENT, BrokerError)


@app.task(name=EXECUTE_TASK, bind=True)
def execute(self: Task, job_id: str) -> None:
    ctx = app.get_context()
    # every line of this job carries its ids; the claim's lease is renewed while it runs
    with log_context(job_id=job_id):
        try:
            queue = _queue(self)
            execute_job(ctx, job_id, publish_webhook, queue, _sender(queue))
        except RETRY_LATER as exc:
            # Acknowledging this message would lose a job that was not claimed yet: send
            # it again later. A job claimed already stays claimed, and this second
            # message is turned away until the sweeper hands the job on after its lease.
            log.warning("job %s: %s; trying again later", job_id, type(exc).__name__)
            _again_later(self)


@app.task(name=EXECUTE_LINES_TASK, bind=True)
def execute_many(self: Task, job_ids: list[str]) -> None:
    """Several batch lines from one message (see workers.execute.execute_lines)."""
    ctx = app.get_context()
    try:
        execute_lines(ctx, job_ids, publish_webhook, _sender(_queue(self)))
    except RETRY_LATER as exc:
        # Lines not claimed yet would be lost with this message; lines already claimed
        # are turned away by the second one and handed on by the sweeper after their lease.
        log.warning("%d line(s): %s; trying again later", len(job_ids), type(exc).__name__)
        _again_later(self)


@app.task(name=FAIR_TURN_TASK, bind=True)
def fair_turn(self: Task) -> None:
    """A turn for the jobs waiting for a free worker on this message's queue
    (workers.execute.execute_turn)."""
    ctx = app.get_context()
    queue = _queue(self)
    if queue is None:  # no room to take a turn from: the rooms' idle ticks go on
        log.warning("a turn delivered from no known queue: dropped")
        return
    try:
        execute_turn(ctx, queue, publish_webhook, lambda: _send_turn(queue))
    except RETRY_LATER as exc:
        log.warning("a turn on %s: %s; trying again later", queue, type(exc).__name__)
        _again_later(self)


def _send_turn(queue: str) -> None:
    app.send_task(FAIR_TURN_TASK, queue=queue)


def _sender(queue: str | None) -> SendOn | None:
    """Sends jobs back to `queue`: one as an execute message, several as lines."""
    if queue is None:
        return None

    def send_on(job_ids: list[str]) -> None:
        if len(job_ids) == 1:
            app.send_task(EXECUTE_TASK, args=job_ids, queue=queue)
        else:
            app.send_task(EXECUTE_LINES_TASK, args=[job_ids], queue=queue)

    return send_on


def _queue(task: Task) -> str | None:
    """The queue this message was delivered from (its lane, workers.admission)."""
    info = task.request.delivery_info or {}
    queue = info.get("routing_key")
    return queue if isinstance(queue, str) else None


def _again_later(task: Task) -> NoReturn:
    """Send this task again after a backoff, and let the message in hand go. If the
    broker cannot take the new message either, the one in hand is handed back to it
    instead (rejected with requeue): Celery would acknowledge it, and with it the jobs
    it carries that no worker has claimed and nothing else would send again. When the
    broker cannot take the message back either, it stays unacknowledged, and the broker
    delivers it again (Redis after its visibility timeout, RabbitMQ when the channel
    closes)."""
    delay = min(RETRY_CAP_SECONDS, 2**task.request.retries)
    try:
        raise task.retry(countdown=delay, max_retries=None) from None
    except Reject as exc:  # the new message could not be published
        raise Reject(exc.reason, requeue=True) from None


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
        # again a message unacknowledged past the visibility timeout: a second copy is
        # harmless, as `deliver` sends only a due delivery it has claimed.
        self.apply_async(args=[delivery_id], countdown=min(delay, webhooks.MAX_BACKOFF_SECONDS))


def republish_if_redis_lost(ctx: WorkerContext, who: str) -> int:
    """When a Redis of the fleet lost its data (or is new), and with it messages and
    wake-ups: publish again every queued job (workers.recovery). Checked by the sweep
    and by every batch tick; the first to find the marker gone does it."""
    if not recovery.epoch_lost(ctx.epoch_clients()):
        return 0
    recovered = recovery.republish_queued(ctx.sessions, ctx.delayed, publish_execute)
    log.warning("%s: Redis has no epoch marker; re-published %d queued job(s)", who, recovered)
    return recovered


@app.task(name=SWEEP_TASK)
def sweep() -> int:
    """Re-publish jobs and webhooks whose message may have been lost (see
    workers.recovery, jobstore.requeue_stale and webhooks.requeue_lost)."""
    ctx = app.get_context()
    fleet_presence.announce(ctx.epoch_clients(), fleet_name.current())
    recovered = republish_if_redis_lost(ctx, "sweep")
    stale = jobstore.requeue_stale(ctx.sessions)
    for job_id, priority in stale:
        execute.apply_async(args=[job_id], queue=queue_for_priority(priority))
    lost = webhooks.requeue_lost(ctx.sessions)
    for delivery_id in lost:
        publish_webhook(delivery_id)
    if stale or lost:
        log.warning("sweep: re-published %d job(s), %d webhook(s)", len(stale), len(lost))
    unbilled = unbilled_claims(ctx.sessions)
    for job_id, claim in unbilled:  # ended without a spend row: price it now
        ctx.publish_post_call(job_id, claim)
    if unbilled:
        log.warning("sweep: sent post-call for %d unbilled claim(s)", len(unbilled))
    return recovered + len(stale) + len(lost)
