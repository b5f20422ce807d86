"""A pipe that wakes the Celery consumer's event loop from another thread.

kombu's consumer is not thread-safe, and its loop acts on a change (a new prefetch
count, a queue to stop or resume) only when it wakes: a change made from a task's
thread would otherwise wait for its next timer, up to a second. A byte written here
wakes it, and the callback given to `watch` runs in the consumer's thread."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable
from typing import Any

__all__ = ["WakePipe"]


class WakePipe:
    def __init__(self) -> None:
        self._read, self._write = os.pipe()
        os.set_blocking(self._read, False)
        os.set_blocking(self._write, False)

    def watch(self, hub: Any, callback: Callable[[], None]) -> None:
        """Run `callback` in the consumer's thread after each wake-up (called in that
        thread; once per hub)."""
        readers = getattr(hub, "readers", None)
        if readers is None or self._read in readers:
            return

        def woken() -> None:
            self.drain()
            callback()

        hub.add_reader(self._read, woken)

    def wake(self) -> None:
        with contextlib.suppress(OSError):  # full: a wake-up is pending anyway
            os.write(self._write, b"\0")

    def drain(self) -> None:
        with contextlib.suppress(OSError):
            while os.read(self._read, 4096):
                pass
