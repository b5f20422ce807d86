"""The mock provider's streams, run for real (`python -m workers.mock_provider`) and read
with the official `openai` SDK, which checks every chunk against its own types."""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest

from tests.support.processes import start_mock
from workers.mock_provider.streams import chunks_of


@pytest.fixture(scope="module")
def mock(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    proc, url = start_mock({}, Path(tmp_path_factory.mktemp("mock-streams")), "--seed", "3")
    try:
        yield url
    finally:
        proc.stop()


def sdk(url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{url}/v1", api_key="k", max_retries=0)


def streamed(url: str, text: str, **kw: object) -> openai.Stream:  # type: ignore[type-arg]
    return sdk(url).chat.completions.create(  # type: ignore[call-overload, no-any-return]
        model="m", messages=[{"role": "user", "content": text}], stream=True, **kw
    )


def test_a_stream_is_the_reply_in_chunks_then_its_usage(mock: str) -> None:
    chunks = list(streamed(mock, "hello there", stream_options={"include_usage": True}))

    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "Echo: hello there"
    assert chunks[-2].choices[0].finish_reason == "stop"
    assert chunks[-1].choices == []
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 3
    assert all(c.usage is None for c in chunks[:-1])


def test_chunks_and_interval_directives_pace_the_stream(mock: str) -> None:
    started = time.monotonic()
    arrivals = [
        time.monotonic() - started
        for c in streamed(mock, "a b [mock:chunks=5] [mock:interval=0.2]")
        if c.choices and c.choices[0].delta.content
    ]
    assert len(arrivals) == 5
    assert all(b - a > 0.15 for a, b in itertools.pairwise(arrivals)), arrivals


def test_fail_after_breaks_the_stream_off_with_an_error_event(mock: str) -> None:
    received = []
    with pytest.raises(openai.APIError, match="broke off"):
        for c in streamed(mock, "one two three [mock:fail_after=2]"):
            received.append(c.choices[0].delta.content or "")
    assert "".join(received) == "Echo: one"


def test_stall_after_holds_the_stream_past_a_client_timeout(mock: str) -> None:
    client = openai.OpenAI(base_url=f"{mock}/v1", api_key="k", max_retries=0, timeout=0.5)
    received = []
    with pytest.raises(openai.APIError):  # the SDK's read timeout, mid-stream
        for c in client.chat.completions.create(
            model="m",
            messages=[{"role": "user", "content": "x y z [mock:stall_after=1]"}],
            stream=True,
        ):
            received.append(c.choices[0].delta.content or "")
    assert "".join(received) == "Echo:"


def test_configured_chunk_count_cycles_the_words_and_counts_them() -> None:
    completion = {
        "id": "c",
        "created": 1,
        "model": "m",
        "choices": [{"index": 0, "message": {"content": "a b"}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 2, "completion_tokens": 2, "total_tokens": 4},
    }
    events = chunks_of(completion, 5, include_usage=True)
    text = "".join(e["choices"][0]["delta"].get("content", "") for e in events if e["choices"])
    assert text == "a b a b a"
    assert events[-1]["usage"] == {"prompt_tokens": 2, "completion_tokens": 5, "total_tokens": 7}
