"""Bedrock's ConverseStream as the fleet's deltas: the AWS event-stream framing
(`application/vnd.amazon.eventstream`, read with botocore's own parser) and the pure
decoder of its events.

    messageStart                               nothing
    contentBlockStart  toolUse                 a tool call's first piece: id, name
    contentBlockDelta  text                    text
    contentBlockDelta  toolUse.input           the tool call's arguments, piece by piece
    contentBlockDelta  reasoningContent        left out (no OpenAI place)
    contentBlockStop                           nothing
    messageStop                                the finish reason (FINISH_REASONS)
    metadata                                   the usage; the end of the stream
    exception (throttlingException, ...)       the error tree, by name (as for a reply)

A stream that ends before `metadata` was cut short.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx2 as httpx
from botocore.eventstream import EventStreamBuffer, ParserError

from models.stream_events import Delta
from workers.providers import errors
from workers.providers.base import Usage
from workers.providers.stream_decoding import BlockStream, json_event

__all__ = ["ConverseEvents", "aws_events"]


async def aws_events(response: httpx.Response, provider: str) -> AsyncIterator[tuple[str, str]]:
    """Each event-stream message as ("event:<type>" or "exception:<type>", payload)."""
    buffer = EventStreamBuffer()
    async for data in response.aiter_bytes():
        buffer.add_data(data)
        try:
            messages = list(buffer)
        except ParserError as exc:
            raise errors.MalformedResponseError(
                "provider reply is not an AWS event stream", provider=provider
            ) from exc
        for message in messages:
            headers = message.headers
            kind = str(headers.get(":message-type") or "event")
            name = headers.get(":event-type") or headers.get(":exception-type") or ""
            yield f"{kind}:{name}", message.payload.decode("utf-8", "replace")


class ConverseEvents(BlockStream):
    """One ConverseStream, read event by event (the tables are bedrock's)."""

    def feed(self, event: str, data: str) -> list[Delta | Usage]:
        kind, _, name = event.partition(":")
        item = json_event(self.provider, data)
        if kind == "exception":
            raise self._error_for(name[:1].upper() + name[1:], str(item.get("message") or name))
        try:
            return self._event(name, item)
        except (KeyError, TypeError, AttributeError, ValueError) as exc:
            raise errors.MalformedResponseError(
                f"provider stream sent a malformed {name} event", provider=self.provider
            ) from exc

    def _event(self, name: str, item: dict[str, Any]) -> list[Delta | Usage]:
        if name == "contentBlockStart":
            use = (item.get("start") or {}).get("toolUse")
            if not use:
                return []
            index = self._tool_call(int(item["contentBlockIndex"]))
            first = {"name": use["name"], "arguments": ""}
            call = {"index": index, "id": use["toolUseId"], "type": "function", "function": first}
            return [Delta(tool_calls=(call,))]
        if name == "contentBlockDelta":
            delta = item["delta"]
            if "text" in delta:
                return [Delta(content=str(delta["text"]))]
            if "toolUse" in delta:
                index = self._calls[int(item["contentBlockIndex"])]
                piece = {"index": index, "function": {"arguments": delta["toolUse"]["input"]}}
                return [Delta(tool_calls=(piece,))]
            return []
        if name == "messageStop":
            reason = self._finish_reasons.get(str(item.get("stopReason")), "stop")
            return [Delta(finish_reason=reason)]
        if name == "metadata":
            self.done = True
            return [self._usage_from(item.get("usage"), self.provider)]
        return []  # messageStart, contentBlockStop, and events newer than this module
