"""How far a batch has got, from one polled Batch object: counts, rate, ETA, and the
live bar that shows them. Pure apart from `ProgressView`, so tests need no server.

The rate is measured from the batch's own `in_progress_at` (server clock), so a bar
resumed later with `llmfleet batch status ID --wait` shows the same rate as the
first one did.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, Progress, TaskID, TextColumn

__all__ = ["END_STATES", "BatchProgress", "ProgressView", "describe", "format_duration", "measure"]

END_STATES = frozenset({"completed", "failed", "expired", "cancelled"})
#: Timestamps after which no more lines run, the earliest first.
_WORK_ENDED = ("finalizing_at", "completed_at", "cancelled_at", "expired_at", "failed_at")


@dataclass(frozen=True)
class BatchProgress:
    status: str
    total: int
    completed: int
    failed: int
    #: Finished lines per second since the batch started running; None before any.
    rate: float | None
    #: Seconds until every line is finished at that rate; None when unknown.
    eta: float | None

    @property
    def done(self) -> int:
        return self.completed + self.failed


def measure(batch: dict[str, Any], now: float) -> BatchProgress:
    """`now` is Unix seconds, like the batch's timestamps."""
    counts = batch.get("request_counts") or {}
    total, completed, failed = (int(counts.get(k) or 0) for k in ("total", "completed", "failed"))
    done = completed + failed
    started = batch.get("in_progress_at") or batch.get("created_at")
    ended = next((batch[k] for k in _WORK_ENDED if batch.get(k)), None)
    elapsed = (ended or now) - started if started else 0
    rate = done / elapsed if done and elapsed > 0 else None
    remaining = max(total - done, 0)
    eta: float | None = None
    if remaining == 0 and total:
        eta = 0.0
    elif rate and batch.get("status") not in END_STATES:
        eta = remaining / rate
    return BatchProgress(str(batch.get("status")), total, completed, failed, rate, eta)


def describe(progress: BatchProgress) -> str:
    """One line: `40/100 done, 3 failed, 12.5 lines/s, ETA 5s`."""
    return ", ".join(
        (
            f"{progress.done}/{progress.total} done",
            f"{progress.failed} failed",
            f"{format_rate(progress.rate)} lines/s",
            f"ETA {format_duration(progress.eta)}",
        )
    )


def format_rate(rate: float | None) -> str:
    if rate is None:
        return "-"
    if rate >= 10:
        return f"{rate:.0f}"
    return f"{rate:.1f}" if rate >= 1 else f"{rate:.2f}"


def format_duration(seconds: float | None) -> str:
    """`5s`, `2m05s`, `1h02m`, `2d03h`: as precise as a glance at a bar needs."""
    if seconds is None:
        return "-"
    whole = round(seconds)
    minutes, secs = divmod(whole, 60)
    hours, minutes = divmod(minutes, 60)
    days, hours = divmod(hours, 24)
    if days:
        return f"{days}d{hours:02d}h"
    if hours:
        return f"{hours}h{minutes:02d}m"
    if minutes:
        return f"{minutes}m{secs:02d}s"
    return f"{secs}s"


class ProgressView:
    """The live bar of one batch: call `update` with each polled Batch object. Where
    the console is no terminal (a CI log), a plain line every `plain_every` seconds
    instead, since a live bar would only be drawn at the end."""

    def __init__(self, console: Console, plain_every: float = 30.0) -> None:
        self._console = console
        self._plain_every = plain_every
        self._plain_at = -plain_every
        self._progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            TextColumn("{task.fields[info]}"),
            console=console,
        )
        self._task: TaskID = self._progress.add_task("", total=None, info="")

    def __enter__(self) -> ProgressView:
        self._progress.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._progress.stop()

    def update(self, batch: dict[str, Any], now: float) -> None:
        progress = measure(batch, now)
        self._progress.update(
            self._task,
            description=f"{escape(batch['id'])} [bold]{escape(progress.status)}[/]",
            total=progress.total or None,
            completed=progress.done,
            info=describe(progress),
        )
        if not self._console.is_terminal and time.monotonic() - self._plain_at >= self._plain_every:
            self._plain_at = time.monotonic()
            self._console.print(
                f"{batch['id']} {progress.status}: {describe(progress)}", markup=False
            )
