"""Every JSON body is parsed once, held to the input limits of `models.wire`.

Why here: FastAPI parses a route's body before any of our code runs, with the standard
library's `json.loads`, which accepts lone surrogates, NaN and any nesting its stack
allows. Routes use `BorderRoute`, whose request parses with `models.wire.loads`
instead, so a body past a limit is refused with a 400 naming the field before
validation, authentication of the work, limits or the database see it.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import Request, Response
from fastapi.routing import APIRoute

from models import wire
from producer_api.errors import ApiError

__all__ = ["BorderRoute", "parse_body"]


def parse_body(raw: bytes | str) -> Any:
    """The parsed body, or the 400 that says which field is past which limit (`param`
    as validation errors name it: "messages.0.content"; "body" for the whole). Text
    that is not JSON at all is left to the caller (`json.JSONDecodeError`)."""
    try:
        return wire.loads(raw)
    except wire.WireError as exc:
        param = exc.param or "body"
        raise ApiError(400, f"{param}: {exc.message}", param=param, code="invalid_value") from None
    except json.JSONDecodeError:
        raise
    except ValueError as exc:  # NaN / Infinity, or bytes that are not UTF-8
        raise ApiError(
            400, f"body: not valid JSON: {exc}", param="body", code="invalid_json"
        ) from None


class _BorderRequest(Request):
    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            self._json = parse_body(await self.body())
        return self._json


class BorderRoute(APIRoute):
    """An APIRoute whose JSON body is parsed by `parse_body`."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def border_handler(request: Request) -> Response:
            return await handler(_BorderRequest(request.scope, request.receive))

        return border_handler
