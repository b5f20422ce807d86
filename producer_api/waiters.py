"""Long-poll support: one Redis subscription per API process fans job-end events out to
every request waiting on that job, so waiters never poll the database."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import defaultdict
from collections.abc import AsyncIterator

import redis.asyncio as aioredis

from models.redis_keys import JOB_EVENTS_CHANNEL

__all__ = ["JobWaiters"]

log = logging.getLogger(__name__)

RECONNECT_DELAY = 1.0
STOP_WAIT_S = 2.0


class JobWaiters:
    def __init__(self, redis_url: str) -> None:
        self._redis_url = redis_url
        self._events: dict[str, set[asyncio.Event]] = defaultdict(set)
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._listen(), name="job-waiters")

    async def stop(self) -> None:
        """Cancel the listener; a subscription caught mid-connect may swallow the first
        cancellation, so shutdown waits a bounded time and cancels again."""
        if self._task is None:
            return
        for _ in range(3):
            self._task.cancel()
            done, _ = await asyncio.wait({self._task}, timeout=STOP_WAIT_S)
            if done:
                break
        with contextlib.suppress(asyncio.CancelledError, Exception):
            if self._task.done():
                self._task.result()

    @contextlib.asynccontextmanager
    async def watch(
        self, job_id: str, event: asyncio.Event | None = None
    ) -> AsyncIterator[asyncio.Event]:
        """Register before reading the row, so an end announced in between is not missed;
        `event` (a new one by default) is set when the job ends."""
        if event is None:
            event = asyncio.Event()
        self._events[job_id].add(event)
        try:
            yield event
        finally:
            waiters = self._events.get(job_id)
            if waiters is not None:
                waiters.discard(event)
                if not waiters:
                    del self._events[job_id]

    async def _listen(self) -> None:
        while True:
            client = aioredis.Redis.from_url(self._redis_url)
            try:
                async with client.pubsub() as pubsub:
                    await pubsub.subscribe(JOB_EVENTS_CHANNEL)
                    async for message in pubsub.listen():
                        if message.get("type") == "message":
                            self._wake(message["data"].decode())
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("job events subscription lost (%s); reconnecting", type(exc).__name__)
                # Waiters re-read the row at their own timeout, so a gap only delays them.
                self._wake_all()
                await asyncio.sleep(RECONNECT_DELAY)
            finally:
                await client.aclose()

    def _wake(self, job_id: str) -> None:
        for event in self._events.get(job_id, ()):
            event.set()

    def _wake_all(self) -> None:
        for events in self._events.values():
            for event in events:
                event.set()
