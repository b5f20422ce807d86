"""Where a claim's calls and waits happen: as coroutines on the process's event loop
(the default, workers.event_loop), or on the worker's threads, each call holding its
thread (`LLMFLEET_WORKER_LOOP=0`).

A claim's run (`JobRun.route`) is written once, as a coroutine that awaits its calls
and waits through one of these. `ThreadCalls` awaits nothing that suspends (a call is a
blocking request inside an `async def`), so `start` takes a run to its end in one step
in the calling thread (`drive`); `LoopCalls.start` hands it to the loop. Either way
`start` returns a `concurrent.futures.Future` of the run."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Coroutine
from concurrent.futures import Future
from typing import Any, Protocol, TypeVar

from workers.event_loop import EventLoop
from workers.http_shards import HttpShards
from workers.providers.base import ProviderResult
from workers.providers.exchange import Exchange, send, send_async

__all__ = ["Calls", "LoopCalls", "ThreadCalls", "drive"]

T = TypeVar("T")


class Calls(Protocol):
    async def send(self, exchange: Exchange, provider: str) -> ProviderResult: ...

    async def sleep(self, seconds: float) -> None: ...

    def start(self, run: Coroutine[Any, Any, T]) -> Future[T]: ...

    def close(self) -> None: ...


class ThreadCalls:
    def __init__(self, shards: HttpShards) -> None:
        self._shards = shards

    async def send(self, exchange: Exchange, provider: str) -> ProviderResult:
        return send(exchange, self._shards.client(), provider)

    async def sleep(self, seconds: float) -> None:
        time.sleep(seconds)

    def start(self, run: Coroutine[Any, Any, T]) -> Future[T]:
        future: Future[T] = Future()
        try:
            future.set_result(drive(run))
        except BaseException as exc:
            future.set_exception(exc)
        return future

    def close(self) -> None:
        self._shards.close()


class LoopCalls:
    def __init__(self, loop: EventLoop) -> None:
        self._loop = loop

    async def send(self, exchange: Exchange, provider: str) -> ProviderResult:
        return await send_async(exchange, self._loop.client(), provider)

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)

    def start(self, run: Coroutine[Any, Any, T]) -> Future[T]:
        return self._loop.submit(run)

    def close(self) -> None:
        self._loop.close()


def drive(run: Coroutine[Any, Any, T]) -> T:
    """The result of a coroutine that never suspends (its awaits are ThreadCalls')."""
    try:
        run.send(None)
    except StopIteration as done:
        result: T = done.value
        return result
    run.close()
    raise RuntimeError("a run on ThreadCalls awaited something that suspends")
