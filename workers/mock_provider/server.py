"""The mock OpenAI-compatible provider: a real HTTP server for tests, demos and benchmarks.

Workers talk to it exactly as to OpenAI, so the whole path is exercised for real. Plain
async Starlette keeps a slow request one sleeping coroutine: thousands fit in a process.

Per valid request: max_concurrency overflow -> 429; hang; latency; then the outcome a
`[mock:...]` directive in the last user message asks for, else a random
429/500/malformed/reset. `/_mock/stats` counts each deliberate fault by kind.
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import os
import random
import re
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import uvicorn
from pydantic import ValidationError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from models.mock_config import MockConfig
from workers.mock_provider.bodies import Call, Invalid, parse_chat, parse_embeddings
from workers.mock_provider.replies import (
    CLIENT_CLOSED,
    Reset,
    context_window,
    error,
    malformed,
    status_fault,
    status_reply,
    too_many,
)
from workers.mock_provider.streams import StreamPlan, stream_directive, stream_reply

__all__ = ["CONFIG_ENV", "create_app", "create_app_from_env", "serve"]

CONFIG_ENV = "LLMFLEET_MOCK_CONFIG"
MODEL_ID = "mock-model"
CALL_TIMES_KEPT = 100_000
_DIRECTIVE = re.compile(r"\[mock:([a-z_]+)(?:=([^\]]*))?\]")
_SECONDS = re.compile(r"\d+(?:\.\d*)?|\.\d+")
_USAGE = (
    "use status=400..599, latency=SECONDS, malformed, reset, context_window, chunks=N, "
    "interval=SECONDS, fail_after=N or stall_after=N"
)
_MODEL = {"id": MODEL_ID, "object": "model", "created": 0, "owned_by": "llmfleet-mock"}

Json = dict[str, Any]
Build = Callable[[MockConfig, int], Json]


@dataclass
class _Directives:
    latency: float | None = None
    outcome: Callable[[MockConfig], Response] | None = None
    #: The fault kind the outcome counts as in the stats, if it is one.
    fault: str | None = None
    stream: StreamPlan = field(default_factory=StreamPlan)


def _directives(text: str, prompt_tokens: int) -> _Directives:
    """Read `[mock:...]` directives, so a test can script one request's fate exactly."""
    found = _Directives()
    for match in _DIRECTIVE.finditer(text):
        name, value = match.group(1), match.group(2) or ""
        if name == "status" and value.isdigit() and 400 <= int(value) <= 599:
            found.outcome = functools.partial(status_reply, status=int(value))
            found.fault = status_fault(int(value))
        elif name == "latency" and _SECONDS.fullmatch(value):
            found.latency = float(value)
        elif name == "malformed" and match.group(2) is None:
            found.outcome, found.fault = lambda _config: malformed(), "malformed"
        elif name == "reset" and match.group(2) is None:
            found.outcome, found.fault = lambda _config: Reset(), "reset"
        elif name == "context_window" and match.group(2) is None:
            found.outcome, found.fault = lambda _config: context_window(prompt_tokens), None
        elif (plan := stream_directive(found.stream, name, value)) is not None:
            found.stream = plan
        else:
            raise Invalid(f"unsupported mock directive {match.group(0)!r}; {_USAGE}", "messages")
    return found


async def _json_body(request: Request) -> Any:
    try:
        return await request.json()
    except ValueError:  # not JSON, or not even UTF-8
        raise Invalid("the request body is not valid JSON", None) from None


async def _wait_for_disconnect(request: Request) -> None:
    while (await request.receive())["type"] != "http.disconnect":
        pass


async def _pause(request: Request, seconds: float) -> bool:
    """Sleep unless the client hangs up first (abandoned hangs must free their slot)."""
    if seconds <= 0:
        return True
    watcher = asyncio.ensure_future(_wait_for_disconnect(request))
    done, _ = await asyncio.wait({watcher}, timeout=seconds)
    if watcher in done:
        return False
    watcher.cancel()
    return True


@dataclass
class _Stats:
    calls: int = 0
    by_status: Counter[int] = field(default_factory=Counter)
    #: Deliberate misbehaviour by kind: over_capacity, hang, rate_limited, server_error,
    #: refused, malformed, reset (a reset has no status, so by_status misses it).
    faults: Counter[str] = field(default_factory=Counter)
    in_flight: int = 0
    max_in_flight: int = 0
    call_times: deque[float] = field(default_factory=lambda: deque(maxlen=CALL_TIMES_KEPT))

    def reset(self) -> None:
        """Zero in place: calls in flight still hold this object and will decrement it."""
        self.calls, self.max_in_flight = 0, self.in_flight
        self.by_status.clear()
        self.faults.clear()
        self.call_times.clear()

    def as_json(self) -> Json:
        return {
            "calls": self.calls,
            "by_status": {str(k): v for k, v in sorted(self.by_status.items())},
            "faults": dict(sorted(self.faults.items())),
            "in_flight": self.in_flight,
            "max_in_flight": self.max_in_flight,
            "call_times": list(self.call_times),
        }


class _MockProvider:
    """All state of one app instance; the routes are its bound methods."""

    def __init__(self, config: MockConfig) -> None:
        self.config = config
        self.rng = random.Random(config.seed)
        self.stats = _Stats()
        self.numbers = itertools.count(1)

    async def chat(self, request: Request) -> Response:
        return await self._observed(request, parse_chat)

    async def embeddings(self, request: Request) -> Response:
        return await self._observed(request, parse_embeddings)

    async def _observed(self, request: Request, parse: Callable[[Any], Call]) -> Response:
        self.stats.calls += 1
        self.stats.call_times.append(time.time())
        try:
            call = parse(await _json_body(request))
            directives = _directives(call.directive_text, call.prompt_tokens)
        except Invalid as exc:
            response: Response = error(400, str(exc), param=exc.param)
        else:
            response = await self._admitted(request, call, directives)
        if not isinstance(response, Reset):
            self.stats.by_status[response.status_code] += 1
        return response

    async def _admitted(self, request: Request, call: Call, directives: _Directives) -> Response:
        config, stats = self.config, self.stats
        if config.max_concurrency is not None and stats.in_flight >= config.max_concurrency:
            stats.faults["over_capacity"] += 1
            return too_many(config, f"more than {config.max_concurrency} requests in flight")
        stats.in_flight += 1
        stats.max_in_flight = max(stats.max_in_flight, stats.in_flight)
        try:
            return await self._faulted(request, config, call, directives)
        finally:
            stats.in_flight -= 1

    async def _faulted(
        self, request: Request, config: MockConfig, call: Call, directives: _Directives
    ) -> Response:
        faults = self.stats.faults
        delay = 0.0
        if self.rng.random() < config.hang_rate:
            faults["hang"] += 1
            delay = config.hang_seconds
        latency = directives.latency
        delay += latency if latency is not None else config.sample_latency(self.rng)
        if not await _pause(request, delay):
            return error(CLIENT_CLOSED, "mock error 499: the client closed the connection")
        if directives.outcome is not None:
            if directives.fault is not None:
                faults[directives.fault] += 1
            return directives.outcome(config)
        if config.context_window is not None and call.prompt_tokens > config.context_window:
            return context_window(call.prompt_tokens, config.context_window)
        fault = self._draw_fault(config)
        if fault is None and call.stream:
            reply = call.build(config, next(self.numbers))
            return stream_reply(config, reply, directives.stream, call.include_usage)
        if fault is None:
            return JSONResponse(call.build(config, next(self.numbers)))
        faults[fault] += 1
        if fault == "rate_limited":
            return too_many(config, "rate limit reached")
        if fault == "server_error":
            return error(500, "mock error 500: the mock provider failed on purpose")
        return malformed() if fault == "malformed" else Reset()

    def _draw_fault(self, config: MockConfig) -> str | None:
        """One draw against the cumulative rates, in the documented order."""
        draw = self.rng.random()
        for fault, rate in (
            ("rate_limited", config.rate_429),
            ("server_error", config.error_rate),
            ("malformed", config.malformed_rate),
            ("reset", config.reset_rate),
        ):
            if draw < rate:
                return fault
            draw -= rate
        return None

    async def models(self, _request: Request) -> Response:
        return JSONResponse({"object": "list", "data": [_MODEL]})

    async def get_stats(self, _request: Request) -> Response:
        return JSONResponse(self.stats.as_json())

    async def reset(self, _request: Request) -> Response:
        self.stats.reset()
        return JSONResponse(self.stats.as_json())

    async def config_endpoint(self, request: Request) -> Response:
        """GET shows the live config; PUT merges fields into it, so a test can turn faults on."""
        if request.method == "GET":
            return JSONResponse(self.config.model_dump())
        try:
            changes = await _json_body(request)
            if not isinstance(changes, dict):
                raise Invalid("the body must be an object of MockConfig fields", None)
            config = MockConfig.model_validate(self.config.model_dump() | changes)
        except Invalid as exc:
            return error(400, str(exc), param=exc.param)
        except ValidationError as exc:
            first = exc.errors()[0]
            name = ".".join(str(part) for part in first["loc"])
            return error(400, f"{name}: {first['msg']}", param=name or None)
        if "seed" in changes:
            self.rng = random.Random(config.seed)
        self.config = config
        return JSONResponse(config.model_dump())


def create_app(config: MockConfig) -> Starlette:
    """Build one independent mock provider; each app has its own stats, config and RNG."""
    mock = _MockProvider(config)
    routes = [
        Route("/v1/chat/completions", mock.chat, methods=["POST"]),
        Route("/v1/embeddings", mock.embeddings, methods=["POST"]),
        Route("/v1/models", mock.models, methods=["GET"]),
        Route("/_mock/stats", mock.get_stats, methods=["GET"]),
        Route("/_mock/reset", mock.reset, methods=["POST"]),
        Route("/_mock/config", mock.config_endpoint, methods=["GET", "PUT"]),
    ]
    return Starlette(routes=routes)


def create_app_from_env() -> Starlette:
    """Uvicorn factory (`workers.mock_provider.server:create_app_from_env`) for multi-worker
    or reload runs, where the config can only travel through the environment."""
    raw = os.environ.get(CONFIG_ENV, "").strip()
    return create_app(MockConfig.model_validate_json(raw) if raw else MockConfig())


def serve(config: MockConfig, host: str, port: int) -> None:
    """Run in the foreground; shutdown gives in-flight calls 1 s, so hangs can't stall teardown."""
    uvicorn.run(
        create_app(config),
        host=host,
        port=port,
        log_level="warning",
        access_log=False,
        timeout_graceful_shutdown=1,
    )
