"""The consumer takes general-lane messages only while the general lane has room.

On the loop a task claims its job, or its message's lines, as its lane has room. A
message taken while the general lane is full would wait for room in a task's thread,
holding one of the consumer's prefetch slots, and an interactive message arriving then
would wait for that slot (docs/BENCHMARKS.md, "The loop as the default"), its jobs
reserved by a worker that cannot start them. So the consumer stops consuming the
batch queue when the lane has less room than a batch message's lines (and consumes it
again at room for two), and the normal and low queues when the lane has no room (again
once a twentieth of it, at least 2 slots, is free): their messages wait in the broker,
where any worker with room takes them. The interactive queue is always consumed. A
message that arrives all the same (taken just before the pause, or pushed ahead by
RabbitMQ) is sent back to its queue rather than wait (`execute.execute_job`,
`execute.execute_lines`).

The consumer's prefetch (messages it may hold unacknowledged) is bounded by the lane
too: about a lane's worth of batch messages (`-c` over the lines per message, at least
2), not `-c` messages of up to that many lines each. A worker acknowledges a message
within milliseconds, once it has claimed its jobs, so the bound costs no throughput, and
RabbitMQ, which pushes a consumer as many messages as its prefetch allows, stops pushing
a worker lines it would only send back.

The gate runs in the consumer's thread (a bootstep; kombu's consumer is not
thread-safe): the lane's slots tell it of a change of side through a pipe that the
consumer's event loop watches. It resumes only what it paused: a queue cancelled by an
operator (`celery control cancel_consumer`) stays cancelled."""

from __future__ import annotations

import logging
import math
import threading
from dataclasses import dataclass
from typing import Any

from celery import bootsteps

from models.contract import QUEUE_BATCH, QUEUE_LOW, QUEUE_NORMAL
from workers.admission import Slots
from workers.wake_pipe import WakePipe

__all__ = ["GateStep", "LaneGate"]

log = logging.getLogger(__name__)


@dataclass
class _Gate:
    """Queues consumed while the lane has room: paused below `pause_below` free slots,
    resumed at `resume_at` (hysteresis, so a lane at its edge does not toggle per job)."""

    queues: tuple[str, ...]
    pause_below: int
    resume_at: int
    want_paused: bool = False

    def wants_pause(self, free: int) -> bool:
        return free < self.pause_below or (self.want_paused and free < self.resume_at)


class LaneGate:
    def __init__(self, lane: Slots, lines_per_message: int) -> None:
        size = lane.size
        #: Batch messages need room for their lines; a normal or low job for itself.
        self._gates = (
            _Gate((QUEUE_BATCH,), lines_per_message, min(size, 2 * lines_per_message)),
            _Gate((QUEUE_NORMAL, QUEUE_LOW), 1, min(size, max(2, size // 20))),
        )
        #: The consumer's prefetch count: a lane's worth of batch messages.
        self.prefetch = max(2, math.ceil(size / lines_per_message))
        self._consumer: Any = None
        #: The queues this gate stopped consuming (an operator's cancel is left alone).
        self._paused: set[str] = set()
        self._lock = threading.Lock()
        self._pipe = WakePipe()
        lane.watch(self._changed)

    def attach(self, consumer: Any) -> None:
        """In the consumer's thread, as it starts (again, after a reconnection: a new
        task consumer consumes every queue it was started with)."""
        self._consumer = consumer
        self._paused.clear()
        self._pipe.watch(getattr(consumer, "hub", None), self._apply)
        self._apply()

    def _changed(self, free: int) -> None:
        """From any thread, as the lane's slots change: wake the consumer when a gate
        should open or close."""
        changed = False
        with self._lock:
            for gate in self._gates:
                want = gate.wants_pause(free)
                if want != gate.want_paused:
                    gate.want_paused, changed = want, True
        if changed:
            self._pipe.wake()

    def _apply(self) -> None:
        """In the consumer's loop: nothing raised here may reach it (an exception there
        stops the consumer for good). A broker that cannot be reached now leaves the
        change for the next wake-up, or for the consumer's reconnection, which starts
        afresh with every queue (`attach`)."""
        try:
            self._switch()
        except Exception as exc:
            log.warning("lane gate: queues not switched: %s", type(exc).__name__)

    def _switch(self) -> None:
        tasks = getattr(self._consumer, "task_consumer", None)
        if tasks is None:
            return
        with self._lock:
            wanted = [(gate.queues, gate.want_paused) for gate in self._gates]
        resumed = []
        for queues, paused in wanted:
            for queue in queues:
                if paused and queue not in self._paused and tasks.consuming_from(queue):
                    tasks.cancel_by_queue(queue)
                    self._paused.add(queue)
                    log.debug("general lane full: %s paused", queue)
                elif not paused and queue in self._paused:
                    if not tasks.consuming_from(queue):
                        tasks.add_queue(self._consumer.app.amqp.queues[queue])
                        resumed.append(queue)
                    self._paused.discard(queue)
        if resumed:
            tasks.consume()
            log.debug("general lane has room: %s resumed", resumed)


class GateStep(bootsteps.StartStopStep):
    """Attaches the process's gate, if it has one (a worker's), to the consumer."""

    requires = ("celery.worker.consumer.tasks:Tasks",)

    def start(self, c: Any) -> None:
        gate = getattr(c.app, "lane_gate", None)
        if gate is not None:
            # After Tasks.start, on every (re)connection: its count is Celery's `-c`.
            c.initial_prefetch_count = c.qos.value = gate.prefetch
            c.qos.update()
            gate.attach(c)
