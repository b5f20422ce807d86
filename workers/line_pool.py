"""The slots for the lines of several-line messages (`-c` of them), and the threads
that run them when calls hold threads (workers.calls.ThreadCalls).

A message's lines are claimed only as slots are free to run them (`take`), so a
claimed line never waits for room: the rest of the message stays `queued` in the
database, where a cancel or the batch's expiry still reaches it. A slot is given back
(`give`) when its line's run ends, or its future is cancelled before it started."""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import ParamSpec, TypeVar

__all__ = ["LinePool"]

P = ParamSpec("P")
T = TypeVar("T")


class LinePool:
    def __init__(self, size: int) -> None:
        self.size = size
        self._free = size
        self._cond = threading.Condition()
        self._executor = ThreadPoolExecutor(size, thread_name_prefix="llmfleet-line")

    def take(self, want: int, timeout: float) -> int:
        """Reserve up to `want` threads; waits up to `timeout` for one if none is free.
        Returns how many were reserved (maybe 0)."""
        with self._cond:
            if self._free <= 0 and timeout > 0:
                self._cond.wait_for(lambda: self._free > 0, timeout)
            got = max(0, min(want, self._free))
            self._free -= got
            return got

    def give(self, n: int) -> None:
        """Hand back reserved threads that will not be used."""
        if n > 0:
            with self._cond:
                self._free += n
                self._cond.notify(n)

    def submit(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> Future[T]:
        """Run `fn` on a thread; its slot (reserved with `take`) is the caller's to give."""
        return self._executor.submit(fn, *args, **kwargs)

    def shutdown(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
