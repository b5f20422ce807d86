"""Jobs waiting for capacity hold no worker slot and no broker message: they sit in a
Redis sorted set scored by when they are due, and a waker thread in each worker
process re-publishes them when the time comes. No Celery countdown is used, so no
message can outlive the broker's visibility timeout and run twice (kombu #337).
If Redis loses the set, the sweeper finds the jobs by their `not_before` in the DB."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from importlib import resources

import redis

from models.fair_room import FairRoom
from models.redis_keys import DELAYED_JOBS

__all__ = ["DelayedJobs", "Waker"]

log = logging.getLogger(__name__)


class DelayedJobs:
    def __init__(self, client: redis.Redis) -> None:
        self._redis = client
        self._pop = client.register_script(
            resources.files("workers").joinpath("delayed.lua").read_text()
        )

    def add(self, job_id: str, priority: int, due_ms: int) -> None:
        self._redis.zadd(DELAYED_JOBS, {f"{job_id}|{priority}": due_ms})

    def pop_due(self, now_ms: int, limit: int = 500) -> list[tuple[str, int]]:
        out = []
        for member in self._pop(keys=[DELAYED_JOBS], args=[now_ms, limit]):
            job_id, _, priority = member.decode().partition("|")
            out.append((job_id, int(priority or 5)))
        return out


class Waker(threading.Thread):
    """Every `interval` seconds, publish the jobs that are due."""

    def __init__(
        self,
        delayed: DelayedJobs,
        publish: Callable[[str, int], None],
        fair: FairRoom | None = None,
        interval: float = 0.25,
    ) -> None:
        super().__init__(name="llmfleet-waker", daemon=True)
        self._delayed = delayed
        self._publish = publish
        self._fair = fair
        self._interval = interval
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.wait(self._interval):
            try:
                now_ms = int(time.time() * 1000)
                for job_id, priority in self._delayed.pop_due(now_ms):
                    self._publish(job_id, priority)
                # the fair rooms' jobs whose capacity came due (models.fair_room)
                for released in self._fair.tick(now_ms) if self._fair is not None else ():
                    self._publish(released.job_id, released.priority)
            except Exception as exc:  # keep waking; the sweeper covers what is lost
                log.warning("waker: %s", type(exc).__name__)

    def stop(self) -> None:
        self._stop_event.set()
