"""One blocking XREAD per API process for every stream it relays.

Each relayed stream follows its job's Redis Stream through the hub: the hub's one
XREAD names every stream followed, from the last entry read of each, and hands what it
returns to the streams' followers. Under load one call returns the entries of many
streams; a stream costs no connection of its own. A new stream (or one that resumes
further back than the others on its key) pokes the hub through a stream of the hub's
own, named in the same XREAD, so that the call in flight returns at once and the next
names it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import AsyncIterator
from typing import Any

import redis
import redis.asyncio as aioredis

from models.redis_keys import RELAY_POKE_MAXLEN, RELAY_POKE_TTL_S, relay_pokes
from models.stream_events import Entry, decode_entry

__all__ = ["Follower", "StreamHub", "entry_order"]

log = logging.getLogger(__name__)

#: How long the hub's XREAD blocks before it is made again (a bound, not a pace); under
#: redis-py's default socket timeout (5 s), which would cut a longer one as a failure.
HUB_BLOCK_MS = 2_000
#: How long the hub waits before reading again after Redis failed it.
RETRY_S = 1.0


def entry_order(entry_id: str) -> tuple[int, int]:
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)


class Follower:
    """One relay's view of a stream: the entries handed to it, unread, and `woken`,
    set when there are some (or when something else should make it look: the job's
    end, Redis failing)."""

    __slots__ = ("after", "entries", "woken")

    def __init__(self, after: str, woken: asyncio.Event) -> None:
        self.after = after
        self.entries: list[Entry] = []
        self.woken = woken

    def take(self) -> list[Entry]:
        """The entries handed over since the last take, past `after` (which follows)."""
        self.woken.clear()
        entries, self.entries = self.entries, []
        return self.accept(entries)

    def accept(self, entries: list[Entry]) -> list[Entry]:
        """`entries` past `after`, each once, in order (a stream read again from
        further back repeats some); `after` moves to the last."""
        out, last = [], entry_order(self.after)
        for entry in entries:
            order = entry_order(entry.id)
            if order > last:
                out.append(entry)
                last = order
        if out:
            self.after = out[-1].id
        return out


class StreamHub:
    def __init__(self, client: aioredis.Redis) -> None:
        self._redis = client
        self._pokes = relay_pokes(uuid.uuid4().hex)
        self._pokes_after = "0-0"
        self._followers: dict[str, set[Follower]] = {}
        #: Per stream followed, the last entry the hub has read.
        self._positions: dict[str, str] = {}
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="stream-hub")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
        with contextlib.suppress(redis.RedisError):
            await self._redis.delete(self._pokes)

    @contextlib.asynccontextmanager
    async def follow(self, key: str, after: str, woken: asyncio.Event) -> AsyncIterator[Follower]:
        """Follow stream `key` from after entry `after`; `woken` is set with news."""
        follower = Follower(after, woken)
        self._followers.setdefault(key, set()).add(follower)
        known = self._positions.get(key)
        if known is None or entry_order(after) < entry_order(known):
            self._positions[key] = after
            await self._poke()
        try:
            yield follower
        finally:
            followers = self._followers.get(key)
            if followers is not None:
                followers.discard(follower)
                if not followers:
                    del self._followers[key]
                    self._positions.pop(key, None)

    async def _poke(self) -> None:
        """Make the XREAD in flight return, so that the next one names the new stream."""
        try:
            async with self._redis.pipeline(transaction=False) as pipe:
                pipe.xadd(self._pokes, {"p": "1"}, maxlen=RELAY_POKE_MAXLEN, approximate=True)
                pipe.expire(self._pokes, RELAY_POKE_TTL_S)
                await pipe.execute()
        except redis.RedisError:
            pass  # the hub's own read fails too, and wakes every follower

    async def _run(self) -> None:
        while True:
            streams: dict[Any, Any] = {self._pokes: self._pokes_after, **self._positions}
            try:
                result: Any = await self._redis.xread(streams, count=500, block=HUB_BLOCK_MS)
            except redis.RedisError as exc:
                log.warning(
                    "stream hub: Redis failed (%s); relays read the rows", type(exc).__name__
                )
                self._wake_all()
                await asyncio.sleep(RETRY_S)
                continue
            for raw_key, items in result or ():
                self._hand_over(raw_key.decode(), items)

    def _hand_over(self, key: str, items: list[Any]) -> None:
        if key == self._pokes:
            self._pokes_after = items[-1][0].decode()
            return
        entries = [decode_entry(ident, fields) for ident, fields in items]
        if key in self._positions:
            self._positions[key] = entries[-1].id
        for follower in self._followers.get(key, ()):
            after = entry_order(follower.after)
            new = [e for e in entries if entry_order(e.id) > after]
            if new:
                follower.entries += new
                follower.woken.set()

    def _wake_all(self) -> None:
        for followers in self._followers.values():
            for follower in followers:
                follower.woken.set()
