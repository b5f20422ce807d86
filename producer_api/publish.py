"""Publishing execute messages by task name; the producer never imports worker code."""

from __future__ import annotations

import logging

from celery import Celery

from models import fleet_name
from models.contract import (
    BATCH_TICK_TASK,
    EXECUTE_TASK,
    FAIR_TURN_TASK,
    QUEUE_HIGH,
    WEBHOOK_QUEUE,
    WEBHOOK_TASK,
    broker_options,
    queue_for_priority,
)
from models.settings import CommonSettings

__all__ = ["Publisher"]

log = logging.getLogger(__name__)


class Publisher:
    def __init__(self, settings: CommonSettings) -> None:
        self._celery = Celery("llmfleet-producer", broker=settings.broker_url)
        self._celery.conf.update(broker_options(settings.visibility_timeout, fleet_name.current()))

    def publish_execute(self, job_id: str, priority: int) -> bool:
        """True when the broker took the message. False leaves the job for the sweeper,
        which publishes jobs the broker never received."""
        try:
            self._celery.send_task(
                EXECUTE_TASK,
                args=[job_id],
                queue=queue_for_priority(priority),
                retry=True,
                retry_policy={"max_retries": 2, "interval_start": 0.1, "interval_step": 0.5},
            )
        except Exception as exc:
            log.warning("job %s: publish failed (%s); the sweeper will retry", job_id, exc)
            return False
        return True

    def publish_turn(self, queue: str) -> bool:
        """A turn on `queue` for a job waiting in its fleet room. False when the broker
        did not take it: the room's idle tick lets the job through in time."""
        try:
            self._celery.send_task(
                FAIR_TURN_TASK,
                queue=queue,
                retry=True,
                retry_policy={"max_retries": 2, "interval_start": 0.1, "interval_step": 0.5},
            )
        except Exception as exc:
            log.warning("a turn on %s not published (%s)", queue, type(exc).__name__)
            return False
        return True

    def publish_webhook(self, delivery_id: str) -> bool:
        """True when the broker took the message. False leaves the delivery for the
        sweeper, which publishes pending deliveries long past due."""
        try:
            self._celery.send_task(
                WEBHOOK_TASK,
                args=[delivery_id],
                queue=WEBHOOK_QUEUE,
                retry=True,
                retry_policy={"max_retries": 2, "interval_start": 0.1, "interval_step": 0.5},
            )
        except Exception as exc:
            log.warning("webhook %s: publish failed (%s); the sweeper will retry", delivery_id, exc)
            return False
        return True

    def publish_batch_tick(self) -> None:
        """Ask the workers' batch dispatcher to look now rather than at its next beat;
        losing this only delays the batch to that beat."""
        try:
            self._celery.send_task(BATCH_TICK_TASK, queue=QUEUE_HIGH, retry=False)
        except Exception as exc:
            log.warning("batch tick not sent (%s); beat will run it", type(exc).__name__)

    def close(self) -> None:
        self._celery.close()
