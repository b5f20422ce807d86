"""Gemini's `streamGenerateContent?alt=sse` as the fleet's deltas (pure).

Every event is a `GenerateContentResponse` holding the next parts of each candidate:
text parts are text (thought summaries left out), each `functionCall` part is one
whole tool call, a candidate's `finishReason` is its finish (FINISH_REASONS, or
`tool_calls` once it has called a tool), and the last `usageMetadata` (each event
restates the total so far) is the usage, given when the stream ends. A prompt blocked
before generation is a ContentPolicyError, as for a whole reply; a stream that ends
before every candidate has finished was cut short.
"""

from __future__ import annotations

import uuid
from typing import Any

from models.stream_events import Delta
from workers.providers import errors
from workers.providers.base import Usage
from workers.providers.gemini import FINISH_REASONS, chat_response, tool_call, usage_from_gemini
from workers.providers.stream_decoding import cut_short, json_event

__all__ = ["GeminiEvents"]


class GeminiEvents:
    def __init__(self, provider: str, model: str) -> None:
        self.provider = provider
        self.model = model
        self._id = uuid.uuid4().hex
        self._usage: Usage | None = None
        #: Candidate index -> tool calls so far; the candidates that finished.
        self._calls: dict[int, int] = {}
        self._open: set[int] = set()
        self._finished: set[int] = set()

    def feed(self, event: str, data: str) -> list[Delta | Usage]:
        item = json_event(self.provider, data)
        if item.get("usageMetadata") is not None:
            self._usage = usage_from_gemini(self.provider, item["usageMetadata"])
        if not item.get("candidates"):
            if item.get("promptFeedback"):
                chat_response(self.provider, item, self.model, 0)  # raises the block
            return []
        self._id = str(item.get("responseId") or self._id)
        out: list[Delta | Usage] = []
        for position, candidate in enumerate(item["candidates"]):
            out += self._candidate(candidate, position)
        return out

    def close(self) -> list[Delta | Usage]:
        if not self._open or self._open - self._finished:
            raise cut_short(self.provider)
        return [self._usage] if self._usage is not None else []

    def _candidate(self, candidate: Any, position: int) -> list[Delta | Usage]:
        if not isinstance(candidate, dict):
            raise errors.MalformedResponseError(
                "Gemini stream sent a malformed candidate", provider=self.provider
            )
        index = candidate.get("index", position)
        self._open.add(index)
        parts = (candidate.get("content") or {}).get("parts") or []
        out: list[Delta | Usage] = []
        for part in parts:
            if not isinstance(part, dict) or part.get("thought"):
                continue
            if "text" in part:
                out.append(Delta(index, str(part["text"])))
            elif "functionCall" in part:
                n = self._calls.get(index, 0)
                self._calls[index] = n + 1
                call = tool_call(self.provider, part, f"call_{self._id}_{index}_{n}")
                out.append(Delta(index, tool_calls=({"index": n, **call},)))
        reason = candidate.get("finishReason")
        if reason:
            self._finished.add(index)
            finish = "tool_calls" if self._calls.get(index) else FINISH_REASONS.get(reason)
            out.append(Delta(index, finish_reason=finish or "stop"))
        return out
