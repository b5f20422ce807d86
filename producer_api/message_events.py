"""A streamed job's events as Anthropic's Messages stream, the sequence the `anthropic`
SDK's `messages.stream()` reads: `message_start`, then for each content block
`content_block_start`, its `content_block_delta`s (`text_delta`, or `input_json_delta`
for a tool call's arguments) and `content_block_stop`, then `message_delta` with the
stop reason and the usage, and `message_stop`; an error after the start is an `error`
event. The usage is known only at the end, so `message_start` carries zeros and
`message_delta` the whole of it (the SDK takes every count it sends)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from sse_starlette import ServerSentEvent

from models.anthropic_shape import STOP_REASONS, anthropic_usage, openai_error_to_anthropic
from producer_api.stream_relay import Finished, Piece

__all__ = ["MessageRenderer"]


def _event(name: str, **data: Any) -> ServerSentEvent:
    body = json.dumps({"type": name, **data}, ensure_ascii=False, separators=(",", ":"))
    return ServerSentEvent(body, event=name)


@dataclass
class MessageRenderer:
    message_id: str
    model: str
    #: The block being written (-1: none yet) and what it is ("text" or a tool call's
    #: index); every tool call's block.
    _block: int = -1
    _open: str | int | None = None
    _tools: dict[int, int] = field(default_factory=dict)
    _stop_reason: str = "end_turn"

    def opening(self) -> list[ServerSentEvent]:
        message: dict[str, Any] = {
            "id": self.message_id,
            "type": "message",
            "role": "assistant",
            "model": self.model,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": {"input_tokens": 0, "output_tokens": 0},
        }
        return [_event("message_start", message=message), _event("ping")]

    def piece(self, piece: Piece) -> list[ServerSentEvent]:
        delta = piece.delta
        out: list[ServerSentEvent] = []
        if delta.content:
            if self._open != "text":
                out += self._start({"type": "text", "text": ""}, "text")
            text = {"type": "text_delta", "text": delta.content}
            out.append(_event("content_block_delta", index=self._block, delta=text))
        for call in delta.tool_calls:
            index = int(call.get("index", 0))
            function = call.get("function") or {}
            if index not in self._tools:
                block = {"type": "tool_use", "id": call.get("id"), "name": function.get("name")}
                out += self._start({**block, "input": {}}, index)
                self._tools[index] = self._block
            if function.get("arguments"):
                part = {"type": "input_json_delta", "partial_json": function["arguments"]}
                out.append(_event("content_block_delta", index=self._tools[index], delta=part))
        if delta.finish_reason is not None:
            self._stop_reason = STOP_REASONS.get(delta.finish_reason, "end_turn")
        return out

    def finished(self, end: Finished) -> list[ServerSentEvent]:
        if end.status != "succeeded":
            error = dict(end.error or {"message": f"the job ended {end.status}"})
            return [_event("error", error=openai_error_to_anthropic(error)["error"])]
        stop = self._stop_reason
        if stop == "end_turn" and self._tools:
            stop = "tool_use"
        usage = anthropic_usage(end.usage)
        done = {"stop_reason": stop, "stop_sequence": None}
        return [
            *self._close(),
            _event("message_delta", delta=done, usage=usage),
            _event("message_stop"),
        ]

    def _start(self, block: dict[str, Any], kind: str | int) -> list[ServerSentEvent]:
        out = self._close()
        self._block += 1
        self._open = kind
        return [*out, _event("content_block_start", index=self._block, content_block=block)]

    def _close(self) -> list[ServerSentEvent]:
        if self._open is None:
            return []
        self._open = None
        return [_event("content_block_stop", index=self._block)]
