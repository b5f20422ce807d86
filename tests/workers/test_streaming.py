"""A streamed job in one process (tests/support/core.py): the provider an
`httpx.MockTransport` answering OpenAI's `chat.completion.chunk` events as scripted,
the job's events in its real Redis Stream, its row in PostgreSQL."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx2 as httpx
import pytest
from sqlalchemy import Engine

from models.redis_keys import (
    JOB_STREAM_TTL_AFTER_END_S,
    JOB_STREAM_TTL_S,
    job_cancel,
    job_stream,
)
from models.stream_events import Delta, End, decode_entry, encode_entry
from models.tables import JobStatus
from tests.conftest import migrated_database
from tests.support.core import Core, CoreFactory, Reply, deployment, status
from workers import streaming

STREAMED = {"stream": True, "stream_options": {"include_usage": True}}
TWO = [deployment("main", "a"), deployment("main", "b")]


@pytest.fixture(scope="module")
def database() -> Iterator[tuple[str, Engine]]:
    with migrated_database("llmfleet_test_streaming") as db:
        yield db


def chunk(delta: dict[str, Any], finish: str | None = None, **extra: Any) -> dict[str, Any]:
    choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
    return {
        "id": "chatcmpl-s",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": "m",
        "choices": [choice],
        **extra,
    }


def events(pieces: list[str], *, error_after: int | None = None) -> list[bytes]:
    """The SSE events of a stream of `pieces`, with usage; with `error_after`, an error
    event after that many pieces instead of the rest."""
    out = [chunk({"role": "assistant", "content": ""})]
    for i, piece in enumerate(pieces):
        if error_after is not None and i == error_after:
            error = {"message": "overloaded midway", "type": "server_error", "code": None}
            return [*(_sse(c) for c in out), _sse({"error": error})]
        out.append(chunk({"content": piece}))
    out.append(chunk({}, "stop"))
    usage = {"prompt_tokens": 4, "completion_tokens": len(pieces), "total_tokens": 4 + len(pieces)}
    out.append({**chunk({}), "choices": [], "usage": usage})
    return [*(_sse(c) for c in out), b"data: [DONE]\n\n"]


def _sse(data: dict[str, Any]) -> bytes:
    return f"data: {json.dumps(data)}\n\n".encode()


def streamed(
    pieces: list[str], gap_s: float = 0.0, stall_after: int | None = None, **kw: Any
) -> Reply:
    """A stream of `pieces`, `gap_s` apart; with `stall_after`, it stalls for a minute
    after that many events."""
    seen: list[dict[str, Any]] = []

    async def body() -> AsyncIterator[bytes]:
        for i, event in enumerate(events(pieces, **kw)):
            yield event
            await asyncio.sleep(60 if i + 1 == stall_after else gap_s)

    def reply(request: httpx.Request) -> httpx.Response:
        seen.append(json.loads(request.content))
        headers = {"content-type": "text/event-stream"}
        return httpx.Response(200, headers=headers, content=body())

    reply.seen = seen  # type: ignore[attr-defined]
    return reply


def entries(core: Core, job_id: str) -> list[Any]:
    return [decode_entry(i, f) for i, f in core.ctx.redis.xrange(job_stream(job_id))]


def test_a_streamed_job_appends_each_delta_then_its_end_and_stores_the_whole_answer(
    core: CoreFactory,
) -> None:
    reply = streamed(["Hello", " streamed", " world"])
    run = core({"a": [reply]}, [deployment("main", "a")])

    job = run.run(request=STREAMED)

    # Then: the provider was asked for a stream that reports its usage
    (sent,) = reply.seen  # type: ignore[attr-defined]
    assert sent["stream"] is True and sent["stream_options"] == {"include_usage": True}
    # ... the deltas went to the job's stream in order, then its end with the usage
    written = entries(run, job.id)
    deltas = [e.event for e in written if isinstance(e.event, Delta)]
    assert "".join(d.content or "" for d in deltas) == "Hello streamed world"
    assert deltas[-1].finish_reason == "stop"
    end = written[-1].event
    assert isinstance(end, End) and end.status == "succeeded"
    assert end.usage is not None and end.usage["completion_tokens"] == 3
    assert {e.attempt for e in written} == {1}
    # ... and the row holds the whole answer and the provider's usage, as for any job
    assert job.status == JobStatus.SUCCEEDED
    assert job.response is not None
    assert job.response["choices"][0]["message"]["content"] == "Hello streamed world"
    assert (job.prompt_tokens, job.completion_tokens) == (4, 3)


def test_a_failure_before_the_first_delta_is_retried_like_any_other(core: CoreFactory) -> None:
    run = core(
        {"a": [status(500)], "b": [streamed(["fine"])]}, TWO, routing_strategy="simple-shuffle"
    )

    job = run.run(request=STREAMED)

    assert job.status == JobStatus.SUCCEEDED
    assert sum(run.provider.calls.values()) == 2
    texts = [e.event.content for e in entries(run, job.id) if isinstance(e.event, Delta)]
    assert texts == ["fine", None]


def test_a_failure_after_the_first_delta_ends_the_job_without_a_second_generation(
    core: CoreFactory,
) -> None:
    broken = streamed(["one", " two", " three"], error_after=2)
    run = core({"a": [broken], "b": [broken]}, TWO)

    job = run.run(request=STREAMED)

    # Then: one call (no retry would have sent a second generation after the first)
    assert sum(run.provider.calls.values()) == 1
    assert job.status == JobStatus.FAILED
    assert job.error is not None and "overloaded midway" in job.error["message"]
    written = entries(run, job.id)
    assert [e.event.content for e in written[:-1]] == ["one", " two"]
    end = written[-1].event
    assert isinstance(end, End) and end.status == "failed"
    assert end.error is not None and end.error["message"] == job.error["message"]
    # ... and what was generated is billed: two pieces, the prompt estimated
    assert job.completion_tokens == 2


@pytest.mark.parametrize("stalls", [False, True], ids=["flowing", "stalled"])
def test_a_cancel_stops_the_stream_within_a_second(core: CoreFactory, stalls: bool) -> None:
    # a stream that sends a piece every 50 ms, or one that sends a piece and stalls
    slow = streamed(["tick"] * 200, 0.05) if not stalls else streamed(["tick"] * 3, stall_after=2)
    run = core({"a": [slow]}, [deployment("main", "a")])
    job_id = "job_cancelled_stream_" + ("stalled" if stalls else "flowing")
    asked = threading.Event()

    def cancel() -> None:
        run.ctx.redis.set(job_cancel(job_id), 1, ex=60)
        asked.set()

    threading.Timer(0.6, cancel).start()
    job = run.run(job_id=job_id, request=STREAMED)

    assert asked.is_set()
    assert job.status == JobStatus.CANCELLED
    assert job.finished_at is not None and job.started_at is not None
    took = (job.finished_at - job.started_at).total_seconds()
    assert took < 0.6 + 1.0 + 0.5, took
    written = entries(run, job.id)
    assert isinstance(written[-1].event, End) and written[-1].event.status == "cancelled"
    sent = [e for e in written if isinstance(e.event, Delta)]
    assert job.completion_tokens == len(sent) > 0


def test_a_running_stream_expires_by_itself_should_its_worker_die(
    core: CoreFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    # a stream of 80 pieces 50 ms apart (~4 s); the cancel checks 1.5 s apart, each one
    # renewing the TTL
    monkeypatch.setattr(streaming, "CANCEL_CHECK_S", 1.5)
    monkeypatch.setattr(streaming, "TTL_RENEW_S", 0.0)
    run = core({"a": [streamed(["tick"] * 80, 0.05)]}, [deployment("main", "a")])
    key = job_stream("job_stream_ttl")
    seen: list[int] = []

    def look() -> None:
        deadline = time.monotonic() + 30
        while (ttl := run.ctx.redis.ttl(key)) == -2 and time.monotonic() < deadline:
            time.sleep(0.005)  # no delta yet
        if ttl == -1:  # between the first XADD and its EXPIRE, at most
            time.sleep(0.05)
            ttl = run.ctx.redis.ttl(key)
        seen.append(ttl)  # from its first delta, before any cancel check
        run.ctx.redis.expire(key, 100)  # as if an hour had nearly gone by
        time.sleep(2.0)  # a cancel check comes meanwhile
        seen.append(run.ctx.redis.ttl(key))

    looker = threading.Thread(target=look)
    looker.start()
    job = run.run(job_id="job_stream_ttl", request=STREAMED)
    looker.join()

    assert job.status == JobStatus.SUCCEEDED
    # Then: while it ran, the key had the running stream's TTL from its first delta on,
    # and the cancel check renewed it
    first, renewed = seen
    assert JOB_STREAM_TTL_AFTER_END_S < first <= JOB_STREAM_TTL_S
    assert JOB_STREAM_TTL_AFTER_END_S < renewed <= JOB_STREAM_TTL_S
    # ... and once it ended, the shorter one that lets a dropped client come back
    assert 0 < run.ctx.redis.ttl(key) <= JOB_STREAM_TTL_AFTER_END_S


def test_a_claim_after_one_lost_midway_fails_rather_than_mix_two_generations(
    core: CoreFactory,
) -> None:
    # Given: a streamed job whose first claim sent two deltas, then its worker died
    reply = streamed(["never", " sent"])
    run = core({"a": [reply]}, [deployment("main", "a")])
    job_id = "job_lost_midway"
    for piece in ("half ", "an answer"):
        run.ctx.redis.xadd(job_stream(job_id), encode_entry(1, Delta(content=piece)))

    # When: the next claim runs it
    job = run.run(job_id=job_id, request=STREAMED, attempts=1)

    # Then: no second call; the job fails saying why; the two deltas sent are billed
    assert run.provider.calls == {}
    assert job.status == JobStatus.FAILED
    assert job.error is not None and job.error["code"] == "stream_interrupted"
    assert job.completion_tokens == 2
    end = entries(run, job_id)[-1]
    assert (end.attempt, isinstance(end.event, End)) == (2, True)


def test_a_claim_after_one_lost_before_any_delta_runs_as_usual(core: CoreFactory) -> None:
    run = core({"a": [streamed(["fine"])]}, [deployment("main", "a")])
    job = run.run(request=STREAMED, attempts=1)
    assert job.status == JobStatus.SUCCEEDED
