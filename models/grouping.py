"""Taking work handed to one thread in groups (group commit): whatever waits in the
queue when the thread comes back from its last round goes into the next one."""

from __future__ import annotations

import queue
from typing import TypeVar

__all__ = ["take_group"]

T = TypeVar("T")


def take_group(waiting: queue.SimpleQueue[T | None], first: T, limit: int) -> tuple[list[T], bool]:
    """`first` and what else waits (up to `limit` in all), without blocking; True when a
    None (stop) came after them."""
    group = [first]
    while len(group) < limit:
        try:
            more = waiting.get_nowait()
        except queue.Empty:
            break
        if more is None:
            return group, True
        group.append(more)
    return group, False
