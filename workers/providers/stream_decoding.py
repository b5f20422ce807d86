"""What the protocols' stream decoders share (pure): reading an event's JSON object,
the error of a stream cut short, and, for the protocols that stream content blocks
(Anthropic, Bedrock), the numbering of tool calls and the last event that ends it."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from workers.providers import errors
from workers.providers.base import Usage

__all__ = ["BlockStream", "cut_short", "json_event"]


def json_event(provider: str, data: str) -> dict[str, Any]:
    """An event's data as the JSON object it must be."""
    try:
        item = json.loads(data) if data else {}
    except ValueError as exc:
        raise errors.MalformedResponseError(
            "provider stream sent an event that is not JSON", provider=provider
        ) from exc
    if not isinstance(item, dict):
        raise errors.MalformedResponseError(
            "provider stream sent an event that is not an object", provider=provider
        )
    return item


def cut_short(provider: str) -> errors.ProviderConnectionError:
    return errors.ProviderConnectionError(
        "the provider's stream ended before its last event", provider=provider
    )


class BlockStream:
    """A stream of content blocks: the protocol module's tables (finish reasons, the
    error of an error type, the usage object), its tool calls numbered in the order
    their blocks start, and `done` once its last event came."""

    def __init__(
        self,
        provider: str,
        finish_reasons: dict[str, str],
        error_for: Callable[[str, str], errors.ProviderError],
        usage_from: Callable[[Any, str], Usage],
    ) -> None:
        self.provider = provider
        self._finish_reasons = finish_reasons
        self._error_for = error_for
        self._usage_from = usage_from
        #: Content block index -> the OpenAI tool call index it became.
        self._calls: dict[int, int] = {}
        self.done = False

    def close(self) -> list[Any]:
        if not self.done:
            raise cut_short(self.provider)
        return []

    def _tool_call(self, block: int) -> int:
        return self._calls.setdefault(block, len(self._calls))
