"""Fair share between tenants where capacity is short (docs/ROUTING.md, "Fair share
between tenants").

A job that finds its model group out of capacity (every deployment at its parallel,
rpm or tpm limit, or cooling down) waits in the group's room in Redis, in its tenant's
queue, holding no worker slot and no broker message. Jobs are let through in fair
order: strictly by tier (models.fair_share), then the tenant with the least recent
usage (tokens, decaying with a half-life) per weight, so a tenant that floods the
fleet waits behind everybody else's next job and one that stopped flooding is treated
as new within a few half-lives. Within a tenant, by priority, then first come.

What lets jobs through: a call that ends on the group (its capacity is free now: one
job), the capacity a job waits for coming due (a limit's window, a cooldown: as many
jobs as came due), and, lest a room wait for nothing, one job after a second without
any. A job let through carries a ticket: the next worker to claim it runs it at once,
and should the capacity be gone again it goes back to the head of its queue.

While a room has jobs waiting, a job arriving at it goes first only if its tenant
has none waiting and would be let through before every one that waits; else it
waits too. Contention only ever delays a job: the 429s a caller sees come from its
key's own limits (producer_api.access), never from other tenants' load.

The fleet's workers are a capacity too. While a worker's general lane is full (`busy`)
or jobs wait for a free worker, a new normal or background job waits in its queue's
fleet room (FLEET_GROUP) and a turn message, with no job named, goes to the broker in
its stead: a worker that takes a turn runs the job the room lets through then
(`next_turn`). The broker's order does not matter: whichever turn comes first, the
job that goes is the fair one.
"""

from __future__ import annotations

import functools
import time
from dataclasses import dataclass
from importlib import resources
from typing import Any

from models import redis_keys as rk
from models.fair_share import Share, tier_rank

__all__ = [
    "ROOM_LEASE_S",
    "Admit",
    "Entry",
    "FairRoom",
    "Released",
    "Waiting",
    "fleet_group",
    "waited_s",
]

#: A room with no job let through for this long lets one through.
IDLE_MS = 1_000
#: The most jobs a room lets through per tick for capacity coming due.
TICK_CAP = 16
#: Usage counts for half as much after this long.
DEFAULT_HALF_LIFE_S = 30.0
#: Score of an entry: (9 - priority) * SPAN + the ms it entered (models priorities 0-9).
SPAN = 10**13
#: A job waiting in a room is published again by the sweeper if still there after this
#: (the room lost it: its row's `not_before`); a job let through sooner never waits so.
ROOM_LEASE_S = 120.0
#: The fleet room of a queue's jobs waiting for a free worker: "@workers/<queue>".
FLEET_GROUP = "@workers/"
#: A worker's full lane marks the fleet busy for this long (renewed while it is full).
BUSY_MS = 2_000


def fleet_group(queue: str) -> str:
    return FLEET_GROUP + queue


@functools.cache
def _lua() -> str:
    return resources.files("models").joinpath("fair_room.lua").read_text()


@dataclass(frozen=True, slots=True)
class Admit:
    """May the job try the group now; `score` is set when the room let it through."""

    go: bool
    contended: bool
    score: float | None = None
    #: Told to wait, the job is its tenant's first in the room: it may wait in place.
    first: bool = False


def waited_s(score: float, now_ms: int) -> float:
    """How long the entry of `score` had waited in its room at `now_ms`."""
    return max(0.0, (now_ms - score % SPAN) / 1000)


@dataclass(frozen=True, slots=True)
class Entry:
    """A job that may wait in `group`'s room."""

    group: str
    share: Share
    job_id: str
    priority: int
    cost: int
    #: The fleet room the job may wait in for a free worker ("": none).
    fleet: str = ""


@dataclass(frozen=True, slots=True)
class Released:
    group: str
    job_id: str
    priority: int


@dataclass(frozen=True, slots=True)
class Waiting:
    """A tenant's jobs waiting in a group's room."""

    group: str
    tenant: str
    tier: str
    jobs: int
    #: How long the tenant's next job has waited.
    next_waited_s: float


def entry(job_id: str, priority: int, cost: int) -> str:
    return f"{job_id}|{priority}|{cost}"


def entry_score(priority: int, now_ms: int) -> int:
    return (9 - max(0, min(9, priority))) * SPAN + now_ms


def _now_ms() -> int:
    return int(time.time() * 1000)


class FairRoom:
    """The rooms of every group; `client` (a blocking Redis client) serves the threads,
    `loop_client` (an asyncio one) the event loop's coroutines (workers.runner). Both
    are the caller's: models hold no connection of their own."""

    def __init__(
        self,
        client: Any,
        loop_client: Any = None,
        half_life_s: float = DEFAULT_HALF_LIFE_S,
    ) -> None:
        self._redis = client
        self._script = client.register_script(_lua())
        self._loop_client = loop_client
        self._loop_script = loop_client.register_script(_lua()) if loop_client else None
        self._half_ms = max(1, int(half_life_s * 1000))
        self.prefix = f"{rk.PREFIX}:fair"
        self.rooms_key = f"{self.prefix}:rooms"

    def _args(self, op: str, now_ms: int, *rest: Any) -> list[Any]:
        return [op, self.prefix, now_ms, self._half_ms, *rest]

    async def admit(self, group: str, share: Share, cost: int, job_id: str) -> Admit:
        assert self._loop_script is not None
        args = self._args(
            "admit",
            _now_ms(),
            group,
            share.tenant,
            tier_rank(share.tier),
            share.weight,
            cost,
            job_id,
        )
        go, waiting, score, first = await self._loop_script(keys=[self.rooms_key], args=args)
        return Admit(
            bool(go), int(waiting) > 0, float(score) if score is not None else None, bool(first)
        )

    def wait(
        self,
        group: str,
        share: Share,
        job_id: str,
        priority: int,
        cost: int,
        *,
        due_ms: int | None,
        score: float | None,
    ) -> int:
        """Put the job in the group's room (back at its place when `score`, the entry
        it was let through from, is given); returns the tenants waiting there."""
        refund = cost if score is not None else 0
        args = self._wait_args(group, share, job_id, priority, cost, due_ms, score, refund)
        return int(self._script(keys=[self.rooms_key], args=args))

    async def wait_here(
        self,
        group: str,
        share: Share,
        job_id: str,
        priority: int,
        cost: int,
        due_ms: int | None,
        score: float | None,
        refund: int,
    ) -> None:
        """`wait`, from the loop: for a job that waits for its ticket in place. What
        letting it go charged its tenant (`refund`) is given back: its release charges
        it again."""
        assert self._loop_script is not None
        args = self._wait_args(group, share, job_id, priority, cost, due_ms, score, refund)
        await self._loop_script(keys=[self.rooms_key], args=args)

    async def take_ticket(self, job_id: str) -> float | None:
        """The score of the job's entry if the room let it through (its ticket, taken)."""
        assert self._loop_client is not None
        score = await self._loop_client.getdel(f"{self.prefix}:ticket:{job_id}")
        return float(score) if score is not None else None

    def _wait_args(
        self,
        group: str,
        share: Share,
        job_id: str,
        priority: int,
        cost: int,
        due_ms: int | None,
        score: float | None,
        refund: int,
    ) -> list[Any]:
        now = _now_ms()
        return self._args(
            "wait",
            now,
            group,
            share.tenant,
            _described(share),
            entry(job_id, priority, cost),
            score if score is not None else entry_score(priority, now),
            due_ms or 0,
            refund,
        )

    def divert(self, entries: list[Entry]) -> list[int]:
        """New jobs whose tenant has jobs waiting in their group's room join them there
        (1); else, while the fleet is busy or others wait for a free worker, they wait
        in their fleet room (2: a turn is owed to the broker); else 0. One round trip."""
        if not entries:
            return []
        now = _now_ms()
        pipe = self._redis.pipeline(transaction=False)
        for e in entries:
            args = self._args("divert", now, e.group, e.share.tenant, _described(e.share))
            member, score = entry(e.job_id, e.priority, e.cost), entry_score(e.priority, now)
            self._script(keys=[self.rooms_key], args=[*args, member, score, e.fleet], client=pipe)
        return [int(answer) for answer in pipe.execute()]

    def busy(self) -> None:
        """A worker's lane is full: new jobs wait in the fleet rooms for a while."""
        self._redis.set(f"{self.prefix}:@busy", 1, px=BUSY_MS)

    def next_turn(self, group: str) -> tuple[Released, float] | None:
        """The job a fleet room lets through for a worker's turn, and how long it
        waited (s); None when the room is empty."""
        now = _now_ms()
        got = self._script(keys=[self.rooms_key], args=self._args("release", now, group, 1))
        if not got:
            return None
        return _released(group, got[0]), waited_s(float(got[1]), now)

    async def release(self, group: str, n: int = 1) -> list[Released]:
        """Let up to `n` jobs of the group through (its capacity is free now)."""
        assert self._loop_script is not None
        args = self._args("release", _now_ms(), group, n)
        got = await self._loop_script(keys=[self.rooms_key], args=args)
        return [_released(group, got[i]) for i in range(0, len(got), 2)]

    def tick(self, now_ms: int | None = None) -> list[Released]:
        """The jobs whose capacity came due, and one from each idle room."""
        args = self._args("tick", now_ms or _now_ms(), IDLE_MS, TICK_CAP)
        got = self._script(keys=[self.rooms_key], args=args)
        return [_released(_text(got[i]), got[i + 1]) for i in range(0, len(got), 3)]

    def waiting(self) -> list[Waiting]:
        """Every tenant's jobs waiting, per group (for /v1/deployments, /ui, metrics)."""
        now = _now_ms()
        out = []
        for raw in self._redis.zrange(self.rooms_key, 0, -1):
            group = _text(raw)
            base = f"{self.prefix}:{group}"
            tenants = {
                _text(k): _text(v) for k, v in self._redis.hgetall(f"{base}:tenants").items()
            }
            pipe = self._redis.pipeline(transaction=False)
            for tenant in tenants:
                pipe.zcard(f"{base}:q:{tenant}")
                pipe.zrange(f"{base}:q:{tenant}", 0, 0, withscores=True)
            answers = pipe.execute()
            for i, (tenant, described) in enumerate(tenants.items()):
                count, head = answers[2 * i], answers[2 * i + 1]
                if not count or not head:
                    continue
                waited = max(0.0, (now - head[0][1] % SPAN) / 1000)
                out.append(Waiting(group, tenant, described.split("|", 2)[2], int(count), waited))
        return out


def _described(share: Share) -> str:
    return f"{tier_rank(share.tier)}|{share.weight!r}|{share.tier}"


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _released(group: str, member: Any) -> Released:
    job_id, priority, _ = _text(member).split("|", 2)
    return Released(group, job_id, int(priority))
