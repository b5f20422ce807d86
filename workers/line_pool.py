"""The slots for the lines of several-line messages (`-c` of them), and the threads
that run them when calls hold threads (workers.calls.ThreadCalls).

A message's lines are claimed only as slots are free to run them (`take`), so a
claimed line never waits for room: the rest of the message stays `queued` in the
database, where a cancel or the batch's expiry still reaches it. A slot is given back
(`give`) when its line's run ends, or its future is cancelled before it started."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import ParamSpec, TypeVar

from workers.admission import Slots

__all__ = ["LinePool"]

P = ParamSpec("P")
T = TypeVar("T")


class LinePool(Slots):
    def __init__(self, size: int) -> None:
        super().__init__(size)
        self._executor = ThreadPoolExecutor(size, thread_name_prefix="llmfleet-line")

    def submit(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> Future[T]:
        """Run `fn` on a thread; its slot (reserved with `take`) is the caller's to give."""
        return self._executor.submit(fn, *args, **kwargs)

    def shutdown(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
