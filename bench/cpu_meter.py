"""CPU-seconds of sets of processes over a benchmark's window, and how busy the machine was.

The fleet is many processes, some of them shared servers found by name (redis-server,
postgres), some starting or ending during the run: CpuMeter samples while the run goes
on, so none of their CPU is lost or counted twice.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import psutil
from pools import cpu_seconds

__all__ = ["CpuMeter", "busy_pct", "named", "postgres", "redis_server"]


@dataclass
class CpuMeter:
    """CPU-seconds of a changing set of processes (each with its children, as
    bench/pools.py counts them) over a window, sampled as it runs: a process that ends
    counts up to its last sample, one that starts from zero."""

    find: Callable[[], Iterable[psutil.Process]]
    start: dict[tuple[int, float], float] = field(default_factory=dict)
    last: dict[tuple[int, float], float] = field(default_factory=dict)
    begun: bool = False

    def sample(self) -> None:
        for proc in self.find():
            try:
                key, cpu = (proc.pid, proc.create_time()), cpu_seconds(proc)
            except psutil.Error:
                continue
            self.start.setdefault(key, cpu if not self.begun else 0.0)
            self.last[key] = cpu
        self.begun = True

    def seconds(self) -> float:
        return sum(self.last[k] - self.start[k] for k in self.last)


def named(name: str, where: Callable[[list[str]], bool] = lambda _: True) -> list[psutil.Process]:
    found = []
    for proc in psutil.process_iter(["name", "cmdline", "ppid"]):
        if proc.info["name"] == name and where(proc.info["cmdline"] or []):
            found.append(proc)
    return found


def redis_server() -> list[psutil.Process]:
    """The server the fleet uses: the one on TEST_REDIS_BASE's port (default 6379)."""
    port = urlsplit(os.environ.get("TEST_REDIS_BASE", "redis://127.0.0.1:6379")).port or 6379
    return named("redis-server", lambda argv: bool(argv) and argv[0].endswith(f":{port}"))


def postgres(postmaster: psutil.Process | None) -> Callable[[], list[psutil.Process]]:
    """The private cluster, else every postgres server on the machine: postmasters
    only, as cpu_seconds adds each process's live and ended children (the backends)."""
    if postmaster is not None:
        return lambda: [postmaster]

    def roots() -> list[psutil.Process]:
        procs = named("postgres")
        pids = {p.pid for p in procs}
        return [p for p in procs if p.info["ppid"] not in pids]

    return roots


def busy_pct(before: Any, after: Any) -> float:
    idle = (after.idle + after.iowait) - (before.idle + before.iowait)
    return round(100 * (1 - idle / (sum(after) - sum(before))), 1)
