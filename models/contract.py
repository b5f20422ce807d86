"""The contract between the producer API and the workers: task names, queue names,
and the broker options both sides must agree on. The API sends tasks by these names
and never imports worker code."""

from __future__ import annotations

from typing import Any

__all__ = [
    "BATCH_TICK_TASK",
    "CHAT_COMPLETIONS",
    "EMBEDDINGS",
    "EXECUTE_LINES_TASK",
    "EXECUTE_TASK",
    "FAIR_TURN_TASK",
    "LAGO_DRAIN_TASK",
    "LAGO_ENTITLEMENT_TASK",
    "POST_CALL_TASK",
    "QUEUES",
    "QUEUE_BATCH",
    "QUEUE_BATCH_TICK",
    "QUEUE_HIGH",
    "QUEUE_LOW",
    "QUEUE_NORMAL",
    "QUEUE_POST_CALL",
    "SWEEP_TASK",
    "WEBHOOK_QUEUE",
    "WEBHOOK_TASK",
    "WORKER_QUEUES",
    "broker_options",
    "queue_for_priority",
]

EXECUTE_TASK = "llmfleet.execute"
#: Runs several batch lines from one message (args: the job ids).
EXECUTE_LINES_TASK = "llmfleet.execute_lines"
#: A turn for a job waiting for a free worker (no args): the worker that takes it runs
#: the job its queue's fleet room lets through then (models.fair_room).
FAIR_TURN_TASK = "llmfleet.fair_turn"

#: Job kinds: which OpenAI endpoint a job's request body is for.
CHAT_COMPLETIONS = "chat.completions"
EMBEDDINGS = "embeddings"
SWEEP_TASK = "llmfleet.sweep"
#: Sends one webhook delivery (args: the delivery id).
WEBHOOK_TASK = "llmfleet.webhook"
#: Cost, spend and usage events of a finished claim, on a queue of their own.
POST_CALL_TASK = "llmfleet.post_call"
QUEUE_POST_CALL = "llmfleet.post_call"
#: Sends the usage outbox to Lago.
LAGO_DRAIN_TASK = "llmfleet.lago_drain"
#: Refreshes the cached Lago entitlement views of the subscriptions in use.
LAGO_ENTITLEMENT_TASK = "llmfleet.lago_entitlements"
#: Publishes batch jobs as the broker drains, finalizes and expires batches.
BATCH_TICK_TASK = "llmfleet.batch_tick"

QUEUE_HIGH = "llmfleet.high"
QUEUE_NORMAL = "llmfleet.normal"
QUEUE_LOW = "llmfleet.low"
#: Batch lines: fed by the batch dispatcher a little at a time, consumed last.
QUEUE_BATCH = "llmfleet.batch"
#: Consumed in this order: a worker takes from the first non-empty queue.
QUEUES = (QUEUE_HIGH, QUEUE_NORMAL, QUEUE_LOW, QUEUE_BATCH)
#: Batch ticks (dispatching lines, writing output files): a queue of their own, so that
#: a worker for some execute queues only (`--queues llmfleet.high`) never runs them.
QUEUE_BATCH_TICK = "llmfleet.batch_tick"
#: What a worker consumes by default: the execute queues (the ticks, small and once a
#: second, right after interactive work), then post-call work.
WORKER_QUEUES = (QUEUE_HIGH, QUEUE_BATCH_TICK, *QUEUES[1:], QUEUE_POST_CALL)
#: Webhooks report work already done: short sends that should not wait behind a backlog.
WEBHOOK_QUEUE = QUEUE_HIGH

PRIORITY_MIN = 0
PRIORITY_MAX = 9
PRIORITY_DEFAULT = 5
#: Synchronous OpenAI-style calls: a client is waiting on the socket.
PRIORITY_SYNC = 9
#: Batch lines: behind every interactive job.
PRIORITY_BATCH = 1


def queue_for_priority(priority: int, batch: bool = False) -> str:
    """Priorities 7-9 are interactive, 4-6 normal, 0-3 background; batch lines have a
    queue of their own, fed by the dispatcher."""
    if batch:
        return QUEUE_BATCH
    if priority >= 7:
        return QUEUE_HIGH
    if priority >= 4:
        return QUEUE_NORMAL
    return QUEUE_LOW


def broker_options(visibility_timeout: int, fleet: str) -> dict[str, Any]:
    """Celery settings that producer and workers must share.

    `queue_order_strategy=priority` makes Redis BRPOP the queues in QUEUES order, so
    interactive work overtakes background work; the visibility timeout must exceed the
    longest job or Redis redelivers a running job's message. On Redis every key of the
    broker starts with the fleet's name (`fleet`, models.fleet_name), so fleets sharing
    a Redis database keep their queues apart (AMQP ignores the option: there, a vhost
    per fleet).
    """
    return {
        "broker_transport_options": {
            "visibility_timeout": visibility_timeout,
            "queue_order_strategy": "priority",
            "global_keyprefix": f"{fleet}:",
        },
        "task_serializer": "json",
        "accept_content": ["json"],
        "broker_connection_retry_on_startup": True,
    }
