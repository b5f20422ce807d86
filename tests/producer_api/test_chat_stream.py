"""Streamed chat completions through the fleet, read with clients no one here wrote:
the official `openai` SDK and `httpx-sse`."""

from __future__ import annotations

import asyncio
import itertools
import time

import httpx
import openai
import pytest
from httpx_sse import aconnect_sse, connect_sse

from tests.conftest import MASTER_KEY, Fleet


def sdk(fleet: Fleet) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{fleet.api_url}/v1", api_key=MASTER_KEY, max_retries=0)


def ask(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


def job_of(fleet: Fleet, job_id: str, until: set[str] | None = None) -> dict[str, object]:
    """The job as GET /v1/jobs shows it, once its status is in `until` (if given)."""
    with fleet.client() as client:
        for _ in range(100):
            job = client.get(f"/v1/jobs/{job_id}", params={"wait": 5}).json()
            if until is None or job["status"] in until:
                return dict(job)
            time.sleep(0.1)
    raise AssertionError(f"job {job_id} stayed {job['status']}")


def test_openai_sdk_assembles_the_streamed_text_and_usage(clean_fleet: Fleet) -> None:
    stream = sdk(clean_fleet).chat.completions.create(
        model="mock-model",
        messages=ask("stream this to me"),
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)

    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "Echo: stream this to me"
    assert chunks[0].choices[0].delta.role == "assistant"
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    usage = chunks[-1].usage
    assert usage is not None and (usage.prompt_tokens, usage.completion_tokens) == (4, 5)
    assert {c.id for c in chunks} == {chunks[0].id}
    # the job behind the stream holds the same answer
    job = job_of(clean_fleet, chunks[0].id.removeprefix("chatcmpl-"))
    assert job["status"] == "succeeded"
    assert job["result"]["choices"][0]["message"]["content"] == text  # type: ignore[index]


def test_without_include_usage_there_is_no_usage_chunk(clean_fleet: Fleet) -> None:
    chunks = list(
        sdk(clean_fleet).chat.completions.create(
            model="mock-model", messages=ask("short"), stream=True
        )
    )
    assert all(c.choices and c.usage is None for c in chunks)


def test_chunks_arrive_as_the_provider_sends_them(clean_fleet: Fleet) -> None:
    # Given: a provider that sends 6 pieces 0.4 s apart
    stream = sdk(clean_fleet).chat.completions.create(
        model="mock-model",
        messages=ask("a b c [mock:chunks=6] [mock:interval=0.4]"),
        stream=True,
    )
    arrivals = [time.monotonic() for c in stream if c.choices and c.choices[0].delta.content]

    # Then: each piece reached the client about when the provider sent it, not at the end
    assert len(arrivals) == 6
    gaps = [b - a for a, b in itertools.pairwise(arrivals)]
    assert all(gap > 0.25 for gap in gaps), gaps
    assert arrivals[-1] - arrivals[0] > 1.6


def test_an_error_before_the_first_chunk_is_a_plain_http_error(clean_fleet: Fleet) -> None:
    with pytest.raises(openai.AuthenticationError) as info:
        sdk(clean_fleet).chat.completions.create(
            model="mock-model", messages=ask("[mock:status=401]"), stream=True
        )
    assert "mock error 401" in info.value.message


def test_an_error_after_the_first_chunk_is_an_error_event(clean_fleet: Fleet) -> None:
    stream = sdk(clean_fleet).chat.completions.create(
        model="mock-model", messages=ask("one two three four [mock:fail_after=2]"), stream=True
    )
    received: list[str] = []
    with pytest.raises(openai.APIError) as info:
        for c in stream:
            received.append(c.choices[0].delta.content or "")
    assert "".join(received) == "Echo: one"
    assert "broke off" in info.value.message
    # one call: a second generation would have been mixed into the first
    assert clean_fleet.mock_stats()["calls"] == 1


def test_a_dropped_stream_cancels_its_job(clean_fleet: Fleet) -> None:
    stream = sdk(clean_fleet).chat.completions.create(
        model="mock-model",
        messages=ask("go on [mock:chunks=400] [mock:interval=0.05]"),
        stream=True,
    )
    first = [next(iter(stream)) for _ in range(3)]
    stream.close()

    job = job_of(clean_fleet, first[0].id.removeprefix("chatcmpl-"), {"cancelled"})
    assert job["status"] == "cancelled"
    # the provider's stream was closed too, well before its 20 s
    deadline = time.monotonic() + 5
    while clean_fleet.mock_stats()["in_flight"] and time.monotonic() < deadline:
        time.sleep(0.1)
    assert clean_fleet.mock_stats()["in_flight"] == 0


def test_a_job_is_followed_and_resumed_after_the_last_event_seen(clean_fleet: Fleet) -> None:
    # Given: a streamed job, enqueued
    body = {
        "model": "mock-model",
        "stream": True,
        "messages": ask("x [mock:chunks=8] [mock:interval=0.15]"),
    }
    with clean_fleet.client() as client:
        job_id = client.post("/v1/jobs", json=body).json()["id"]
        url = f"/v1/jobs/{job_id}"
        # When: a follower reads three chunks and drops the connection ...
        with connect_sse(client, "GET", url, params={"stream": "true"}) as source:
            seen = []
            for event in source.iter_sse():
                seen.append(event)
                if len(seen) == 3:
                    break
        # ... and comes back with the last id it saw
        headers = {"Last-Event-ID": seen[-1].id}
        with connect_sse(client, "GET", url, params={"stream": "true"}, headers=headers) as again:
            rest = [e for e in again.iter_sse()]

    # Then: it gets exactly the events after that one, and the texts join to the answer
    assert rest[-1].data == "[DONE]"

    def place(event_id: str) -> tuple[int, int]:
        ms, n = event_id.split("-")
        return int(ms), int(n)

    assert place(rest[0].id) > place(seen[-1].id)
    # (the usage chunk and [DONE] carry on the last chunk's id, as SSE ids do)
    chunk_ids = [e.id for e in seen + rest[:-1] if e.json()["choices"]]
    assert len(chunk_ids) == len(set(chunk_ids))
    pieces = [e.json()["choices"] for e in seen + rest[:-1]]
    text = "".join(c[0]["delta"].get("content") or "" for c in pieces if c)
    job = job_of(clean_fleet, job_id)
    assert text == job["result"]["choices"][0]["message"]["content"]  # type: ignore[index]
    assert len(text.split()) == 8


def test_a_bad_last_event_id_and_stream_options_without_stream_are_refused(
    clean_fleet: Fleet,
) -> None:
    with clean_fleet.client() as client:
        made = client.post("/v1/jobs", json={"model": "mock-model", "messages": ask("x")})
        job_id = made.json()["id"]
        bad = client.get(
            f"/v1/jobs/{job_id}", params={"stream": "true"}, headers={"Last-Event-ID": "zz"}
        )
        options = client.post(
            "/v1/chat/completions",
            json={"model": "mock-model", "messages": ask("x"), "stream_options": {}},
        )
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "Last-Event-ID"
    assert options.status_code in (400, 422)
    assert "stream_options" in options.text


def test_an_answer_from_the_response_cache_streams_too(clean_fleet: Fleet) -> None:
    client, cache = sdk(clean_fleet), {"cache": {"ttl": 600}}
    messages = ask("remember this")
    whole = client.chat.completions.create(model="mock-model", messages=messages, extra_body=cache)
    chunks = list(
        client.chat.completions.create(
            model="mock-model", messages=messages, stream=True, extra_body=cache
        )
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == whole.choices[0].message.content == "Echo: remember this"
    assert chunks[-1].choices[0].finish_reason == "stop"
    assert clean_fleet.mock_stats()["calls"] == 1  # the stream was served from the cache


def test_a_dropped_background_stream_runs_its_job_to_the_end(clean_fleet: Fleet) -> None:
    stream = sdk(clean_fleet).chat.completions.create(
        model="mock-model",
        messages=ask("keep at it [mock:chunks=20] [mock:interval=0.05]"),
        stream=True,
        extra_body={"background": True},
    )
    first = next(iter(stream))
    stream.close()
    job = job_of(clean_fleet, first.id.removeprefix("chatcmpl-"), {"succeeded", "cancelled"})
    assert job["status"] == "succeeded"
    assert len(job["result"]["choices"][0]["message"]["content"].split()) == 20  # type: ignore[index]


def test_300_streams_at_once_through_one_api_process_each_get_every_chunk(
    clean_fleet: Fleet,
) -> None:
    # Given: 300 streams relayed at once by one API process (more than a Redis pool of
    # redis-py's default 100 connections: a relay must not need a connection of its own)
    count, chunks = 300, 5
    body = {
        "model": "mock-model",
        "stream": True,
        "messages": ask(f"x [mock:chunks={chunks}] [mock:interval=0.1]"),
    }

    async def one(client: httpx.AsyncClient) -> int:
        pieces = 0
        async with aconnect_sse(client, "POST", "/v1/chat/completions", json=body) as source:
            async for event in source.aiter_sse():
                if event.data != "[DONE]" and event.json()["choices"][0]["delta"].get("content"):
                    pieces += 1
        return pieces

    async def all_of_them() -> list[int]:
        limits = httpx.Limits(max_connections=count)
        headers = {"Authorization": f"Bearer {MASTER_KEY}"}
        async with httpx.AsyncClient(
            base_url=clean_fleet.api_url, headers=headers, limits=limits, timeout=120
        ) as client:
            return await asyncio.gather(*(one(client) for _ in range(count)))

    # Then: every stream gets each of its chunks as a chunk of its own
    assert asyncio.run(all_of_them()) == [chunks] * count
