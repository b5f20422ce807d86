"""Anthropic's Messages stream (`"stream": true`) as the fleet's deltas (pure).

    message_start                    the prompt's usage (input and cache tokens)
    content_block_start  text        nothing yet
    content_block_start  tool_use    a tool call's first piece: id, name, no arguments
    content_block_delta  text_delta  text
    content_block_delta  input_json_delta   the tool call's arguments, piece by piece
    content_block_delta  thinking_delta, signature_delta   left out (no OpenAI place)
    content_block_stop, ping         nothing
    message_delta                    the finish reason (FINISH_REASONS), output tokens
    message_stop                     the end: the usage
    error                            the error tree, by `error.type`

A stream that ends before `message_stop` was cut short.
"""

from __future__ import annotations

from typing import Any

from models.stream_events import Delta
from workers.providers import errors
from workers.providers.base import Usage
from workers.providers.stream_decoding import BlockStream, json_event

__all__ = ["MessageEvents"]


class MessageEvents(BlockStream):
    """One Messages stream, read event by event (the tables are anthropic.py's)."""

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self._usage: dict[str, Any] = {}

    def feed(self, event: str, data: str) -> list[Delta | Usage]:
        item = json_event(self.provider, data)
        kind = item.get("type")
        if not isinstance(kind, str):
            raise errors.MalformedResponseError(
                "provider stream sent an event that is not a Messages event",
                provider=self.provider,
            )
        handle = getattr(self, f"_on_{kind}", None)
        if handle is None:
            return []  # ping, content_block_stop, and events newer than this module
        try:
            out: list[Delta | Usage] = handle(item)
        except (KeyError, TypeError, AttributeError) as exc:
            raise errors.MalformedResponseError(
                f"provider stream sent a malformed {kind} event", provider=self.provider
            ) from exc
        return out

    def _on_message_start(self, item: dict[str, Any]) -> list[Delta | Usage]:
        self._usage.update(item["message"].get("usage") or {})
        return []

    def _on_content_block_start(self, item: dict[str, Any]) -> list[Delta | Usage]:
        block = item["content_block"]
        if block.get("type") != "tool_use":
            return []
        index = self._tool_call(int(item["index"]))
        first = {"name": block["name"], "arguments": ""}
        call = {"index": index, "id": block["id"], "type": "function", "function": first}
        return [Delta(tool_calls=(call,))]

    def _on_content_block_delta(self, item: dict[str, Any]) -> list[Delta | Usage]:
        delta = item["delta"]
        if delta.get("type") == "text_delta":
            return [Delta(content=delta["text"])]
        if delta.get("type") == "input_json_delta":
            index = self._calls[int(item["index"])]
            piece = {"index": index, "function": {"arguments": delta["partial_json"]}}
            return [Delta(tool_calls=(piece,))]
        return []

    def _on_message_delta(self, item: dict[str, Any]) -> list[Delta | Usage]:
        self._usage.update(item.get("usage") or {})
        reason = (item.get("delta") or {}).get("stop_reason")
        if reason is None:
            return []
        return [Delta(finish_reason=self._finish_reasons.get(reason, "stop"))]

    def _on_message_stop(self, item: dict[str, Any]) -> list[Delta | Usage]:
        self.done = True
        return [self._usage_from(self._usage, self.provider)]

    def _on_error(self, item: dict[str, Any]) -> list[Delta | Usage]:
        error = item.get("error") or {}
        raise self._error_for(str(error.get("type") or ""), str(error.get("message") or ""))
