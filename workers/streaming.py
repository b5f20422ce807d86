"""A streamed call: each delta the provider sends is appended to the job's Redis Stream
as it arrives (for the API to relay), and the deltas are put together into the whole
answer, which is stored on the job's row like any other (models/stream_events.py).

Before its first delta a streamed call fails like any other and is retried or falls
back as the error says (docs/ROUTING.md); after it, a retry would send the caller a
second generation, so an error ends the job (`BrokenStream`) with what was sent. A
cancel asked for through the API stops the call within about a second
(`StoppedStream`): the connection is closed, which stops the provider's generation.

`StreamAppender` writes every run's deltas on the loop in one pipeline per round
trip, and reads back with them whether those jobs were asked to cancel. The stream's
last entry, the job's end, is written by the writer once the row is stored
(`end_stream`), so a client that has read the end finds the stored job."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import redis
import redis.asyncio as aioredis

from models.batch_lines import estimate_tokens
from models.redis_keys import (
    JOB_STREAM_MAXLEN,
    JOB_STREAM_TTL_AFTER_END_S,
    JOB_STREAM_TTL_S,
    job_cancel,
    job_stream,
)
from models.stream_events import Assembly, Delta, End, decode_entry, encode_entry
from models.tables import JobStatus
from workers.jobstore import Claim, Outcome
from workers.providers.base import ProviderResult, Usage, openai_usage
from workers.providers.errors import ProviderError

__all__ = [
    "BrokenStream",
    "StoppedStream",
    "StreamAppender",
    "StreamedCall",
    "end_stream",
    "interrupted",
]

log = logging.getLogger(__name__)

#: How often a stream that sends nothing looks for a cancel of its own.
CANCEL_CHECK_S = 1.0


class BrokenStream(Exception):
    """The provider failed after deltas were sent: the job ends with `error`."""

    def __init__(self, error: ProviderError, usage: Usage) -> None:
        super().__init__(error.message)
        self.error = error
        self.usage = usage


class StoppedStream(Exception):
    """The job was asked to cancel while its stream ran."""

    def __init__(self, usage: Usage) -> None:
        super().__init__("cancelled")
        self.usage = usage


@dataclass
class _Pending:
    job_id: str
    fields: dict[str, str]
    done: asyncio.Future[bool] = field(repr=False)


class StreamAppender:
    """Appends streamed jobs' events (on the worker's loop). What arrives while a write
    is out goes in the next pipeline: one round trip for every stream's latest events.
    Redis being away loses deltas, not the answer: the API then relays the row."""

    def __init__(self, client: aioredis.Redis) -> None:
        self._redis = client
        self._pending: list[_Pending] = []
        #: The flush running, if any (kept: the loop holds its tasks weakly).
        self._flushing: asyncio.Task[None] | None = None

    async def append(self, job_id: str, attempt: int, delta: Delta) -> bool:
        """Append `delta`; True when the job has been asked to cancel. (A stream's end
        is appended once the job's row is stored: `end_stream`.)"""
        done: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        entry = _Pending(job_id, encode_entry(attempt, delta), done)
        self._pending.append(entry)
        if self._flushing is None:
            self._flushing = asyncio.get_running_loop().create_task(self._flush())
        return await done

    async def lost_generation(self, job_id: str, attempt: int) -> int | None:
        """When an earlier claim streamed part of an answer and then was lost (its
        worker died), how many deltas it sent; None when there is no such part."""
        try:
            last: Any = await self._redis.xrevrange(job_stream(job_id), count=1)
            if not last:
                return None
            entry = decode_entry(*last[0])
            if entry.attempt >= attempt or isinstance(entry.event, End):
                return None
            entries: Any = await self._redis.xrange(job_stream(job_id))
        except redis.RedisError:
            return None  # the stream is gone with Redis: nothing of it can be relayed
        sent = [decode_entry(*e) for e in entries]
        return sum(1 for e in sent if e.attempt == entry.attempt and isinstance(e.event, Delta))

    async def cancel_asked(self, job_id: str) -> bool:
        try:
            return bool(await self._redis.exists(job_cancel(job_id)))
        except redis.RedisError:
            return False

    async def _flush(self) -> None:
        try:
            while self._pending:
                batch, self._pending = self._pending, []
                await self._write(batch)
        finally:
            self._flushing = None

    async def _write(self, batch: list[_Pending]) -> None:
        pipe = self._redis.pipeline(transaction=False)
        for entry in batch:
            key = job_stream(entry.job_id)
            pipe.xadd(key, entry.fields, maxlen=JOB_STREAM_MAXLEN, approximate=True)  # type: ignore[arg-type]
        jobs = list(dict.fromkeys(entry.job_id for entry in batch))
        for job_id in jobs:
            pipe.expire(job_stream(job_id), JOB_STREAM_TTL_S)
        for job_id in jobs:
            pipe.exists(job_cancel(job_id))
        try:
            results = await pipe.execute()
        except redis.RedisError as exc:
            log.warning("%d stream event(s) not appended: %s", len(batch), type(exc).__name__)
            cancelled: set[str] = set()
        except BaseException:  # the loop closing: no run waits on these forever
            for entry in batch:
                entry.done.cancel()
            raise
        else:
            asked = results[-len(jobs) :]
            cancelled = {job_id for job_id, hit in zip(jobs, asked, strict=True) if hit}
        for entry in batch:
            if not entry.done.done():
                entry.done.set_result(entry.job_id in cancelled)


@dataclass
class StreamedCall:
    """One streamed call of claim `attempt` of job `job_id`."""

    appender: StreamAppender
    job_id: str
    attempt: int
    request: dict[str, Any]
    model: str
    assembly: Assembly = field(default_factory=Assembly)
    usage: Usage | None = None

    @property
    def started(self) -> bool:
        return bool(self.assembly.choices)

    async def run(self, deltas: AsyncIterator[Delta | Usage]) -> ProviderResult:
        """Relay `deltas` (a provider's stream) to the job's stream; the whole answer.
        Raises the provider's error before the first delta, BrokenStream after it,
        StoppedStream on a cancel."""
        reader = asyncio.ensure_future(self._relay(deltas))
        try:
            while True:
                done, _ = await asyncio.wait({reader}, timeout=CANCEL_CHECK_S)
                if done:
                    break
                if await self.appender.cancel_asked(self.job_id):
                    raise StoppedStream(self.estimated_usage())
            reader.result()  # the provider's error, or a cancel seen with a delta
        except ProviderError as exc:
            if self.started:
                raise BrokenStream(exc, self.estimated_usage()) from exc
            raise
        finally:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await reader
            with contextlib.suppress(Exception):
                await deltas.aclose()  # type: ignore[attr-defined]
        return self._result()

    async def _relay(self, deltas: AsyncIterator[Delta | Usage]) -> None:
        async for item in deltas:
            if isinstance(item, Usage):
                self.usage = item
                continue
            await self._append(item)

    async def _append(self, delta: Delta) -> None:
        self.assembly.add(delta)
        if await self.appender.append(self.job_id, self.attempt, delta):
            raise StoppedStream(self.estimated_usage())

    def estimated_usage(self) -> Usage:
        """The provider's usage if it sent one, else an estimate: the prompt's tokens
        estimated as at intake, one token per delta of text sent."""
        if self.usage is not None:
            return self.usage
        prompt = estimate_tokens(self.request)
        return Usage(prompt, self.assembly.pieces, prompt + self.assembly.pieces)

    def _result(self) -> ProviderResult:
        ident = f"chatcmpl-{self.job_id}"
        response = self.assembly.completion(ident, self.model, int(time.time()))
        usage = self.estimated_usage()
        response["usage"] = {
            "prompt_tokens": usage.prompt_tokens,
            "completion_tokens": usage.completion_tokens,
            "total_tokens": usage.total_tokens,
        }
        return ProviderResult(response=response, usage=usage)


async def interrupted(appender: StreamAppender, claim: Claim) -> Outcome | None:
    """A streamed job whose earlier claim sent part of an answer and was lost ends
    `failed`, rather than start a second generation in the same stream; what the lost
    claim generated is billed (estimated from its deltas)."""
    sent = await appender.lost_generation(claim.job_id, claim.attempt)
    if sent is None:
        return None
    prompt = estimate_tokens(claim.request)
    message = (
        "the worker streaming this answer was lost midway; the call was not restarted, "
        "so that the stream never mixes two generations"
    )
    error: dict[str, Any] = {"message": message, "type": "api_error", "param": None}
    error |= {"code": "stream_interrupted", "status_code": 502}
    return Outcome(JobStatus.FAILED, error=error, usage=Usage(prompt, sent, prompt + sent))


def end_stream(
    pipe: redis.client.Pipeline,
    claimed: Claim,
    status: JobStatus,
    outcome: Outcome | None,
) -> None:
    """Queue on `pipe` the last entry of a streamed job's stream: how it ended (as
    stored) and what it used; the stream then lives JOB_STREAM_TTL_AFTER_END_S."""
    usage = openai_usage(outcome.usage) if outcome and outcome.usage else None
    error = outcome.error if outcome and outcome.status is status else None
    key = job_stream(claimed.job_id)
    fields = encode_entry(claimed.attempt, End(status.value, usage, error))
    pipe.xadd(key, fields, maxlen=JOB_STREAM_MAXLEN, approximate=True)  # type: ignore[arg-type]
    pipe.expire(key, JOB_STREAM_TTL_AFTER_END_S)
