"""Prometheus plumbing that the API and the workers share.

Each process kind defines its own series (`producer_api/metrics.py`,
`workers/metrics.py`); both expose them with `exposition_registry()`, which
aggregates across processes when `PROMETHEUS_MULTIPROC_DIR` is set (prometheus-client
multiprocess mode: an API run with several uvicorn workers), and is the process's own
registry otherwise (one execute worker = one process with the threads pool).

Label values that callers control are capped (`LabelCap`): a fleet serving wildcard
model groups, or many keys, cannot blow up the number of series.
"""

from __future__ import annotations

import os
import threading

from prometheus_client import REGISTRY, CollectorRegistry
from prometheus_client import multiprocess as prometheus_multiprocess

__all__ = ["MULTIPROC_ENV", "OTHER", "LabelCap", "exposition_registry"]

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
#: The label value of everything past a cap, and of an unknown value.
OTHER = "_other"
MAX_LABEL_LENGTH = 64


def exposition_registry() -> CollectorRegistry:
    """The registry to serve: every process's values in multiprocess mode, else this
    process's own."""
    if os.environ.get(MULTIPROC_ENV):
        registry = CollectorRegistry()
        prometheus_multiprocess.MultiProcessCollector(registry)
        return registry
    return REGISTRY


class LabelCap:
    """At most `limit` distinct values of one label in this process, each at most 64
    characters; values first seen after the cap is reached are reported as `_other`.
    Cheap on the hot path: a set lookup for a value already seen."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._seen: set[str] = set()
        self._lock = threading.Lock()

    def __call__(self, value: str | None) -> str:
        if not value:
            return OTHER
        value = value[:MAX_LABEL_LENGTH]
        if value in self._seen:
            return value
        with self._lock:
            if value in self._seen or len(self._seen) < self.limit:
                self._seen.add(value)
                return value
        return OTHER
