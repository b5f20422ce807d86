"""The OpenAI drop-ins: /v1/chat/completions and /v1/embeddings. Each call runs as a
high-priority job and the answer is the job's result."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any

from fastapi import APIRouter, Depends
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


@router.post("/v1/chat/completions", response_model=None, responses=SYNC_ERRORS)
async def chat_completions(body: ChatCompletionRequest, ctx: Ctx, caller: Auth) -> Any:
    return await run_sync(
        ctx, caller, CHAT_COMPLETIONS, body.model, body.provider_body(), body.cache_ttl()
    )


@router.post("/v1/embeddings", response_model=None, responses=SYNC_ERRORS)
async def embeddings(body: EmbeddingsRequest, ctx: Ctx, caller: Auth) -> Any:
    return await run_sync(ctx, caller, EMBEDDINGS, body.model, body.provider_body())


async def run_sync(
    ctx: ApiContext,
    caller: Caller,
    kind: str,
    model: str,
    request: dict[str, Any],
    cache_ttl: int | None = None,
) -> Any:
    """Enqueue at interactive priority, wait for the end, answer like OpenAI would."""
    timeout = ctx.settings.sync_timeout_seconds
    job = await run_in_threadpool(
        lambda: insert_job(
            ctx,
            caller,
            kind=kind,
            model=model,
            request=request,
            priority=PRIORITY_SYNC,
            deadline=utcnow() + dt.timedelta(seconds=timeout),
            cache_ttl=cache_ttl,
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
    error = job.error or {"message": f"job ended {job.status}", "type": "api_error"}
    return JSONResponse(
        error_body(error["message"], error["type"], error.get("param"), error.get("code")),
        status_code=int(error.get("status_code") or 502),
    )
