"""A provider that replays recorded replies over real HTTP, for fleet tests of a protocol
the mock provider does not speak: POST `path` answers `whole` (JSON), or `streamed`
(server-sent events) when the body asks for a stream."""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from tests.support.processes import free_port

__all__ = ["recorded_server"]


@contextlib.contextmanager
def recorded_server(path: str, whole: Path, streamed: Path) -> Iterator[str]:
    """Serve the recordings at http://127.0.0.1:<port> until the block ends."""

    async def reply(request: Request) -> Response:
        body = json.loads(await request.body())
        if body.get("stream"):
            return Response(streamed.read_bytes(), media_type="text/event-stream")
        return Response(whole.read_bytes(), media_type="application/json")

    async def alive(_: Request) -> Response:
        return Response("ok")

    app = Starlette(routes=[Route(path, reply, methods=["POST"]), Route("/", alive)])
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        with contextlib.suppress(httpx.HTTPError):
            httpx.get(url, timeout=0.5)
            break
        time.sleep(0.05)
    try:
        yield url
    finally:
        server.should_exit = True
        thread.join(5)
