"""A streamed job's events as OpenAI's `chat.completion.chunk` server-sent events: one
chunk per delta (the role on each choice's first), the usage chunk when the caller
asked for it (`stream_options.include_usage`), `data: [DONE]`; an error after the
first chunk is an event carrying `error`, as OpenAI sends it. Every chunk's SSE id is
its place in the job's stream, so a client that reconnects with `Last-Event-ID`
continues where it was."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any

from sse_starlette import ServerSentEvent

from producer_api.stream_relay import Finished, Piece

__all__ = ["ChunkRenderer"]


@dataclass
class ChunkRenderer:
    job_id: str
    model: str
    include_usage: bool
    #: A resumed stream has sent each choice's role already.
    resumed: bool = False
    created: int = field(default_factory=lambda: int(time.time()))
    _started: set[int] = field(default_factory=set)

    def opening(self) -> list[ServerSentEvent]:
        return []

    def piece(self, piece: Piece) -> list[ServerSentEvent]:
        delta = piece.delta
        body: dict[str, Any] = {}
        if delta.index not in self._started and not self.resumed:
            body["role"] = "assistant"
        self._started.add(delta.index)
        if delta.content is not None:
            body["content"] = delta.content
        if delta.tool_calls:
            body["tool_calls"] = list(delta.tool_calls)
        choice = {
            "index": delta.index,
            "delta": body,
            "logprobs": None,
            "finish_reason": delta.finish_reason,
        }
        return [ServerSentEvent(self._json(self._chunk([choice])), id=piece.id)]

    def finished(self, end: Finished) -> list[ServerSentEvent]:
        if end.status != "succeeded":
            error = dict(end.error or {"message": f"the job ended {end.status}"})
            error.pop("status_code", None)
            error.setdefault("type", "api_error")
            error.setdefault("param", None)
            error.setdefault("code", None)
            return [ServerSentEvent(self._json({"error": error}))]
        events = []
        if self.include_usage and end.usage is not None:
            events.append(ServerSentEvent(self._json(self._chunk([], usage=end.usage))))
        return [*events, ServerSentEvent("[DONE]")]

    def _chunk(self, choices: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
        chunk = {
            "id": f"chatcmpl-{self.job_id}",
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "system_fingerprint": None,
            "choices": choices,
        }
        if self.include_usage:
            chunk["usage"] = None
        return chunk | extra

    @staticmethod
    def _json(value: dict[str, Any]) -> str:
        return json.dumps(value, ensure_ascii=False, separators=(",", ":"))
