"""/v1/messages: Anthropic's Messages API on any provider the fleet routes to, for
Anthropic-SDK clients and the coding tools that point at a gateway. A request is
translated to the job format (`models.anthropic_shape`) and runs as an interactive job,
like an OpenAI chat completion; the answer is an Anthropic Message, or with
`stream: true` Anthropic's event stream (producer_api.message_events). Errors on these
routes are in Anthropic's shape (producer_api.errors)."""

from __future__ import annotations

import functools
from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, Request
from fastapi.responses import JSONResponse
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool

from models.anthropic_shape import (
    AnthropicShapeError,
    anthropic_to_openai_request,
    openai_error_to_anthropic,
    openai_to_anthropic_message,
)
from models.batch_lines import estimate_tokens
from models.contract import CHAT_COMPLETIONS
from models.schemas.chat import ChatCompletionRequest
from producer_api.access import check_model
from producer_api.auth import Caller, require_key
from producer_api.border import BorderRoute
from producer_api.context import ApiContext, get_context
from producer_api.errors import (
    API_ERRORS,
    BODY_ERRORS,
    RATE_ERRORS,
    ApiError,
    error_responses,
    first_problem,
)
from producer_api.message_events import MessageRenderer
from producer_api.sse import event_stream
from producer_api.sync_calls import Failure, SyncCall, answer, start_stream

router = APIRouter(route_class=BorderRoute, tags=["anthropic"], responses=API_ERRORS)

Ctx = Annotated[ApiContext, Depends(get_context)]
Auth = Annotated[Caller, Depends(require_key)]
Message = Annotated[dict[str, Any], Body(description="An Anthropic Messages request.")]


@router.post(
    "/v1/messages",
    response_model=None,
    responses={**BODY_ERRORS, **RATE_ERRORS, **error_responses(502, 504)},
)
async def create_message(body: Message, request: Request, ctx: Ctx, caller: Auth) -> Any:
    """An Anthropic Message, or with `stream: true` its events as the provider sends
    them (an error before the first is a plain HTTP error; a caller that goes away
    cancels the job)."""
    job_body = _job_body(body)
    streamed = bool(body.get("stream"))
    call = SyncCall(
        CHAT_COMPLETIONS, job_body["model"], job_body | ({"stream": True} if streamed else {})
    )
    if not streamed:
        outcome = await answer(ctx, caller, call, request)
        if isinstance(outcome, Failure):
            return _failure(outcome)
        return openai_to_anthropic_message(outcome.response or {}, call.model)
    started = await start_stream(ctx, caller, call, request)
    if isinstance(started, Failure):
        return _failure(started)
    renderer = MessageRenderer(f"msg_{started.job.id}", call.model)
    abandon = functools.partial(started.abandon, ctx, caller)
    return event_stream(renderer, started.events, started.first, abandon)


@router.post("/v1/messages/count_tokens", response_model=None)
async def count_tokens(body: Message, ctx: Ctx, caller: Auth) -> dict[str, Any]:
    """`input_tokens` of a Messages request: an estimate (about four characters of text
    a token, whatever the model), since not every provider the fleet routes to can
    count; the same estimate that budgets and limits use."""
    job_body = _job_body({**body, "max_tokens": body.get("max_tokens") or 1})
    await run_in_threadpool(check_model, ctx, caller, job_body["model"])
    return {"input_tokens": estimate_tokens(job_body)}


def _job_body(body: dict[str, Any]) -> dict[str, Any]:
    """The job's OpenAI chat body, or a 400 naming the first field it cannot carry."""
    try:
        job_body = anthropic_to_openai_request(body, root="", streamed=True)
        ChatCompletionRequest.model_validate(job_body)
    except AnthropicShapeError as exc:
        raise ApiError(400, str(exc), param=exc.param) from None
    except ValidationError as exc:
        raise first_problem(exc) from None
    return job_body


def _failure(failure: Failure) -> JSONResponse:
    error = openai_error_to_anthropic({**failure.error, "status_code": failure.status})
    return JSONResponse(error, status_code=failure.status, headers=failure.headers)
