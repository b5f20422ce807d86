"""A streamed call: each delta the provider sends is appended to the job's Redis Stream
as it arrives (for the API to relay), and the deltas are put together into the whole
answer, which is stored on the job's row like any other (models/stream_events.py).

Before its first delta a streamed call fails like any other and is retried or falls
back as the error says (docs/ROUTING.md); after it, a retry would send the caller a
second generation, so an error ends the job (`BrokenStream`) with what was sent. A
cancel asked for through the API stops the call within about a second
(`StoppedStream`): the connection is closed, which stops the provider's generation.

`StreamAppender` writes every run's deltas on the loop in one pipeline per round
trip, and looks for a cancel of every stream running in one round trip a second. The
stream's last entry, the job's end, is written by the writer once the row is stored
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

#: How often the streams running look for a cancel of their own (all in one round trip).
CANCEL_CHECK_S = 1.0
#: How often a running stream's TTL (JOB_STREAM_TTL_S) is renewed.
TTL_RENEW_S = 60.0


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


class StreamAppender:
    """Appends streamed jobs' deltas (on the worker's loop). What arrives while a write
    is out goes in the next pipeline: one round trip for every stream's latest deltas,
    one XADD each. Once a second, one more round trip looks for a cancel of every
    stream running (`watch`) and renews, every TTL_RENEW_S, the TTL their streams got
    with their first delta. Redis being away loses deltas, not the answer: the API
    then relays the row."""

    def __init__(self, client: aioredis.Redis) -> None:
        self._redis = client
        self._pending: list[tuple[str, dict[str, str]]] = []
        #: Resolves once the pending deltas are written (or lost with Redis).
        self._written: asyncio.Future[None] | None = None
        #: The flush and the watch running, if any (the loop holds its tasks weakly).
        self._flushing: asyncio.Task[None] | None = None
        self._watching: asyncio.Task[None] | None = None
        #: The streams running: resolved when their job is asked to cancel.
        self._watched: dict[str, asyncio.Future[None]] = {}
        #: When each running stream's TTL was last set (from its first delta on).
        self._timed: dict[str, float] = {}

    def append(self, job_id: str, attempt: int, delta: Delta) -> asyncio.Future[None]:
        """Queue `delta` for the job's stream, after the job's earlier ones; the future
        resolves once it is written. (A stream's end is appended once the job's row is
        stored: `end_stream`.)"""
        loop = asyncio.get_running_loop()
        if self._written is None:
            self._written = loop.create_future()
        written = self._written
        self._pending.append((job_id, encode_entry(attempt, delta)))
        if self._flushing is None:
            self._flushing = loop.create_task(self._flush())
        return written

    def watch(self, job_id: str) -> asyncio.Future[None]:
        """The job's stream runs: the future resolves when the job is asked to cancel."""
        loop = asyncio.get_running_loop()
        asked = self._watched[job_id] = loop.create_future()
        if self._watching is None:
            self._watching = loop.create_task(self._watch())
        return asked

    def unwatch(self, job_id: str) -> None:
        """The job's run is over (its end renews the TTL: `end_stream`)."""
        self._watched.pop(job_id, None)
        self._timed.pop(job_id, None)
        if not self._watched and self._watching is not None:
            self._watching.cancel()  # none left to watch
            self._watching = None

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

    async def _watch(self) -> None:
        try:
            while self._watched:
                await asyncio.sleep(CANCEL_CHECK_S)
                await self._check()
        finally:
            if self._watching is asyncio.current_task():
                self._watching = None

    async def _check(self) -> None:
        jobs = list(self._watched)
        stale = time.monotonic() - TTL_RENEW_S
        renew = [job_id for job_id in jobs if self._timed.get(job_id, stale) < stale]
        pipe = self._redis.pipeline(transaction=False)
        for job_id in jobs:
            pipe.exists(job_cancel(job_id))
        for job_id in renew:
            pipe.expire(job_stream(job_id), JOB_STREAM_TTL_S)
        try:
            asked = await pipe.execute()
        except redis.RedisError:
            return  # the next round asks again; the row's `cancel_requested` stays
        now = time.monotonic()
        for job_id in renew:
            if job_id in self._timed:
                self._timed[job_id] = now
        for job_id, hit in zip(jobs, asked, strict=False):
            future = self._watched.get(job_id)
            if hit and future is not None and not future.done():
                future.set_result(None)

    async def _flush(self) -> None:
        try:
            while self._pending:
                batch, written = self._pending, self._written
                self._pending, self._written = [], None
                try:
                    await self._write(batch)
                finally:  # the loop closing included: no run waits on these forever
                    if written is not None and not written.done():
                        written.set_result(None)
        finally:
            self._flushing = None

    async def _write(self, batch: list[tuple[str, dict[str, str]]]) -> None:
        pipe = self._redis.pipeline(transaction=False)
        for job_id, fields in batch:
            key = job_stream(job_id)
            pipe.xadd(key, fields, maxlen=JOB_STREAM_MAXLEN, approximate=True)  # type: ignore[arg-type]
            if job_id not in self._timed and job_id in self._watched:
                self._timed[job_id] = time.monotonic()
                pipe.expire(key, JOB_STREAM_TTL_S)
        try:
            await pipe.execute()
        except redis.RedisError as exc:
            log.warning("%d stream event(s) not appended: %s", len(batch), type(exc).__name__)


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
    #: Resolves once the last delta queued is written.
    _written: asyncio.Future[None] | None = field(default=None, repr=False)

    @property
    def started(self) -> bool:
        return bool(self.assembly.choices)

    async def run(self, deltas: AsyncIterator[Delta | Usage]) -> ProviderResult:
        """Relay `deltas` (a provider's stream) to the job's stream; the whole answer.
        Raises the provider's error before the first delta, BrokenStream after it,
        StoppedStream on a cancel. Returns or raises once every delta relayed is in
        the job's stream (its end follows them)."""
        asked = self.appender.watch(self.job_id)
        reader = asyncio.ensure_future(self._relay(deltas))
        try:
            await asyncio.wait({reader, asked}, return_when=asyncio.FIRST_COMPLETED)
            if not reader.done():
                raise StoppedStream(self.estimated_usage())
            reader.result()  # the provider's error
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
            if self._written is not None and not self._written.done():
                await asyncio.wait({self._written})  # never cancels it: others' too
            self.appender.unwatch(self.job_id)
        return self._result()

    async def _relay(self, deltas: AsyncIterator[Delta | Usage]) -> None:
        """Read the provider's stream, queueing each delta for the job's stream. A
        delta whose previous one is not yet written waits for it first: when Redis or
        the loop falls behind, the streams slow down, not the calls starting."""
        async for item in deltas:
            if isinstance(item, Usage):
                self.usage = item
                continue
            if self._written is not None and not self._written.done():
                await asyncio.shield(self._written)  # shared: never cancelled from here
            self.assembly.add(item)
            self._written = self.appender.append(self.job_id, self.attempt, item)

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
