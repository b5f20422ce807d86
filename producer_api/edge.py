"""What every request passes first (ASGI middleware, before routing):
- LiteLLM's routes without the `/v1` prefix (`/chat/completions`, `/embeddings`,
  `/models`, ...) are served as their `/v1` route, as LiteLLM's proxy serves both;
- every answer carries `x-request-id`: the request's own, when it sent one that is
  short and printable, else a new one; it is bound to the request's log lines;
- headers that code deep in a request learns (a key's `x-ratelimit-*`, the deployment
  that served a call) are added to its answer with `add_answer_headers`.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Mapping
from contextvars import ContextVar

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from models.logging_setup import log_context

__all__ = ["REQUEST_ID_HEADER", "RequestEdge", "add_answer_headers"]

REQUEST_ID_HEADER = "x-request-id"
#: LiteLLM's unprefixed routes (and everything under them).
UNPREFIXED = ("/chat/completions", "/embeddings", "/models", "/responses", "/files", "/batches")
#: A caller's request id is kept if it looks like one (it is echoed into headers and logs).
_REQUEST_ID = re.compile(r"[A-Za-z0-9._:\-]{1,128}")


#: The current request's extra answer headers. The dict is shared, not copied, by the
#: contexts a request runs in (a sync route's thread included), so what they add to it
#: reaches the answer.
_answer_headers: ContextVar[dict[str, str] | None] = ContextVar("answer_headers", default=None)


def add_answer_headers(headers: Mapping[str, str]) -> None:
    """Add `headers` to the answer of the request being served (none outside one)."""
    holder = _answer_headers.get()
    if holder is not None:
        holder.update(headers)


def _unprefixed(path: str) -> bool:
    return any(path == route or path.startswith(route + "/") for route in UNPREFIXED)


class RequestEdge:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if _unprefixed(scope["path"]):
            scope = {**scope, "path": "/v1" + scope["path"], "raw_path": None}
        given = _given_id(scope)
        request_id = given or f"req_{uuid.uuid4().hex}"
        scope.setdefault("state", {})["request_id"] = request_id

        extra: dict[str, str] = {}

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in extra.items():
                    headers.setdefault(name, value)
                headers[REQUEST_ID_HEADER] = request_id
            await send(message)

        token = _answer_headers.set(extra)
        try:
            with log_context(request_id=request_id):
                await self.app(scope, receive, send_with_id)
        finally:
            _answer_headers.reset(token)


def _given_id(scope: Scope) -> str | None:
    for name, value in scope.get("headers", ()):
        if name == b"x-request-id":
            text = value.decode("latin-1")
            return text if _REQUEST_ID.fullmatch(text) else None
    return None
