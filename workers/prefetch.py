"""A message that carries several batch lines counts one prefetch slot per line.

A worker reserves messages up to its prefetch count, `-c` (acks are late, the
multiplier is 1): one slot per call it may hold. A message of n lines would otherwise
count as one, and the worker would reserve n times more lines than it can run while
other workers wait. So when such a message arrives, the consumer lowers its prefetch
count by n - 1 before it asks the broker for the next message; the slots come back one
by one as the lines end (the message's own slot frees with its ack). This is how Celery
itself keeps countdown tasks from filling the prefetch (`QoS.increment_eventually` /
`decrement_eventually`, applied by the consumer's loop before its next read).

The count never goes below KEEP + 1, so a worker always has room for a new message (an
interactive job overtakes a batch that way); lines beyond the room still run, their
calls bounded by the line pool (`-c` threads), and the count stays at its floor until
they end. A reconnection brings a new QoS at the full count, which starts afresh.
"""

from __future__ import annotations

import threading
from typing import Any, Protocol

from workers.wake_pipe import WakePipe

__all__ = ["Prefetch", "Taken"]

#: Slots a worker always keeps for new messages (an interactive job, another batch).
KEEP = 1


class _QoS(Protocol):
    value: int

    def increment_eventually(self, n: int = 1) -> int: ...

    def decrement_eventually(self, n: int = 1) -> int: ...


class Taken:
    """The extra slots of one message, given back as its lines end."""

    def __init__(self, prefetch: Prefetch, count: int) -> None:
        self._prefetch = prefetch
        self.count = count

    def give(self, n: int = 1) -> None:
        back = min(n, self.count)
        if back > 0:
            self.count -= back
            self._prefetch.give_back(back)

    def give_all(self) -> None:
        self.give(self.count)


class Prefetch:
    """Keeps the consumer's prefetch count at `-c` minus the extra lines of the messages
    it runs, never below KEEP + 1. Lines beyond that room are a debt: the count stays at
    its floor until they end, so an over-full worker takes one more message at most."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._consumer: Any = None
        self._qos: _QoS | None = None
        #: Extra lines of the messages running (each message's lines - 1).
        self._extra = 0
        #: How far this has lowered the current QoS's count.
        self._lowered = 0
        self._by_message: dict[str, Taken] = {}
        #: Wakes the consumer's event loop to apply a count raised from a task's thread.
        self._pipe = WakePipe()

    def received(self, consumer: Any, message_id: str, lines: int) -> None:
        """A message of `lines` lines arrived (called in the consumer's thread, before
        the consumer reads on): count its extra lines until its task ends them."""
        self._pipe.watch(getattr(consumer, "hub", None), lambda: None)
        with self._lock:
            self._consumer = consumer
            extra = max(0, lines - 1)
            self._extra += extra
            self._by_message[message_id] = Taken(self, extra)
            self._apply()

    def taken(self, message_id: str) -> Taken | None:
        """The extra slots counted for this message, handed over once to its task."""
        with self._lock:
            return self._by_message.pop(message_id, None)

    def give_back(self, n: int) -> None:
        with self._lock:
            self._extra -= n
            self._apply()

    def _apply(self) -> None:
        qos: _QoS | None = getattr(self._consumer, "qos", None)
        if qos is None:
            return
        if qos is not self._qos:  # a new connection, a new QoS at the full count
            self._qos, self._lowered = qos, 0
        if qos.value <= 0 and not self._lowered:
            return  # no limit (prefetch 0): nothing to count against
        full = qos.value + self._lowered
        target = max(0, min(self._extra, full - KEEP - 1))
        if target > self._lowered:
            qos.decrement_eventually(target - self._lowered)
        elif target < self._lowered:
            qos.increment_eventually(self._lowered - target)
            self._pipe.wake()
        self._lowered = target
