"""The OpenAI drop-ins: /v1/chat/completions and /v1/embeddings. Each call runs as a
high-priority job and the answer is the job's result."""

from __future__ import annotations

import contextlib
import datetime as dt
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from models.contract import CHAT_COMPLETIONS, EMBEDDINGS, PRIORITY_SYNC
from models.schemas.chat import ChatCompletionRequest
from models.schemas.embeddings import EmbeddingsRequest
from models.tables import JobStatus, utcnow
from producer_api.auth import Caller, require_key
from producer_api.border import BorderRoute
from producer_api.context import ApiContext, get_context
from producer_api.errors import (
    API_ERRORS,
    BODY_ERRORS,
    RATE_ERRORS,
    ApiError,
    error_body,
    error_responses,
)
from producer_api.jobs_service import cancel_job, insert_job, wait_for_end

router = APIRouter(route_class=BorderRoute, tags=["openai"], responses=API_ERRORS)

Ctx = Annotated[ApiContext, Depends(get_context)]
Auth = Annotated[Caller, Depends(require_key)]
#: A sync call also answers the job's own failure (the provider's status, else 502) and 504.
SYNC_ERRORS = {**BODY_ERRORS, **RATE_ERRORS, **error_responses(502, 504)}
#: Retry-After of a sync call that found no capacity in time.
NO_CAPACITY_RETRY_AFTER_S = 5


@router.post("/v1/chat/completions", response_model=None, responses=SYNC_ERRORS)
async def chat_completions(
    body: ChatCompletionRequest, request: Request, ctx: Ctx, caller: Auth
) -> Any:
    return await run_sync(
        ctx,
        caller,
        SyncCall(CHAT_COMPLETIONS, body.model, body.provider_body(), body.cache_ttl()),
        request,
    )


@router.post("/v1/embeddings", response_model=None, responses=SYNC_ERRORS)
async def embeddings(body: EmbeddingsRequest, request: Request, ctx: Ctx, caller: Auth) -> Any:
    return await run_sync(
        ctx, caller, SyncCall(EMBEDDINGS, body.model, body.provider_body()), request
    )


@dataclass(frozen=True, slots=True)
class SyncCall:
    kind: str
    model: str
    request: dict[str, Any]
    cache_ttl: int | None = None


async def run_sync(ctx: ApiContext, caller: Caller, call: SyncCall, http: Request) -> Any:
    """Enqueue at interactive priority, wait for the end, answer like OpenAI would: the
    result, the provider's error (after the fleet's retries and fallbacks), a 429 when
    no capacity came within LLMFLEET_SYNC_CAPACITY_WAIT, or a 504 past the timeout."""
    timeout = _timeout(ctx, http)
    job = await run_in_threadpool(
        lambda: insert_job(
            ctx,
            caller,
            kind=call.kind,
            model=call.model,
            request=call.request,
            priority=PRIORITY_SYNC,
            deadline=utcnow() + dt.timedelta(seconds=ctx.settings.sync_capacity_wait_seconds),
            cache_ttl=call.cache_ttl,
        )
    )
    job = await wait_for_end(ctx, caller, job.id, timeout)
    if job.status == JobStatus.SUCCEEDED:
        return job.response
    if job.status in (JobStatus.QUEUED, JobStatus.RUNNING):
        await run_in_threadpool(cancel_job, ctx, caller, job.id)
        raise ApiError(
            504,
            f"the call did not finish within {timeout:g}s (job {job.id} was cancelled)",
            code="timeout",
            error_type="timeout_error",
        )
    if job.status == JobStatus.EXPIRED:
        waited = ctx.settings.sync_capacity_wait_seconds
        raise ApiError(
            429,
            f"no capacity for `{call.model}` within {waited:g}s "
            f"({job.wait_reason or 'the fleet is busy'})",
            code="no_capacity",
            error_type="rate_limit_error",
            headers={"Retry-After": str(NO_CAPACITY_RETRY_AFTER_S)},
        )
    error = job.error or {"message": f"job ended {job.status}", "type": "api_error"}
    return JSONResponse(
        error_body(error["message"], error["type"], error.get("param"), error.get("code")),
        status_code=int(error.get("status_code") or 502),
    )


def _timeout(ctx: ApiContext, http: Request) -> float:
    """The fleet's sync timeout, or the client's own when it says a shorter one (the
    `openai` SDK sends its timeout as `X-Stainless-Timeout`)."""
    timeout = ctx.settings.sync_timeout_seconds
    with contextlib.suppress(ValueError):
        asked = float(http.headers.get("x-stainless-timeout", "inf"))
        if 0 < asked < timeout:
            timeout = asked
    return timeout
