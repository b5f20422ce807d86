"""Drive a protocol's streamed call against a scripted reply (httpx.MockTransport)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx2 as httpx

from models.fleet_config import Deployment
from models.stream_events import Assembly, Delta
from workers.providers.base import CallOptions, Usage
from workers.providers.exchange import stream_async

__all__ = ["Recorded", "assemble", "run_stream"]


class Recorded:
    """Answers every call with `body` as an event stream (or as `kind`); keeps the JSON
    bodies it was sent."""

    def __init__(self, body: bytes, kind: str = "text/event-stream", status: int = 200) -> None:
        self.body, self.kind, self.status = body, kind, status
        self.sent: list[dict[str, Any]] = []
        self.urls: list[str] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.sent.append(json.loads(request.content))
        self.urls.append(str(request.url))
        headers = {"content-type": self.kind}
        return httpx.Response(self.status, headers=headers, content=self.body)


def run_stream(
    protocol: Any, deployment: Deployment, body: dict[str, Any], handler: Any
) -> list[Delta | Usage]:
    """Every delta and usage a streamed call yields."""
    call = protocol.chat_stream(deployment, body, CallOptions(timeout=5))

    async def read() -> list[Delta | Usage]:
        async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as client:
            return [item async for item in stream_async(call, client, protocol.name)]

    return asyncio.run(read())


def assemble(items: list[Delta | Usage]) -> tuple[dict[str, Any], list[Usage]]:
    """The `chat.completion` the deltas add up to, and the usages seen."""
    assembly = Assembly()
    usages = []
    for item in items:
        if isinstance(item, Usage):
            usages.append(item)
        else:
            assembly.add(item)
    return assembly.completion("chatcmpl-x", "m", 1), usages
