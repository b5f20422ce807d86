"""A protocol's exchange sent with a blocking client (`send`) and on an event loop
(`send_async`, as the worker does) makes the same requests and comes to the same
result or the same error."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx2 as httpx
import pytest

from models.fleet_config import parse_fleet_config
from workers.providers import errors
from workers.providers.base import CallOptions, ProviderResult
from workers.providers.exchange import Exchange, send, send_async
from workers.providers.gemini import GeminiProtocol
from workers.providers.openai import OpenAIProtocol

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures"
OPTIONS = CallOptions(timeout=5)
Handler = Callable[[httpx.Request], httpx.Response]


def deployment(model: str, **params: Any) -> Any:
    raw = {"model_list": [{"model_name": "m", "litellm_params": {"model": model, **params}}]}
    return parse_fleet_config(raw, {}).model_list[0]


def both_ways(
    exchange: Callable[[], Exchange], handler: Handler, provider: str
) -> list[tuple[list[tuple[str, bytes]], ProviderResult | type[Exception]]]:
    """What each driver sent and came to: the result, or the class of its error."""
    outcomes = []
    for driver in ("blocking", "loop"):
        sent: list[tuple[str, bytes]] = []
        transport = httpx.MockTransport(recording(handler, sent))
        result: ProviderResult | type[Exception]
        try:
            if driver == "blocking":
                with httpx.Client(transport=transport) as client:
                    result = send(exchange(), client, provider)
            else:
                result = asyncio.run(_send_async(exchange(), transport, provider))
        except errors.ProviderError as exc:
            result = type(exc)
        outcomes.append((sent, result))
    return outcomes


def recording(handler: Handler, sent: list[tuple[str, bytes]]) -> Handler:
    def record(request: httpx.Request) -> httpx.Response:
        sent.append((str(request.url), request.content))
        return handler(request)

    return record


async def _send_async(
    exchange: Exchange, transport: httpx.MockTransport, provider: str
) -> ProviderResult:
    async with httpx.AsyncClient(transport=transport) as client:
        return await send_async(exchange, client, provider)


def test_a_chat_call_is_the_same_either_way() -> None:
    reply = (FIXTURES / "openai" / "chat_completion.json").read_bytes()
    dep = deployment("openai/gpt-4o-mini", api_key="sk-test")
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
    blocking, loop = both_ways(
        lambda: OpenAIProtocol("openai").chat_exchange(dep, body, OPTIONS),
        lambda _: httpx.Response(200, content=reply),
        "openai",
    )
    assert blocking == loop
    assert isinstance(loop[1], ProviderResult) and loop[1].usage.total_tokens > 0


def test_an_exchange_of_several_calls_is_the_same_either_way() -> None:
    # Gemini embeds 150 inputs in two calls of at most 100
    def handler(request: httpx.Request) -> httpx.Response:
        texts = [r["content"]["parts"][0]["text"] for r in json.loads(request.content)["requests"]]
        return httpx.Response(200, json={"embeddings": [{"values": [len(t)]} for t in texts]})

    dep = deployment("gemini/text-embedding-004", api_key="g-test")
    body = {"input": ["x" * (1 + i % 7) for i in range(150)]}
    blocking, loop = both_ways(
        lambda: GeminiProtocol().embed_exchange(dep, body, OPTIONS), handler, "gemini"
    )
    assert blocking == loop
    assert len(loop[0]) == 2


@pytest.mark.parametrize(
    ("failure", "expected"),
    [
        (httpx.ReadTimeout, errors.ProviderTimeoutError),
        (httpx.ConnectError, errors.ProviderConnectionError),
        (httpx.RemoteProtocolError, errors.ProviderConnectionError),
    ],
)
def test_transport_failures_map_the_same_either_way(
    failure: type[httpx.TransportError], expected: type[errors.ProviderError]
) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise failure("boom", request=request)

    dep = deployment("openai/gpt-4o-mini", api_key="sk-test")
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
    outcomes = both_ways(
        lambda: OpenAIProtocol("openai").chat_exchange(dep, body, OPTIONS), handler, "openai"
    )
    assert [result for _, result in outcomes] == [expected, expected]


def test_an_error_reply_maps_the_same_either_way() -> None:
    dep = deployment("openai/gpt-4o-mini", api_key="sk-test")
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
    outcomes = both_ways(
        lambda: OpenAIProtocol("openai").chat_exchange(dep, body, OPTIONS),
        lambda _: httpx.Response(401, json={"error": {"message": "bad key"}}),
        "openai",
    )
    assert [result for _, result in outcomes] == [errors.AuthenticationError] * 2
