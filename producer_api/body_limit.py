"""Request-body limit: a body over the route's limit gets 413 before anything is stored.

A declared Content-Length over the limit is refused before the app runs, so no byte is
read. A body without one (chunked) is counted as the app reads it; past the limit the
read fails, whatever the app made of that failure is dropped, and the 413 is sent in
its place. The app only acts on a body it has read whole, so a refused request leaves
nothing behind.
"""

from __future__ import annotations

import json
from collections.abc import Iterable

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from producer_api.errors import error_body

__all__ = ["BodyLimit", "BodyTooLarge"]


class BodyTooLarge(Exception):
    """Raised into the app by `receive` once the body passes the limit."""


class BodyLimit:
    """ASGI middleware: `limit` bytes per request body, `large_limit` for the
    (method, path) pairs in `large_routes` (batch inputs)."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        limit: int,
        large_limit: int,
        large_routes: Iterable[tuple[str, str]],
    ) -> None:
        self.app = app
        self.limit = limit
        self.large_limit = large_limit
        self.large_routes = frozenset(large_routes)

    def limit_for(self, scope: Scope) -> int:
        route = (scope["method"], scope["path"].rstrip("/") or "/")
        return self.large_limit if route in self.large_routes else self.limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.limit_for(scope)
        declared = _content_length(scope)
        if declared is not None and declared > limit:
            await _refuse(send, limit)
            return

        received = 0
        tripped = started = False

        async def counted_receive() -> Message:
            nonlocal received, tripped
            if tripped:
                raise BodyTooLarge
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    tripped = True
                    raise BodyTooLarge
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal started
            if tripped and not started:
                return  # the app's answer to a body it could not read; the 413 replaces it
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counted_receive, guarded_send)
        except Exception:
            # The framework may wrap the failed read (400, 500, a group): the cause is ours.
            if not tripped or started:
                raise
        if tripped and not started:
            await _refuse(send, limit)


def _content_length(scope: Scope) -> int | None:
    value = Headers(scope=scope).get("content-length")
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None  # the server refuses a malformed length itself


async def _refuse(send: Send, limit: int) -> None:
    body = json.dumps(
        error_body(
            f"The request body is larger than the limit of {limit} bytes.",
            "invalid_request_error",
            code="request_too_large",
        )
    ).encode()
    # The unread rest of the body must not be taken for the next request: close.
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        (b"connection", b"close"),
    ]
    await send({"type": "http.response.start", "status": 413, "headers": headers})
    await send({"type": "http.response.body", "body": body})
