"""/v1/responses: OpenAI's Responses API, background mode included, on any provider.

A response is a job. `background: true` answers at once (`queued`) and runs whatever
the caller does next; `stream: true` answers the Responses events as the provider sends
them, and `GET /v1/responses/{id}?stream=true&starting_after=N` resumes a stream on any
API process (the events live in the job's Redis Stream). Dropping a background
response's stream never stops it; dropping a foreground one cancels it, as OpenAI does."""

from __future__ import annotations

import functools
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from models.schemas.responses import ResponseCreate
from producer_api.auth import Caller, require_key
from producer_api.border import BorderRoute
from producer_api.context import ApiContext, get_context
from producer_api.errors import API_ERRORS, BODY_ERRORS, RATE_ERRORS, ApiError, error_body
from producer_api.jobs_service import cancel_job, wait_for_end
from producer_api.response_events import ResponseRenderer
from producer_api.responses_service import (
    create_response,
    delete_response,
    load_response,
    present,
)
from producer_api.sse import event_stream
from producer_api.stream_relay import relay
from producer_api.sync_calls import Failure, settle

router = APIRouter(
    route_class=BorderRoute, prefix="/v1/responses", tags=["responses"], responses=API_ERRORS
)

Ctx = Annotated[ApiContext, Depends(get_context)]
Auth = Annotated[Caller, Depends(require_key)]
SSE: dict[int | str, dict[str, Any]] = {
    200: {"content": {"text/event-stream": {}}, "description": "The Response (or stream)."}
}
#: How long a cancel waits for the run to stop before answering.
CANCEL_WAIT_S = 3.0


@router.post("", response_model=None, responses={**BODY_ERRORS, **RATE_ERRORS, **SSE})
async def create(body: ResponseCreate, request: Request, ctx: Ctx, caller: Auth) -> Any:
    record, job = await run_in_threadpool(create_response, ctx, caller, body)
    if body.stream:
        renderer = ResponseRenderer(record.id, record.request, int(record.created_at.timestamp()))
        abandon = None if body.background else functools.partial(cancel_job, ctx, caller, job.id)
        return event_stream(renderer, relay(ctx, caller, job.id), on_abandon=abandon)
    if body.background:
        return present(record, job)
    outcome = await settle(ctx, caller, body.model, job, request)
    if isinstance(outcome, Failure):
        error = outcome.error
        answer = error_body(error["message"], error["type"], error.get("param"), error.get("code"))
        return JSONResponse(answer, status_code=outcome.status, headers=outcome.headers)
    return present(record, outcome)


@router.get("/{response_id}", response_model=None, responses=SSE)
async def retrieve(
    response_id: str,
    ctx: Ctx,
    caller: Auth,
    stream: Annotated[bool, Query(description="Stream the response's events.")] = False,
    starting_after: Annotated[
        int | None, Query(ge=0, description="The last sequence_number already received.")
    ] = None,
) -> Any:
    record, job = await run_in_threadpool(load_response, ctx, caller, response_id)
    if not stream:
        if starting_after is not None:
            raise ApiError(400, "starting_after needs stream=true", param="starting_after")
        return present(record, job)
    created = int(record.created_at.timestamp())
    after = -1 if starting_after is None else starting_after
    renderer = ResponseRenderer(record.id, record.request, created, after=after)
    return event_stream(renderer, relay(ctx, caller, job.id))


@router.post("/{response_id}/cancel", response_model=None)
async def cancel(response_id: str, ctx: Ctx, caller: Auth) -> Any:
    """A background response stops within about a second; what it used is billed."""
    record, job = await run_in_threadpool(load_response, ctx, caller, response_id)
    if not record.background:
        raise ApiError(400, "only a background response can be cancelled", param="response_id")
    await run_in_threadpool(cancel_job, ctx, caller, job.id)
    job = await wait_for_end(ctx, caller, job.id, CANCEL_WAIT_S)
    return present(record, job)


@router.delete("/{response_id}", response_model=None)
async def delete(response_id: str, ctx: Ctx, caller: Auth) -> dict[str, Any]:
    await run_in_threadpool(delete_response, ctx, caller, response_id)
    return {"id": response_id, "object": "response", "deleted": True}


@router.get("/{response_id}/input_items", response_model=None)
async def input_items(
    response_id: str,
    ctx: Ctx,
    caller: Auth,
    after: Annotated[str | None, Query(description="Cursor: an item id.")] = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    order: Annotated[Literal["asc", "desc"], Query()] = "desc",
) -> dict[str, Any]:
    record, _ = await run_in_threadpool(load_response, ctx, caller, response_id)
    items: list[dict[str, Any]] = list(record.request.get("input") or [])
    if order == "desc":
        items.reverse()
    if after is not None:
        ids = [item["id"] for item in items]
        if after not in ids:
            raise ApiError(400, f"{after!r} is not an item of this response", param="after")
        items = items[ids.index(after) + 1 :]
    page = items[:limit]
    return {
        "object": "list",
        "data": page,
        "first_id": page[0]["id"] if page else None,
        "last_id": page[-1]["id"] if page else None,
        "has_more": len(items) > limit,
    }
