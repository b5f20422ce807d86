"""The provider calls' HTTP clients: several pools, each thread sticking to one.

httpcore's connection pool looks at every connection it holds, under one lock, each
time a request starts and ends (`_assign_requests_to_connections`, `is_idle`,
`is_closed`, a readability check of each idle socket). With one pool for a process
holding 1,000 calls that is O(n) work per call and a lock all calls queue on; shards of
a few dozen connections keep both small. A thread uses the same shard for all its calls
(round robin at its first call), so the threads, not the calls, are spread."""

from __future__ import annotations

import itertools
import math
import threading
from collections.abc import Callable

import httpx2 as httpx

__all__ = ["HttpShards"]

#: Threads per shard.
SHARD_THREADS = 64


class HttpShards:
    def __init__(self, make: Callable[[int], httpx.Client], threads: int) -> None:
        """`make(max_connections)` builds one client; `threads` is how many threads may
        call at once (the process's line pool and task pool together)."""
        count = max(1, math.ceil(threads / SHARD_THREADS))
        per_shard = math.ceil(threads / count)
        self.clients = [make(per_shard + 16) for _ in range(count)]
        self._turn = itertools.count()
        self._local = threading.local()

    def client(self) -> httpx.Client:
        """This thread's client."""
        client: httpx.Client | None = getattr(self._local, "client", None)
        if client is None:
            client = self.clients[next(self._turn) % len(self.clients)]
            self._local.client = client
        return client

    def close(self) -> None:
        for client in self.clients:
            client.close()
