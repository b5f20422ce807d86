"""A streamed job's events as a server-sent event response, in whichever protocol's
shape a renderer gives them (OpenAI's chunks: producer_api.chat_chunks; Anthropic's
message events: producer_api.message_events)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any, Protocol

import anyio
from sse_starlette import EventSourceResponse, ServerSentEvent

from producer_api.stream_relay import Finished, Piece

__all__ = ["Renderer", "event_stream"]

#: A comment line this often keeps proxies from closing a quiet stream.
PING_S = 15
#: Cancels started by streams whose caller went away (kept until they finish).
_CLOSING: set[asyncio.Task[Any]] = set()


class Renderer(Protocol):
    def opening(self) -> list[ServerSentEvent]: ...

    def piece(self, piece: Piece) -> list[ServerSentEvent]: ...

    def finished(self, end: Finished) -> list[ServerSentEvent]: ...


def event_stream(
    renderer: Renderer,
    events: AsyncIterator[Piece | Finished],
    first: Piece | Finished | None = None,
    on_abandon: Callable[[], Any] | None = None,
) -> EventSourceResponse:
    """The SSE response of `events` (after `first`, already read). `on_abandon` runs,
    in a thread, when the caller goes away before the end."""

    async def sse() -> AsyncIterator[ServerSentEvent]:
        finished = False
        try:
            for event in renderer.opening():
                yield event
            item = first if first is not None else await anext(events)
            while True:
                if isinstance(item, Finished):
                    for event in renderer.finished(item):
                        yield event
                    finished = True
                    return
                for event in renderer.piece(item):
                    yield event
                item = await anext(events)
        finally:
            with anyio.CancelScope(shield=True):
                await events.aclose()  # type: ignore[attr-defined]
            if not finished and on_abandon is not None:
                task = asyncio.get_running_loop().create_task(asyncio.to_thread(on_abandon))
                _CLOSING.add(task)
                task.add_done_callback(_CLOSING.discard)

    return EventSourceResponse(sse(), ping=PING_S, sep="\n")
