"""One error shape for every endpoint: OpenAI's `{"error": {message, type, param, code}}`."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import ValidationError
from sqlalchemy.exc import DataError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from starlette.exceptions import HTTPException as StarletteHTTPException

from models.anthropic_shape import openai_error_to_anthropic
from models.schemas.errors import ErrorResponse

__all__ = [
    "API_ERRORS",
    "BODY_ERRORS",
    "CONFLICT_ERRORS",
    "RATE_ERRORS",
    "ApiError",
    "ErrorResponse",
    "error_body",
    "error_responses",
    "install_error_handlers",
    "reject_nul_params",
]

_TYPE_FOR_STATUS = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    409: "conflict_error",
    413: "invalid_request_error",
    422: "invalid_request_error",
    429: "rate_limit_error",
}

#: Retry-After of a 503 for a database that could not be reached.
DB_RETRY_AFTER_S = 2

_DESCRIPTION = {
    400: "Bad request",
    401: "Missing or unknown API key",
    403: "The key may not do this",
    404: "Not found",
    409: "Conflict with the current state",
    413: "Request body over the limit",
    422: "Invalid request",
    429: "Rate limit, budget or usage cap reached",
    502: "The provider failed",
    503: "The database is unavailable; retry after Retry-After seconds",
    504: "The call did not finish in time",
}


def error_responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    """`responses=` for a route or router: these status codes answer an ErrorResponse
    (422 included, replacing FastAPI's own validation-error schema)."""
    return {code: {"model": ErrorResponse, "description": _DESCRIPTION[code]} for code in codes}


#: What any keyed route may answer: a refused value (400), key (401), permission (403),
#: an unknown id or model (404), an invalid request (422), the database unreachable (503).
API_ERRORS = error_responses(400, 401, 403, 404, 422, 503)
#: A route with a request body may also answer 413 (producer_api.body_limit).
BODY_ERRORS = error_responses(413)
#: A route that creates work may also answer 429 (rate limit, budget, usage cap).
RATE_ERRORS = error_responses(429)
#: A route that changes a resource's state may also answer 409.
CONFLICT_ERRORS = error_responses(409)


class ApiError(HTTPException):
    """An answer in OpenAI's error shape. It is an HTTPException so that it passes
    through the framework's body parsing (`producer_api.border`) unchanged."""

    def __init__(
        self,
        status_code: int,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        error_type: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(status_code, message, headers)
        self.message = message
        self.param = param
        self.code = code
        self.error_type = error_type or _TYPE_FOR_STATUS.get(status_code, "api_error")

    def __str__(self) -> str:
        return self.message


def first_problem(exc: ValidationError) -> ApiError:
    """A 400 naming the first field a schema refused (for bodies validated in a route,
    after a translation: Responses, Anthropic Messages)."""
    first = exc.errors()[0]
    where = ".".join(str(p) for p in first["loc"])
    return ApiError(400, f"{where}: {first['msg']}", param=where or None)


def error_body(
    message: str, error_type: str, param: str | None = None, code: str | None = None
) -> dict[str, Any]:
    return {"error": {"message": message, "type": error_type, "param": param, "code": code}}


def _field_path(loc: tuple[Any, ...]) -> str:
    parts = [str(p) for p in loc if p not in ("body", "query", "path", "header")]
    return ".".join(parts) or "body"


#: Routes that speak Anthropic's protocol answer its error shape.
ANTHROPIC_ROUTES = frozenset({"/v1/messages", "/v1/messages/count_tokens"})


def _answer(
    request: Request, body: dict[str, Any], status: int, headers: Mapping[str, str] | None = None
) -> JSONResponse:
    """An error answer in OpenAI's shape, or Anthropic's on Anthropic's routes."""
    if request.url.path in ANTHROPIC_ROUTES:
        body = openai_error_to_anthropic({**body["error"], "status_code": status})
    return JSONResponse(body, status_code=status, headers=headers)


async def _api_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ApiError)
    body = error_body(exc.message, exc.error_type, exc.param, exc.code)
    return _answer(request, body, exc.status_code, exc.headers)


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    """400, as OpenAI answers (its SDK raises `BadRequestError`), naming every bad field;
    the first one is the `param`."""
    assert isinstance(exc, RequestValidationError)
    problems = [_problem(e) for e in exc.errors()]
    first = problems[0][0] if problems else None
    message = "invalid request: " + "; ".join(f"{param}: {msg}" for param, msg in problems)
    return _answer(request, error_body(message, "invalid_request_error", first), 400)


def _problem(error: Any) -> tuple[str, str]:
    """(param, message) of one validation error; a body that is not JSON at all is the
    whole `body`, at the position where the parser stopped."""
    if error.get("type") == "json_invalid":
        reason = (error.get("ctx") or {}).get("error", "")
        return "body", f"not valid JSON ({reason} at position {error['loc'][-1]})"
    return _field_path(tuple(error["loc"])), str(error["msg"])


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    body = error_body(str(exc.detail), _TYPE_FOR_STATUS.get(exc.status_code, "api_error"))
    return _answer(request, body, exc.status_code, getattr(exc, "headers", None))


async def _data_error(_: Request, exc: Exception) -> JSONResponse:
    """A value the database cannot store (an integer past its column's range, a NUL
    character in a text column): the client's data, so 400; nothing was committed. The
    message never echoes the statement or its parameters."""
    return JSONResponse(
        error_body(
            "a value cannot be stored: an integer is out of range (at most 2147483647) "
            "or a text contains a NUL character",
            "invalid_request_error",
            code="invalid_value",
        ),
        status_code=400,
    )


async def _database_unavailable(_: Request, exc: Exception) -> JSONResponse:
    """The database could not be reached or dropped the connection (after the one retry
    of `producer_api.transactions`): nothing was committed, so the client may retry."""
    return JSONResponse(
        error_body(
            "the database is unavailable right now; nothing was stored, try again",
            "api_error",
            code="database_unavailable",
        ),
        status_code=503,
        headers={"Retry-After": str(DB_RETRY_AFTER_S)},
    )


def reject_nul_params(request: Request) -> None:
    """An app-wide dependency: query and path parameters are compared with text
    columns, which cannot hold U+0000; refuse such a value naming the parameter."""
    params = [*request.path_params.items(), *request.query_params.multi_items()]
    for name, value in params:
        if isinstance(value, str) and "\x00" in value:
            raise ApiError(
                400, f"{name}: must not contain NUL characters", param=name, code="invalid_value"
            )


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(ApiError, _api_error)
    app.add_exception_handler(DataError, _data_error)
    for transient in (OperationalError, InterfaceError, PoolTimeout):
        app.add_exception_handler(transient, _database_unavailable)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
