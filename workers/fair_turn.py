"""A claim's dealings with the fair rooms of the model groups it tries
(models.fair_room): asked before its first call to a group whether it may go now, it
waits in the group's room when capacity is short, and each call that ends on a
contended group lets the next job through."""

from __future__ import annotations

import asyncio
import logging
import time

import redis

from models.batch_lines import estimate_request_tokens
from models.fair_room import FairRoom, waited_s
from models.fair_share import MASTER_SHARE, Share
from workers import metrics
from workers.jobstore import Claim
from workers.resources import WorkerContext
from workers.router import Saturated
from workers.waits import RoomWait

__all__ = ["FairTurn", "due_of"]

log = logging.getLogger(__name__)

#: A group stays "contended" in this process this long after a room was seen busy.
CONTENDED_S = 5.0
#: A job let ahead of a busy room that finds no free call waits in place for its ticket
#: this long at most (polling every WAIT_POLL_S), before it gives its worker slot back.
WAIT_HERE_S = 1.0
WAIT_POLL_S = 0.01


def due_of(choice: Saturated) -> tuple[float, bool]:
    """When capacity may be back, and whether only a call's end frees it (a parallel
    calls limit) rather than a time (a window, a cooldown)."""
    return time.time() + choice.wait_ms / 1000, set(choice.reasons.values()) == {"max_parallel"}


class FairTurn:
    def __init__(self, ctx: WorkerContext, claim: Claim, share: Share | None) -> None:
        self._ctx = ctx
        self._room: FairRoom | None = ctx.fair
        self._claim = claim
        self.share = share or MASTER_SHARE
        self._cost = 0
        if self._room is not None:  # what the job's turn costs its tenant: its tokens
            self._cost = claim.estimated_tokens or estimate_request_tokens(claim.request)
        self._asked: set[str] = set()
        #: Groups whose busy room let this job go ahead of the jobs waiting there.
        self._ahead: set[str] = set()
        #: Until when (monotonic) the job may wait in place for its ticket, per group.
        self._here_until: dict[str, float] = {}
        #: The place this job had in a group's room, when the room let it through.
        self._scores: dict[str, float] = {}

    @property
    def on(self) -> bool:
        return self._room is not None

    async def admit(self, group: str) -> RoomWait | None:
        """None when the job may try `group` now; else its wait in the group's room.
        Asked once per group and claim. A job told to wait that is its tenant's first
        in the room waits there in place first (`wait_here`). Without Redis the job
        goes: fairness is soft."""
        if self._room is None or group in self._asked:
            return None
        self._asked.add(group)
        try:
            admit = await self._room.admit(group, self.share, self._cost, self._claim.job_id)
        except redis.RedisError as exc:
            log.warning("fair room of %s not reached: %s", group, type(exc).__name__)
            return None
        if admit.contended:
            _contended[group] = time.monotonic() + CONTENDED_S
        if admit.score is not None:
            self._scores[group] = admit.score
            self._waited(admit.score)
        if admit.go:
            if admit.contended and admit.score is None:
                self._ahead.add(group)
            return None
        if admit.first:
            self._here_until[group] = time.monotonic() + WAIT_HERE_S
            if await self._wait_here(group, None, charged=False):
                return None
        return RoomWait(group, self.share, self._cost, None, self._scores.get(group))

    async def wait_here(self, group: str, due_s: float, by_call_end: bool) -> bool:
        """A job let ahead of a busy room found no free call: it takes its place at the
        head of the room and waits for its ticket in place (the next call to end lets
        it through), saving the trip through the database and the broker. Should
        another job take the call its ticket was for, it goes back to its place and
        waits again, WAIT_HERE_S in all. True when it got a ticket; False when it
        should wait in the room as any job does."""
        if self._room is None:
            return False
        charged = group in self._ahead  # letting it go ahead charged its tenant
        if charged:
            self._ahead.discard(group)
            self._here_until[group] = time.monotonic() + WAIT_HERE_S
        elif group not in self._here_until:
            return False
        return await self._wait_here(group, None if by_call_end else int(due_s * 1000), charged)

    async def _wait_here(self, group: str, due_ms: int | None, charged: bool) -> bool:
        """Wait in the group's room for a ticket, polling, until `_here_until`. The
        message that announces a release finds the job running and is turned away."""
        assert self._room is not None
        claim, until = self._claim, self._here_until[group]
        score = self._scores.get(group)  # a ticket's: back to its place, its charge back
        refund = self._cost if charged or score is not None else 0
        try:
            await self._room.wait_here(
                group, self.share, claim.job_id, claim.priority, self._cost, due_ms, score, refund
            )
            while time.monotonic() < until:
                await asyncio.sleep(WAIT_POLL_S)
                score = await self._room.take_ticket(claim.job_id)
                if score is not None:
                    self._scores[group] = score
                    self._waited(score)
                    return True
        except redis.RedisError as exc:
            log.warning("fair room of %s not reached: %s", group, type(exc).__name__)
        del self._here_until[group]
        return False

    def _waited(self, score: float) -> None:
        waited = waited_s(score, int(time.time() * 1000))
        metrics.tenant_waited(self.share.tenant, self.share.tier, waited)

    def room_wait(self, group: str, due_s: float, by_call_end: bool) -> RoomWait | None:
        """The wait in the group's room of a job that found it out of capacity; None
        with fair share off. `by_call_end`: only a call's end frees what it waits for
        (a parallel-calls limit), not a time."""
        if self._room is None:
            return None
        _contended[group] = time.monotonic() + CONTENDED_S
        due_ms = None if by_call_end else int(due_s * 1000)
        return RoomWait(group, self.share, self._cost, due_ms, self._scores.get(group))

    async def call_ended(self, group: str) -> None:
        """A call on `group` ended, freeing its capacity: on a contended group, let the
        next job through (published off the loop: kombu blocks)."""
        if self._room is None or _contended.get(group, 0.0) < time.monotonic():
            return
        try:
            released = await self._room.release(group, 1)
        except redis.RedisError as exc:
            log.warning("fair room of %s not reached: %s", group, type(exc).__name__)
            return
        for job in released:
            try:
                await asyncio.to_thread(self._ctx.publish_execute, job.job_id, job.priority)
            except Exception as exc:  # its row waits on: the sweeper publishes it
                log.warning("job %s let through, not published: %s", job.job_id, type(exc).__name__)


#: Groups whose room was seen busy, until when (monotonic): shared by the process's runs.
_contended: dict[str, float] = {}
