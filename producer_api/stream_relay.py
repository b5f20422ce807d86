"""Relay a streamed job's events from its Redis Stream (models/stream_events.py) to a
caller, from the start or after the last event it saw: any API process can serve a
client that reconnects, since the events live in Redis, not here.

The relay yields `Piece`s and ends with one `Finished`. It follows one claim's
generation: if the job is taken over by a new claim after this caller was sent part of
an older one (its worker died midway), the relay ends with a `stream_interrupted`
error rather than mix two generations. When the stream has no end of its own (an
answer from the response cache, a job that ended before its first call, Redis having
lost the stream), the job's row finishes it: what the caller has not been sent of the
stored answer, then its end."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import redis

from models.redis_keys import job_stream
from models.stream_events import Assembly, Delta, End, Entry, decode_entry, deltas_of
from models.tables import TERMINAL_STATUSES, Job, JobStatus
from producer_api.auth import Caller
from producer_api.context import ApiContext
from producer_api.errors import ApiError
from producer_api.jobs_service import load_job, wait_for_end
from producer_api.stream_hub import Follower

__all__ = ["Finished", "Piece", "check_event_id", "relay"]

log = logging.getLogger(__name__)

#: How often Redis failures of the relays are logged, at most.
WARN_EVERY_S = 10.0
#: How long a relay waits for news before it looks at the job's row.
BLOCK_S = 5.0
#: How long the relay waits for the row of a job whose stream has ended to be stored.
ROW_WAIT_S = 10.0
_EVENT_ID = re.compile(r"\d{1,20}-\d{1,20}")


@dataclass(frozen=True, slots=True)
class Piece:
    """One delta, with the id a client resumes after."""

    id: str
    delta: Delta


@dataclass(frozen=True, slots=True)
class Finished:
    """The job's end: `status`, the OpenAI `usage` object, the stored error."""

    status: str
    usage: dict[str, Any] | None = None
    error: dict[str, Any] | None = None


def check_event_id(value: str | None) -> str:
    """A client's `Last-Event-ID`: an id this API sent (else a 400)."""
    if value is None or value == "":
        return "0-0"
    if not _EVENT_ID.fullmatch(value):
        raise ApiError(
            400, "Last-Event-ID is not an event id of this stream", param="Last-Event-ID"
        )
    return value


async def relay(
    ctx: ApiContext, caller: Caller, job_id: str, after: str = "0-0"
) -> AsyncIterator[Piece | Finished]:
    """The job's events after `after`, as they are appended, then its end."""
    key = job_stream(job_id)
    sent = Assembly()
    attempt = await _latest_attempt(ctx, key)
    woken = asyncio.Event()  # new entries, the job's end, or Redis failing
    async with (
        ctx.waiters.watch(job_id, woken),
        ctx.hub.follow(key, after, woken) as follower,
    ):
        while True:
            entries = await _next(ctx, key, follower)
            if not entries:
                job = await asyncio.to_thread(load_job, ctx, caller, job_id)
                if job.status not in TERMINAL_STATUSES:
                    continue
                entries = await _next(ctx, key, follower, 0)  # the last ones, had the hub lagged
                if not entries:
                    for item in _rest_from_row(job, sent, follower.after):
                        yield item
                    return
            for entry in entries:
                if attempt is None or (entry.attempt > attempt and not sent.choices):
                    attempt = entry.attempt  # the newest claim's, as long as none was sent
                if entry.attempt < attempt:
                    continue
                if entry.attempt > attempt:
                    yield _interrupted(job_id)
                    return
                if isinstance(entry.event, End):
                    end = entry.event
                    if end.status == JobStatus.SUCCEEDED and not sent.choices:
                        # answered with no deltas (the response cache): the row has it
                        job = await asyncio.to_thread(load_job, ctx, caller, job_id)
                        for item in _rest_from_row(job, sent, entry.id):
                            yield item
                        return
                    yield Finished(end.status, end.usage, end.error)
                    return
                sent.add(entry.event)
                yield Piece(entry.id, entry.event)


async def _next(
    ctx: ApiContext, key: str, follower: Follower, wait_s: float = BLOCK_S
) -> list[Entry]:
    """The entries the hub hands over, as soon as there are any (within `wait_s`). When
    woken with none (the job's end announced, Redis failing) or at the timeout, a read
    of its own: the hub may not have read the last ones yet."""
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(wait_s):
            await follower.woken.wait()
    entries = follower.take()
    if entries:
        return entries
    return follower.accept(await _xread(ctx, key, follower.after, None))


async def _xread(ctx: ApiContext, key: str, after: str, block: int | None) -> list[Entry]:
    try:
        result: Any = await ctx.streams.xread({key: after}, count=500, block=block)
    except redis.RedisError as exc:
        _warn(exc)
        await asyncio.sleep(1.0)  # Redis away: the row tells the end
        return []
    return [decode_entry(ident, fields) for _, items in result or () for ident, fields in items]


async def _latest_attempt(ctx: ApiContext, key: str) -> int | None:
    try:
        last: Any = await ctx.streams.xrevrange(key, count=1)
    except redis.RedisError as exc:
        _warn(exc)
        return None
    return decode_entry(*last[0]).attempt if last else None


_warned_at = 0.0


def _warn(exc: Exception) -> None:
    """Say that Redis failed a relay, at most every WARN_EVERY_S (one stream or a
    thousand, the cause is the same)."""
    global _warned_at
    now = time.monotonic()
    if now - _warned_at >= WARN_EVERY_S:
        _warned_at = now
        log.warning("stream relay: Redis failed (%s); relaying from the rows", type(exc).__name__)


def _rest_from_row(job: Job, sent: Assembly, after: str) -> list[Piece | Finished]:
    """The end of a job whose stream has none: what the caller was not sent of the
    stored answer (when it continues what was sent), then the job's end."""
    usage = job.openai_usage()
    if job.status != JobStatus.SUCCEEDED or job.response is None:
        return [Finished(str(job.status), usage, job.error)]
    sent_text = {i: "".join(c.content) for i, c in sent.choices.items()}
    rest: list[Piece | Finished] = []
    for delta in deltas_of(job.response):
        if delta.content is not None and delta.index in sent_text:
            done = sent_text[delta.index]
            if not delta.content.startswith(done) or delta.tool_calls:
                return [_interrupted(job.id)]
            delta = Delta(delta.index, delta.content[len(done) :] or None)
            if delta.content is None:
                continue
        choice = sent.choices.get(delta.index)
        if delta.finish_reason is not None and choice is not None and choice.finish_reason:
            continue  # its end was sent
        rest.append(Piece(after, delta))
    return [*rest, Finished(str(job.status), usage, None)]


def _interrupted(job_id: str) -> Finished:
    return Finished(
        "failed",
        error={
            "message": (
                "the worker streaming this answer was lost midway and the job was restarted; "
                f"its answer will be at GET /v1/jobs/{job_id}"
            ),
            "type": "api_error",
            "param": None,
            "code": "stream_interrupted",
            "status_code": 502,
        },
    )


async def stored_end(ctx: ApiContext, caller: Caller, job_id: str) -> Job:
    """The job's row once its end is stored (a stream's end can come first)."""
    return await wait_for_end(ctx, caller, job_id, ROW_WAIT_S)
