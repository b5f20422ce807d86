"""The worker process's event loop: one asyncio loop, in a thread of its own, on which
every provider call of the process runs as a coroutine, through its `httpx.AsyncClient`s.

A call waiting on its provider holds a coroutine (a few KB), not a thread: a process
holds thousands. Tasks hand a claim's calls over with `submit` (a
`concurrent.futures.Future` to wait on or to gather with others). The router's scripts
(pick and report) are awaited through a `redis.asyncio` client of the loop's own; the
response cache's, rarer, still run in place with the process's blocking client
(ARCHITECTURE.md, "The worker loop").

The clients are shards of one pool: httpcore's pool looks at every connection it holds
each time a request starts and ends, so one pool of 1,000 connections spends much of
the loop's time there (40% of its samples at 1,000 calls in flight). Each call takes
the next shard in turn, `SHARD_CONNECTIONS` calls' worth each (docs/BENCHMARKS.md)."""

from __future__ import annotations

import asyncio
import itertools
import math
import threading
from collections.abc import Callable, Coroutine
from concurrent.futures import Future
from typing import Any, TypeVar

import httpx2 as httpx
import redis.asyncio as aioredis

__all__ = ["EventLoop", "client_shards"]

T = TypeVar("T")

#: How long `close` waits for the loop to finish what it runs.
CLOSE_TIMEOUT_S = 5.0
#: Calls in flight per client shard.
SHARD_CONNECTIONS = 64


def client_shards(make: Callable[[int], httpx.AsyncClient], calls: int) -> list[httpx.AsyncClient]:
    """Clients for `calls` calls at once: `make(max_connections)` builds one shard, with
    some room beyond its share for calls that land unevenly."""
    count = max(1, math.ceil(calls / SHARD_CONNECTIONS))
    return [make(math.ceil(calls / count) + 16) for _ in range(count)]


class EventLoop:
    def __init__(
        self,
        clients: list[httpx.AsyncClient],
        redis: aioredis.Redis,
        name: str = "llmfleet-loop",
    ) -> None:
        #: The provider calls' clients (`client()`); used on the loop only.
        self._clients = clients
        #: The loop's Redis client, closed with the loop.
        self._redis = redis
        self._turn = itertools.cycle(clients)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name=name, daemon=True)
        self._thread.start()

    @property
    def redis(self) -> aioredis.Redis:
        """The loop's Redis client (the router's scripts, streamed jobs' events)."""
        return self._redis

    def client(self) -> httpx.AsyncClient:
        """The client for the next call (called on the loop)."""
        return next(self._turn)

    def submit(self, coro: Coroutine[Any, Any, T]) -> Future[T]:
        """Run `coro` on the loop; cancelling the future cancels it there."""
        return asyncio.run_coroutine_threadsafe(coro, self._loop)

    def close(self) -> None:
        if not self._thread.is_alive():
            return
        self.submit(self._close_clients()).result(CLOSE_TIMEOUT_S)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(CLOSE_TIMEOUT_S)
        if not self._thread.is_alive():
            self._loop.close()

    async def _close_clients(self) -> None:
        for client in self._clients:
            await client.aclose()
        await self._redis.aclose()
