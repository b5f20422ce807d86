"""A provider's HTTP exchange for one request, apart from the client that sends it.

A protocol writes its calls once, as a generator (`Exchange`): it yields each HTTP
request it needs (`HttpCall`), is sent the response (whatever its status), and returns
the `ProviderResult` or raises the error tree. `send` drives it with a blocking
`httpx.Client`, `send_async` with an `httpx.AsyncClient` on the worker's event loop;
both map transport failures to the error tree here, the one transport boundary.

A streamed call is one POST whose reply is read as it comes (`StreamCall`,
`stream_async`): the protocol's pure decoder turns each server-sent event into the
fleet's deltas (models.stream_events) and its usage."""

from __future__ import annotations

import contextlib
import json
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Callable, Generator, Iterator
from dataclasses import dataclass
from typing import Any, Protocol

import httpx2 as httpx
from httpx_sse import EventSource, SSEError

from models.fleet_config import Deployment
from models.stream_events import Delta
from workers.providers import errors
from workers.providers.base import CallOptions, ProviderResult, Usage

__all__ = [
    "EventReader",
    "Exchange",
    "ExchangeProtocol",
    "HttpCall",
    "StreamCall",
    "StreamDecoder",
    "json_call",
    "map_transport_errors",
    "send",
    "send_async",
    "sse_events",
    "stream_async",
]

#: httpcore's words when a connection closes before any byte of the reply: the mark of
#: a kept-alive connection the server closed as the request went out (a stale one).
NO_RESPONSE = "Server disconnected without sending a response."


@dataclass(frozen=True, slots=True)
class HttpCall:
    """One POST of an exchange."""

    url: str
    headers: dict[str, str]
    content: bytes
    timeout: float


def json_call(url: str, headers: dict[str, str], payload: Any, timeout: float) -> HttpCall:
    """A POST of `payload` as JSON, encoded as httpx's `json=` would."""
    content = json.dumps(payload, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    headers = {k: v for k, v in headers.items() if k.lower() != "content-type"}
    headers["Content-Type"] = "application/json"
    return HttpCall(url, headers, content.encode(), timeout)


#: Yields each call, is sent its response, returns the result.
Exchange = Generator[HttpCall, httpx.Response, ProviderResult]


class ExchangeProtocol(ABC):
    """A wire protocol written as exchanges; `chat` and `embed` send them with a
    blocking client (the worker's event loop sends them with `send_async`)."""

    name: str

    @abstractmethod
    def chat_exchange(
        self, deployment: Deployment, body: dict[str, Any], options: CallOptions
    ) -> Exchange: ...

    @abstractmethod
    def embed_exchange(
        self, deployment: Deployment, body: dict[str, Any], options: CallOptions
    ) -> Exchange: ...

    @abstractmethod
    def chat_stream(
        self, deployment: Deployment, body: dict[str, Any], options: CallOptions
    ) -> StreamCall:
        """The streamed form of a chat call."""

    def chat(
        self,
        client: httpx.Client,
        deployment: Deployment,
        body: dict[str, Any],
        options: CallOptions,
    ) -> ProviderResult:
        return send(self.chat_exchange(deployment, body, options), client, self.name)

    def embed(
        self,
        client: httpx.Client,
        deployment: Deployment,
        body: dict[str, Any],
        options: CallOptions,
    ) -> ProviderResult:
        return send(self.embed_exchange(deployment, body, options), client, self.name)


def send(exchange: Exchange, client: httpx.Client, provider: str) -> ProviderResult:
    """Run `exchange` with a blocking client."""
    try:
        call = next(exchange)
        while True:
            with map_transport_errors(provider):
                response = client.post(
                    call.url, content=call.content, headers=call.headers, timeout=call.timeout
                )
            call = exchange.send(response)
    except StopIteration as done:
        result: ProviderResult = done.value
        return result
    finally:
        exchange.close()


async def send_async(
    exchange: Exchange, client: httpx.AsyncClient, provider: str
) -> ProviderResult:
    """Run `exchange` on the event loop."""
    try:
        call = next(exchange)
        while True:
            with map_transport_errors(provider):
                response = await client.post(
                    call.url, content=call.content, headers=call.headers, timeout=call.timeout
                )
            call = exchange.send(response)
    except StopIteration as done:
        result: ProviderResult = done.value
        return result
    finally:
        exchange.close()


class StreamDecoder(Protocol):
    """A protocol's events, read one at a time (pure)."""

    def feed(self, event: str, data: str) -> list[Delta | Usage]:
        """The deltas and usage one server-sent event carries; an error event raises
        the error tree."""
        ...

    def close(self) -> list[Delta | Usage]:
        """The reply ended: what the protocol sends only at the end (a usage that each
        event restated), or raise if it ended before the protocol's last event."""
        ...


#: Reads a streamed reply's events as (event name, data) pairs.
EventReader = Callable[[httpx.Response, str], AsyncIterator[tuple[str, str]]]


async def sse_events(response: httpx.Response, provider: str) -> AsyncIterator[tuple[str, str]]:
    """Server-sent events, as most protocols stream."""
    # httpx-sse reads httpx's Response; httpx2's has the same interface.
    source = EventSource(response)  # type: ignore[arg-type]
    try:
        async for event in source.aiter_sse():
            yield event.event, event.data
    except SSEError as exc:
        raise errors.MalformedResponseError(
            "provider reply is not an event stream", provider=provider
        ) from exc


@dataclass(frozen=True, slots=True)
class StreamCall:
    """A streamed POST, the decoder of its events, and the error boundary of a
    non-2xx reply (the protocol's, as for its other calls); `read_events` frames the
    reply's bytes into events (server-sent events unless the protocol says otherwise)."""

    call: HttpCall
    decoder: StreamDecoder
    map_error: Callable[[str, httpx.Response], errors.ProviderError]
    read_events: EventReader = sse_events


async def stream_async(
    stream: StreamCall, client: httpx.AsyncClient, provider: str
) -> AsyncIterator[Delta | Usage]:
    """The deltas and usage of a streamed call as they arrive; leaving early (an
    `aclose`) closes the connection, which stops the provider's generation."""
    call = stream.call
    headers = {"Accept": "text/event-stream", **call.headers}
    with map_transport_errors(provider):
        async with client.stream(
            "POST", call.url, content=call.content, headers=headers, timeout=call.timeout
        ) as response:
            if response.status_code >= 400:
                await response.aread()
                raise stream.map_error(provider, response)
            async for name, data in stream.read_events(response, provider):
                for item in stream.decoder.feed(name, data):
                    yield item
    for item in stream.decoder.close():
        yield item


@contextlib.contextmanager
def map_transport_errors(provider: str) -> Iterator[None]:
    """The transport boundary: httpx exceptions become the project's error tree,
    chained. Shared by every protocol: the transport is the same for all."""
    try:
        yield
    except httpx.TimeoutException as exc:
        raise errors.ProviderTimeoutError(
            "provider did not answer in time", provider=provider
        ) from exc
    except httpx.RemoteProtocolError as exc:
        if str(exc) != NO_RESPONSE:  # a reply cut short or garbled: the provider's fault
            raise errors.ProviderConnectionError(
                f"the provider broke off its reply: {exc}", provider=provider
            ) from exc
        raise errors.StaleConnectionError(
            "the provider closed the connection without answering", provider=provider
        ) from exc
    except httpx.TransportError as exc:
        raise errors.ProviderConnectionError(
            f"cannot reach provider: {type(exc).__name__}", provider=provider
        ) from exc
