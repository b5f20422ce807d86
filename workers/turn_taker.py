"""A worker's part in the fleet rooms (models.fair_room): jobs waiting for a free worker.

While the worker's general lane is full it marks the fleet busy in Redis, so that new
normal and background jobs wait in their queue's fleet room, each with a turn message
in the broker, instead of in the broker's order. And as long as its lane was full
lately, each slot it frees goes at once to the job the room lets through then: the
worker takes the turn itself rather than wait for its lane gate to resume its queues
and for a turn message to arrive (workers.lane_gate). The turns in the broker then
find the room emptier and do nothing; they are there for the workers with room."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

import redis

from models.fair_intake import FLEET_QUEUES
from models.fair_room import FairRoom
from workers.execute import run_turn
from workers.resources import WorkerContext

__all__ = ["TurnTaker"]

log = logging.getLogger(__name__)

#: A full lane marks the fleet busy at most this often (the mark lasts fair_room.BUSY_MS).
BUSY_MARK_EVERY_S = 0.5
#: The worker takes turns itself for this long after its lane was last full.
ACTIVE_S = 3.0
#: After a turn that failed (the database or Redis away), the next try waits this long.
FAILED_PAUSE_S = 1.0


class TurnTaker:
    def __init__(
        self, ctx: WorkerContext, room: FairRoom, publish_webhook: Callable[[str], None]
    ) -> None:
        self._ctx = ctx
        self._room = room
        self._publish_webhook = publish_webhook
        self._lock = threading.Lock()
        self._next_mark = 0.0
        self._active_until = 0.0
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="llmfleet-turns", daemon=True)

    def start(self) -> None:
        self._ctx.admission.general.watch(self._changed)
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        self._wake.set()
        self._thread.join(timeout=5)

    def _changed(self, free: int) -> None:
        """From any thread, as the general lane's slots change."""
        now = time.monotonic()
        if free > 0:
            if now < self._active_until:
                self._wake.set()
            return
        with self._lock:
            self._active_until = now + ACTIVE_S
            if now < self._next_mark:
                return
            self._next_mark = now + BUSY_MARK_EVERY_S
        try:
            self._room.busy()
        except redis.RedisError as exc:  # the broker's order then: fairness is soft
            log.info("fleet not marked busy: %s", type(exc).__name__)

    def _run(self) -> None:
        while not self._stopping.is_set():
            self._wake.wait()
            self._wake.clear()
            while not self._stopping.is_set() and time.monotonic() < self._active_until:
                try:
                    if not self._take_one():
                        break
                except Exception as exc:  # the turns in the broker go on meanwhile
                    log.warning("turn not taken: %s", type(exc).__name__)
                    self._stopping.wait(FAILED_PAUSE_S)
                    break

    def _take_one(self) -> bool:
        """Start the next job waiting for a free worker in a free slot of the general
        lane; False when there is no free slot or no job waiting."""
        lane = self._ctx.admission.general
        for queue in FLEET_QUEUES:
            if not lane.take(1, timeout=0):
                return False
            if run_turn(self._ctx, queue, self._publish_webhook, lane) is not None:
                return True
        return False
