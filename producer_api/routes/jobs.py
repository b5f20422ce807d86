"""/v1/jobs: enqueue, read (with long-poll), list, cancel."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from sqlalchemy import select
from starlette.concurrency import run_in_threadpool

from models.redis_keys import JOB_EVENTS_CHANNEL
from models.schemas.jobs import JobCreate, JobPublic, JobsPublic
from models.tables import Job, JobStatus
from producer_api.auth import Caller, require_key
from producer_api.border import BorderRoute
from producer_api.chat_chunks import ChunkRenderer
from producer_api.context import ApiContext, get_context
from producer_api.errors import API_ERRORS, BODY_ERRORS, RATE_ERRORS
from producer_api.jobs_service import (
    cancel_job,
    create_job,
    load_attempts,
    load_job,
    wait_for_end,
)
from producer_api.sse import event_stream
from producer_api.stream_relay import check_event_id, relay

router = APIRouter(route_class=BorderRoute, prefix="/v1/jobs", tags=["jobs"], responses=API_ERRORS)

Ctx = Annotated[ApiContext, Depends(get_context)]
Auth = Annotated[Caller, Depends(require_key)]


@router.post(
    "", status_code=202, response_model=JobPublic, responses={**BODY_ERRORS, **RATE_ERRORS}
)
def post_job(body: JobCreate, ctx: Ctx, caller: Auth) -> JobPublic:
    """Enqueue one chat completion; answers at once with the queued job."""
    return JobPublic.from_row(create_job(ctx, caller, body))


@router.get(
    "/{job_id}",
    response_model=JobPublic,
    responses={
        200: {"content": {"text/event-stream": {}}, "description": "The job, or its stream."}
    },
)
async def get_job(
    job_id: str,
    request: Request,
    ctx: Ctx,
    caller: Auth,
    wait: Annotated[
        float, Query(ge=0, description="Seconds to wait for the job to end (long-poll).")
    ] = 0,
    stream: Annotated[
        bool,
        Query(
            description="Follow the job as `chat.completion.chunk` events, as the provider "
            "sends them; `Last-Event-ID` continues after an event already seen."
        ),
    ] = False,
) -> Any:
    if stream:
        after = check_event_id(request.headers.get("last-event-id"))
        job = await run_in_threadpool(load_job, ctx, caller, job_id)  # 404 if not the caller's
        renderer = ChunkRenderer(job_id, job.model, include_usage=True, resumed=after != "0-0")
        return event_stream(renderer, relay(ctx, caller, job_id, after))
    timeout = min(wait, ctx.settings.max_wait_seconds)
    job = await wait_for_end(ctx, caller, job_id, timeout)
    attempts = await run_in_threadpool(load_attempts, ctx, job_id)
    return JobPublic.from_row(job, attempts)


@router.get("", response_model=JobsPublic)
def list_jobs(
    ctx: Ctx,
    caller: Auth,
    status: Annotated[list[JobStatus] | None, Query()] = None,
    after: Annotated[str | None, Query(description="Cursor: the last id of a page.")] = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
) -> JobsPublic:
    """Newest first; pass the page's `last_id` as `after` for the next page."""
    stmt = select(Job).order_by(Job.id.desc()).limit(limit + 1)
    if not caller.is_admin:
        stmt = stmt.where(Job.owner_key == caller.owner)
    if status:
        stmt = stmt.where(Job.status.in_([s.value for s in status]))
    if after:
        stmt = stmt.where(Job.id < after)
    with ctx.sessions() as session:
        rows = list(session.scalars(stmt))
    page = [JobPublic.from_row(j) for j in rows[:limit]]
    return JobsPublic(
        data=page,
        first_id=page[0].id if page else None,
        last_id=page[-1].id if page else None,
        has_more=len(rows) > limit,
    )


@router.delete("/{job_id}", response_model=JobPublic)
async def delete_job(job_id: str, ctx: Ctx, caller: Auth) -> JobPublic:
    job = await run_in_threadpool(cancel_job, ctx, caller, job_id)
    if job.status == JobStatus.CANCELLED:
        await ctx.redis.publish(JOB_EVENTS_CHANNEL, job_id)
    return JobPublic.from_row(job)


__all__ = ["load_job", "router"]
