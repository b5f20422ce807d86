"""The mock provider's replies other than a success: OpenAI-shaped errors, 429s with
Retry-After, a malformed body, and no reply at all (a connection reset)."""

from __future__ import annotations

import socket
import struct
from http import HTTPStatus

from starlette.responses import JSONResponse, Response
from starlette.types import Receive, Scope, Send

from models.mock_config import MockConfig

__all__ = [
    "CLIENT_CLOSED",
    "CONTEXT_WINDOW",
    "Reset",
    "context_window",
    "error",
    "malformed",
    "status_fault",
    "status_reply",
    "too_many",
]

CONTEXT_WINDOW = 8192
CLIENT_CLOSED = 499  # nginx's code: the client gave up before the answer was ready
_KNOWN = frozenset(HTTPStatus)
_MALFORMED = b'{"id": "chatcmpl-mock-malformed", "object": "chat.completion", "choices": [{'
_TYPES = {
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    429: "requests",  # what OpenAI sends for request-rate limits
}


def error(status: int, text: str, param: str | None = None, code: str | None = None) -> Response:
    default = "server_error" if status >= 500 else "invalid_request_error"
    kind = _TYPES.get(status, default)
    body = {"error": {"message": text, "type": kind, "param": param, "code": code}}
    return JSONResponse(body, status_code=status)


def too_many(config: MockConfig, reason: str) -> Response:
    """Every 429 carries Retry-After (and OpenAI's -ms twin) unless configured off."""
    response = error(429, f"mock error 429: {reason}", code="rate_limit_exceeded")
    if (seconds := config.retry_after) is not None:
        text = str(int(seconds)) if seconds.is_integer() else str(seconds)
        response.headers.update({"retry-after": text, "retry-after-ms": str(round(seconds * 1000))})
    return response


def malformed() -> Response:
    return Response(_MALFORMED, status_code=200, media_type="application/json")


class Reset(Response):
    """No HTTP answer at all: the TCP connection is reset, as when a provider's process
    dies or a load balancer drops the call, so the client gets a transport error."""

    def __init__(self) -> None:
        super().__init__(status_code=0)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        # Uvicorn's `receive` is a method of the request cycle that owns the transport.
        transport = getattr(getattr(receive, "__self__", None), "transport", None)
        if transport is None:  # another server: start a reply and stop midway instead
            headers = [(b"content-type", b"application/json"), (b"content-length", b"1000")]
            await send({"type": "http.response.start", "status": 200, "headers": headers})
            await send({"type": "http.response.body", "body": _MALFORMED, "more_body": True})
            return
        sock = transport.get_extra_info("socket")
        if sock is not None:  # linger 0: close() sends RST, not FIN
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        transport.abort()
        await receive()  # returns once the server has seen the disconnect: it sends nothing


def status_fault(status: int) -> str:
    return "rate_limited" if status == 429 else "server_error" if status >= 500 else "refused"


def status_reply(config: MockConfig, status: int) -> Response:
    if status == 400:
        return error(400, "mock error 400: this request was refused by the mock provider")
    if status == 429:
        return too_many(config, "too many requests")
    reason = HTTPStatus(status).phrase.lower() if status in _KNOWN else "unassigned status code"
    return error(status, f"mock error {status}: {reason}")


def context_window(prompt_tokens: int, window: int = CONTEXT_WINDOW) -> Response:
    message = (
        f"This model's maximum context length is {window} tokens. However, your "
        f"messages resulted in {max(prompt_tokens, window + 1)} tokens. "
        "Please reduce the length of the messages."
    )
    return error(400, message, param="messages", code="context_length_exceeded")
