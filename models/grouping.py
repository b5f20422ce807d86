"""One thread that takes the work handed to it in groups (group commit): whatever waits
when it comes back from its last round goes into the next one. The API's intake writer,
and a worker's claimers and end writer, are each one of these."""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from typing import Generic, TypeVar

__all__ = ["GroupThread"]

log = logging.getLogger(__name__)

T = TypeVar("T")


class GroupThread(Generic[T]):
    def __init__(self, name: str, limit: int, handle: Callable[[list[T]], None]) -> None:
        """`handle(group)` runs on the thread for each group of up to `limit` items; it
        answers each item's waiter, even when it fails."""
        self._limit = limit
        self._handle = handle
        self._queue: queue.SimpleQueue[T | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def put(self, item: T) -> None:
        self._queue.put(item)

    def close(self, timeout: float) -> None:
        """Stop once what was handed over before is handled (or after `timeout`)."""
        self._queue.put(None)
        self._thread.join(timeout)

    def _run(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                return
            group, stop = self._take(first)
            try:
                self._handle(group)
            except Exception as exc:  # the thread outlives a broken round
                log.error("%s: a round failed: %s", self._thread.name, type(exc).__name__)
            if stop:
                return

    def _take(self, first: T) -> tuple[list[T], bool]:
        """`first` and what else waits, without blocking; True when a stop came after."""
        group = [first]
        while len(group) < self._limit:
            try:
                more = self._queue.get_nowait()
            except queue.Empty:
                break
            if more is None:
                return group, True
            group.append(more)
        return group, False
