"""The mock provider's streamed replies: OpenAI's `chat.completion.chunk` events over SSE.

A streamed success is the completion the server would have answered, cut into chunks:
a first chunk with the role, one chunk per piece of content (its words, cycled to
`stream_chunks` when that is set), a last chunk with the finish reason, then the usage
chunk when `stream_options.include_usage` asks for it, then `data: [DONE]`. A test
steers one stream with directives in the last user message: `[mock:chunks=N]`,
`[mock:interval=SECONDS]`, `[mock:fail_after=N]` (an error event after N content chunks,
and the connection closes, as OpenAI does when generation breaks off) and
`[mock:stall_after=N]` (the stream stalls `hang_seconds` after N chunks).
"""

from __future__ import annotations

import asyncio
import itertools
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from typing import Any

from starlette.responses import StreamingResponse

from models.mock_config import MockConfig

__all__ = ["StreamPlan", "chunks_of", "stream_directive", "stream_reply"]

Json = dict[str, Any]

#: Directives that steer a stream with a count (`interval` takes seconds).
_COUNTS = frozenset({"chunks", "fail_after", "stall_after"})


@dataclass(frozen=True)
class StreamPlan:
    """How one stream goes; None fields fall back to the config."""

    chunks: int | None = None
    interval: float | None = None
    fail_after: int | None = None
    stall_after: int | None = None


def stream_directive(plan: StreamPlan, name: str, value: str) -> StreamPlan | None:
    """`plan` with one `[mock:name=value]` directive applied, or None if it isn't one."""
    if name in _COUNTS and value.isdigit():
        return replace(plan, **{name: int(value)})
    if name == "interval":
        try:
            seconds = float(value)
        except ValueError:
            return None
        return replace(plan, interval=seconds) if 0 <= seconds <= 60 else None
    return None


def _pieces(content: str, chunks: int | None) -> list[str]:
    """The content as the pieces the stream sends: one per word (with the space before
    it), or `chunks` pieces cycling through the words."""
    words = content.split(" ") if content else [""]
    pieces = [w if i == 0 else " " + w for i, w in enumerate(words)]
    if chunks is None:
        return pieces
    cycled = itertools.islice(itertools.cycle(words), chunks)
    return [w if i == 0 else " " + w for i, w in enumerate(cycled)]


def chunks_of(completion: Json, chunks: int | None, include_usage: bool) -> list[Json]:
    """The `chat.completion.chunk` events of a streamed `completion` (pure). With
    `chunks` set, the content is the words cycled to that many pieces and the usage
    counts them."""
    base = {
        "id": completion["id"],
        "object": "chat.completion.chunk",
        "created": completion["created"],
        "model": completion["model"],
        "system_fingerprint": None,
    }

    def chunk(choices: list[Json], **extra: Any) -> Json:
        return {**base, "choices": choices, **({"usage": None} if include_usage else {}), **extra}

    def choice(index: int, delta: Json, finish: str | None = None) -> Json:
        return {"index": index, "delta": delta, "logprobs": None, "finish_reason": finish}

    events = []
    completion_tokens = 0
    finals = []
    for given in completion["choices"]:
        index = given["index"]
        pieces = _pieces(given["message"]["content"], chunks)
        completion_tokens += len(pieces)
        events.append(chunk([choice(index, {"role": "assistant", "content": ""})]))
        events += [chunk([choice(index, {"content": p})]) for p in pieces]
        finals.append(choice(index, {}, given["finish_reason"]))
    events += [chunk([final]) for final in finals]
    if include_usage:
        usage = dict(completion["usage"])
        if chunks is not None:
            usage["completion_tokens"] = completion_tokens
            usage["total_tokens"] = usage["prompt_tokens"] + completion_tokens
        events.append({**base, "choices": [], "usage": usage})
    return events


def _sse(data: Json | str) -> bytes:
    text = data if isinstance(data, str) else json.dumps(data, separators=(",", ":"))
    return f"data: {text}\n\n".encode()


def stream_reply(
    config: MockConfig, completion: Json, plan: StreamPlan, include_usage: bool
) -> StreamingResponse:
    """Send `completion` as a stream, as `plan` (else the config) says."""
    chunks = plan.chunks if plan.chunks is not None else config.stream_chunks
    interval = plan.interval if plan.interval is not None else config.stream_interval
    events = chunks_of(completion, chunks, include_usage)

    async def body() -> AsyncIterator[bytes]:
        content_sent = 0
        for event in events:
            is_content = any(
                "content" in c["delta"] and c["delta"]["content"] for c in event["choices"]
            )
            if is_content:
                if plan.fail_after is not None and content_sent >= plan.fail_after:
                    yield _sse(_BROKE_OFF)
                    return
                if plan.stall_after is not None and content_sent == plan.stall_after:
                    await asyncio.sleep(config.hang_seconds)
                if content_sent and interval:
                    await asyncio.sleep(interval)
                content_sent += 1
            yield _sse(event)
        yield _sse("[DONE]")

    return StreamingResponse(body(), media_type="text/event-stream")


_BROKE_OFF = {
    "error": {
        "message": "mock error: the stream broke off on purpose",
        "type": "server_error",
        "param": None,
        "code": None,
    }
}
