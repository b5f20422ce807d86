"""The consumer takes general-lane messages only while the general lane has room.

On the loop a task claims its job, or its message's lines, as its lane has room. A
message taken while the general lane is full would wait for room in a task's thread,
holding one of the consumer's prefetch slots, and an interactive message arriving then
would wait for that slot (docs/BENCHMARKS.md, "The loop as the default"), its jobs
reserved by a worker that cannot start them. So the consumer stops consuming the
general lane's queues (normal, low, batch) when the lane has less room than a batch
message's lines, and consumes them again once it has room for two: their messages wait
in the broker, where any worker with room takes them. The interactive queue is always
consumed. A message that arrives all the same (taken just before the pause, or pushed
ahead by RabbitMQ) is sent back to its queue rather than wait
(`execute.execute_job`, `execute.execute_lines`).

The gate runs in the consumer's thread (a bootstep; kombu's consumer is not
thread-safe): the lane's slots tell it of a change of side through a pipe that the
consumer's event loop watches. It resumes only what it paused: a queue cancelled by an
operator (`celery control cancel_consumer`) stays cancelled."""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from typing import Any

from celery import bootsteps

from models.contract import QUEUE_BATCH, QUEUE_LOW, QUEUE_NORMAL
from workers.admission import Slots

__all__ = ["GateStep", "LaneGate"]

log = logging.getLogger(__name__)

#: The queues whose jobs take the general lane's slots (workers.admission).
GENERAL_QUEUES = (QUEUE_NORMAL, QUEUE_LOW, QUEUE_BATCH)


class LaneGate:
    def __init__(self, lane: Slots, room: int) -> None:
        self._lane = lane
        #: Pause below `room` free slots; resume at `2 * room` (or a free lane).
        self._pause_below = room
        self._resume_at = min(lane.size, 2 * room)
        self._consumer: Any = None
        #: The queues this gate stopped consuming (an operator's cancel is left alone).
        self._paused: set[str] = set()
        self._want_paused = False
        self._lock = threading.Lock()
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        lane.watch(self._changed)

    def attach(self, consumer: Any) -> None:
        """In the consumer's thread, as it starts (again, after a reconnection: a new
        task consumer consumes every queue it was started with)."""
        self._consumer = consumer
        self._paused.clear()
        hub = getattr(consumer, "hub", None)
        if hub is not None and self._wake_r not in hub.readers:
            hub.add_reader(self._wake_r, self._apply)
        self._apply()

    def _changed(self, free: int) -> None:
        """From any thread, as the lane's slots change: wake the consumer when the side
        of the threshold changes."""
        with self._lock:
            want = free < self._pause_below or (self._want_paused and free < self._resume_at)
            if want == self._want_paused:
                return
            self._want_paused = want
        with contextlib.suppress(OSError):  # full: a wake-up is pending anyway
            os.write(self._wake_w, b"\0")

    def _apply(self) -> None:
        with contextlib.suppress(OSError):
            while os.read(self._wake_r, 4096):
                pass
        tasks = getattr(self._consumer, "task_consumer", None)
        if tasks is None:
            return
        with self._lock:
            want = self._want_paused
        if want:
            for queue in GENERAL_QUEUES:
                if queue not in self._paused and tasks.consuming_from(queue):
                    tasks.cancel_by_queue(queue)
                    self._paused.add(queue)
            log.debug("general lane full: %s paused", sorted(self._paused))
        elif self._paused:
            resumed = [q for q in self._paused if not tasks.consuming_from(q)]
            self._paused.clear()
            for queue in resumed:
                tasks.add_queue(self._consumer.app.amqp.queues[queue])
            if resumed:
                tasks.consume()
                log.debug("general lane has room: %s resumed", resumed)


class GateStep(bootsteps.StartStopStep):
    """Attaches the process's gate, if it has one (calls on the loop), to the consumer."""

    requires = ("celery.worker.consumer.tasks:Tasks",)

    def start(self, c: Any) -> None:
        gate = getattr(c.app, "lane_gate", None)
        if gate is not None:
            gate.attach(c)
