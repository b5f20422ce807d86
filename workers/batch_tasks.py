"""The batch tick: a thin task run by beat every second (and nudged by the API when a
batch is created or cancelled). One tick runs at a time across the fleet."""

from __future__ import annotations

import logging

from models.contract import BATCH_TICK_TASK, EXECUTE_LINES_TASK, EXECUTE_TASK, QUEUE_BATCH
from models.redis_keys import BATCH_TICK_LOCK, BATCH_TICK_LOCK_TTL_MS
from models.storage import LocalFileStorage
from workers import batches
from workers.admission import lines_per_message
from workers.celery_app import app, publish_webhook
from workers.fleet_lock import fleet_lock
from workers.tasks import republish_if_redis_lost

log = logging.getLogger(__name__)


def _queue_depth() -> int:
    """Messages waiting in the broker's batch queue (Redis or AMQP alike).

    Declared as Celery declares it (durable, not auto-delete, same arguments): RabbitMQ
    refuses a declare whose arguments differ, and creating it here if missing is what the
    first publish would do anyway."""
    with app.connection_for_read() as conn:
        queue = app.amqp.queues[QUEUE_BATCH].bind(conn.default_channel)
        return int(queue.queue_declare().message_count)


def _publish(job_ids: list[str]) -> None:
    if len(job_ids) == 1:
        app.send_task(EXECUTE_TASK, args=job_ids, queue=QUEUE_BATCH)
    else:
        app.send_task(EXECUTE_LINES_TASK, args=[job_ids], queue=QUEUE_BATCH)


@app.task(name=BATCH_TICK_TASK, ignore_result=True)
def batch_tick() -> int:
    ctx = app.get_context()
    with fleet_lock(ctx.redis, BATCH_TICK_LOCK, BATCH_TICK_LOCK_TTL_MS) as held:
        if not held:
            return 0  # another tick is running
        # A Redis that lost its data lost messages: sent again before the queue is counted
        republish_if_redis_lost(ctx, "batch tick")
        expired = batches.expire_due(ctx.sessions)
        batches.release_lapsed(ctx.sessions)
        per_message = lines_per_message(
            ctx.settings.batch_lines_per_message, ctx.settings.concurrency
        )
        depth = _queue_depth()
        if depth == 0:
            # A lines message is acknowledged once its lines are claimed, within a few
            # milliseconds of its delivery: lines still queued a lease after it was sent
            # have lost it (not the visibility timeout, which a dead worker's messages
            # would wait out).
            batches.redispatch_lost(ctx.sessions, ctx.settings.lease_seconds)
        # The queue holds messages of up to `per_message` lines: count them as full.
        room = ctx.settings.batch_queue_target - depth * per_message
        published = batches.dispatch(ctx.sessions, room, _publish, per_message, ctx.fair_intake)
        storage = LocalFileStorage(ctx.settings.files_dir)
        ended = batches.finalize_ready(ctx.sessions, storage, publish_webhook)
    if published or expired or ended:
        log.info("batch tick: published %d, expired %d, ended %s", published, expired, ended)
    return published
