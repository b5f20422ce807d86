"""The OpenAI drop-ins: /v1/chat/completions and /v1/embeddings. Each call runs as a
high-priority job and the answer is the job's result."""

from __future__ import annotations

import functools
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse

from models.contract import CHAT_COMPLETIONS, EMBEDDINGS
from models.schemas.chat import ChatCompletionRequest
from models.schemas.embeddings import EmbeddingsRequest
from models.tables import Job
from producer_api.auth import Caller, require_key
from producer_api.border import BorderRoute
from producer_api.chat_chunks import ChunkRenderer
from producer_api.context import ApiContext, get_context
from producer_api.errors import API_ERRORS, BODY_ERRORS, RATE_ERRORS, error_body, error_responses
from producer_api.sse import event_stream
from producer_api.sync_calls import Failure, SyncCall, answer, start_stream

router = APIRouter(route_class=BorderRoute, tags=["openai"], responses=API_ERRORS)

Ctx = Annotated[ApiContext, Depends(get_context)]
Auth = Annotated[Caller, Depends(require_key)]
#: A sync call also answers the job's own failure (the provider's status, else 502) and 504.
SYNC_ERRORS = {**BODY_ERRORS, **RATE_ERRORS, **error_responses(502, 504)}


@router.post("/v1/chat/completions", response_model=None, responses=SYNC_ERRORS)
async def chat_completions(
    body: ChatCompletionRequest, request: Request, ctx: Ctx, caller: Auth
) -> Any:
    """As OpenAI answers: the `chat.completion`, or with `stream: true` its
    `chat.completion.chunk` events as the provider sends them (an error before the
    first chunk is a plain HTTP error; a caller that goes away cancels the job, unless
    it asked for `background`)."""
    call = SyncCall(CHAT_COMPLETIONS, body.model, body.provider_body(), body.cache_ttl())
    if not body.stream:
        return _rendered(await answer(ctx, caller, call, request))
    started = await start_stream(ctx, caller, call, request)
    if isinstance(started, Failure):
        return _rendered(started)
    usage = body.stream_options is not None and bool(body.stream_options.include_usage)
    renderer = ChunkRenderer(started.job.id, call.model, usage)
    abandon = None if body.background else functools.partial(started.abandon, ctx, caller)
    return event_stream(renderer, started.events, started.first, abandon)


@router.post("/v1/embeddings", response_model=None, responses=SYNC_ERRORS)
async def embeddings(body: EmbeddingsRequest, request: Request, ctx: Ctx, caller: Auth) -> Any:
    call = SyncCall(EMBEDDINGS, body.model, body.provider_body())
    return _rendered(await answer(ctx, caller, call, request))


def _rendered(outcome: Job | Failure) -> Any:
    if isinstance(outcome, Job):
        return outcome.response
    error = outcome.error
    body = error_body(error["message"], error["type"], error.get("param"), error.get("code"))
    return JSONResponse(body, status_code=outcome.status, headers=outcome.headers)
