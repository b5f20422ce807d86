"""How many runs a worker process admits at once, per lane.

A worker whose calls run on its event loop admits up to its concurrency (`-c`) in each
of two lanes: the interactive lane (messages from the interactive queue: a person or an
app waiting on the answer) and the general lane (normal and background jobs, batch
lines). A lane full of batch lines never holds up an interactive job. A slot is taken
before a job is claimed and given back once its end is stored, so a claimed job never
waits for room: jobs not claimed stay `queued` in the database, where a cancel or an
expiry still reaches them."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field

from models.contract import QUEUE_HIGH

__all__ = ["Admission", "Slots", "lines_per_message"]


def lines_per_message(setting: int, concurrency: int) -> int:
    """Batch lines sent to a message: at most a quarter of a worker's `-c`, so that a
    worker always has room for several messages' lines. The batch tick runs on a
    worker and goes by its own `-c`."""
    return max(1, min(setting, concurrency // 4))


class Slots:
    def __init__(self, size: int) -> None:
        self.size = size
        self._free = size
        self._cond = threading.Condition()
        self._watchers: list[Callable[[int], None]] = []

    def watch(self, watcher: Callable[[int], None]) -> None:
        """Call `watcher(free)` after every change (in the thread that made it)."""
        self._watchers.append(watcher)

    def _tell(self, free: int) -> None:
        for watcher in self._watchers:
            watcher(free)

    def take(self, want: int, timeout: float) -> int:
        """Reserve up to `want` slots; waits up to `timeout` for one if none is free.
        Returns how many were reserved (maybe 0)."""
        with self._cond:
            if self._free <= 0 and timeout > 0:
                self._cond.wait_for(lambda: self._free > 0, timeout)
            got = max(0, min(want, self._free))
            self._free -= got
            free = self._free
        if got:
            self._tell(free)
        return got

    def take_one(self) -> None:
        """Wait for a slot as long as it takes."""
        while not self.take(1, timeout=1.0):
            pass

    def give(self, n: int = 1) -> None:
        """Hand back slots taken (the run ended, or will not start)."""
        if n > 0:
            with self._cond:
                self._free += n
                self._cond.notify(n)
                free = self._free
            self._tell(free)


@dataclass
class Admission:
    concurrency: int
    interactive: Slots = field(init=False)
    general: Slots = field(init=False)

    def __post_init__(self) -> None:
        self.interactive = Slots(self.concurrency)
        self.general = Slots(self.concurrency)

    def lane(self, queue: str | None) -> Slots:
        """The lane of a message delivered from `queue` (None: not known, general)."""
        return self.interactive if queue == QUEUE_HIGH else self.general
