"""Where a claim's calls and waits happen: as coroutines on the process's event loop
(workers.event_loop).

A claim's run (`JobRun.route`) is a coroutine that awaits its calls and waits through
`Calls`; `start` hands it to the loop and returns a `concurrent.futures.Future` of the
run, for the task's thread and the writer (workers.writer)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Coroutine
from concurrent.futures import Future
from typing import Any, TypeVar

from models.stream_events import Delta
from workers.event_loop import EventLoop
from workers.providers.base import ProviderResult, Usage
from workers.providers.exchange import Exchange, StreamCall, send_async, stream_async
from workers.streaming import StreamAppender

__all__ = ["Calls", "drive"]

T = TypeVar("T")


class Calls:
    def __init__(self, loop: EventLoop) -> None:
        self._loop = loop
        #: Streamed jobs' events, appended to their Redis Streams (workers.streaming).
        self.streams = StreamAppender(loop.redis)

    async def send(self, exchange: Exchange, provider: str) -> ProviderResult:
        return await send_async(exchange, self._loop.client(), provider)

    def stream(self, call: StreamCall, provider: str) -> AsyncIterator[Delta | Usage]:
        return stream_async(call, self._loop.client(), provider)

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)

    def start(self, run: Coroutine[Any, Any, T]) -> Future[T]:
        return self._loop.submit(run)

    def close(self) -> None:
        self._loop.close()


def drive(run: Coroutine[Any, Any, T]) -> T:
    """The result of a coroutine that never suspends: the router's, on a blocking Redis
    client (its scripts' results come back in place; workers.router.state)."""
    try:
        run.send(None)
    except StopIteration as done:
        result: T = done.value
        return result
    run.close()
    raise RuntimeError("a coroutine driven in place awaited something that suspends")
