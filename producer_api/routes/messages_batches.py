"""/v1/messages/batches: Anthropic's Message Batches API on the same fleet. Requests
are translated to the job format (`models.anthropic_shape`) and results back; any
provider the fleet routes to can serve them."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import StreamingResponse
from sqlalchemy import select
from starlette.concurrency import run_in_threadpool

from models.anthropic_shape import (
    AnthropicShapeError,
    anthropic_to_openai_request,
    openai_error_to_anthropic,
    openai_to_anthropic_message,
)
from models.batch_lines import validate_file
from models.batch_stats import status_counts
from models.schemas.message_batches import MessageBatchCreate
from models.tables import Batch, Job, JobStatus
from producer_api.access import model_checker
from producer_api.auth import Caller, require_key
from producer_api.batches_service import NewBatch, cancel_batch, create_batch, load_batch
from producer_api.border import BorderRoute
from producer_api.context import ApiContext, get_context
from producer_api.errors import (
    API_ERRORS,
    BODY_ERRORS,
    CONFLICT_ERRORS,
    RATE_ERRORS,
    ApiError,
)

router = APIRouter(
    route_class=BorderRoute, prefix="/v1/messages/batches", tags=["anthropic"], responses=API_ERRORS
)

Ctx = Annotated[ApiContext, Depends(get_context)]
Auth = Annotated[Caller, Depends(require_key)]
ENDPOINT = "/v1/chat/completions"
PROCESSING = {"in_progress": "in_progress", "finalizing": "in_progress", "cancelling": "canceling"}


def _rfc3339(value: dt.datetime | None) -> str | None:
    return value.isoformat().replace("+00:00", "Z") if value is not None else None


def present(ctx: ApiContext, request: Request, batch: Batch) -> dict[str, Any]:
    with ctx.sessions() as session:
        counts = status_counts(session, batch.id)
    status = PROCESSING.get(batch.status, "ended")
    if status == "in_progress" and batch.cancelling_at is not None:
        status = "canceling"  # finalizing a cancelled batch
    ended_at = batch.completed_at or batch.expired_at or batch.cancelled_at or batch.failed_at
    return {
        "id": batch.id,
        "type": "message_batch",
        "processing_status": status,
        "request_counts": {
            "processing": counts.get(JobStatus.QUEUED, 0) + counts.get(JobStatus.RUNNING, 0),
            "succeeded": counts.get(JobStatus.SUCCEEDED, 0),
            "errored": counts.get(JobStatus.FAILED, 0),
            "canceled": counts.get(JobStatus.CANCELLED, 0),
            "expired": counts.get(JobStatus.EXPIRED, 0),
        },
        "ended_at": _rfc3339(ended_at),
        "created_at": _rfc3339(batch.created_at),
        "expires_at": _rfc3339(batch.expires_at),
        "archived_at": None,
        "cancel_initiated_at": _rfc3339(batch.cancelling_at),
        "results_url": str(request.url_for("message_batch_results", batch_id=batch.id))
        if status == "ended"
        else None,
    }


def _lines(body: MessageBatchCreate) -> list[bytes]:
    """The requests as batch-file lines in the job format; any request the OpenAI shape
    cannot carry is refused naming its place."""
    out = []
    for i, item in enumerate(body.requests):
        try:
            converted = anthropic_to_openai_request(item.params)
        except AnthropicShapeError as exc:
            raise ApiError(
                400, f"requests[{i}].{exc}", param=f"requests[{i}].{exc.param}"
            ) from None
        line = {"custom_id": item.custom_id, "method": "POST", "url": ENDPOINT, "body": converted}
        out.append(json.dumps(line).encode())
    return out


@router.post("", responses={**BODY_ERRORS, **RATE_ERRORS})
def create(body: MessageBatchCreate, request: Request, ctx: Ctx, caller: Auth) -> dict[str, Any]:
    lines = _lines(body)
    report = validate_file(lines, 0, ENDPOINT, ctx.config.has_group, model_checker(ctx, caller))
    if not report.ok:
        problems = "; ".join(
            f"requests[{(e['line'] or 1) - 1}]: {e['message']}" for e in report.error_dicts()
        )
        raise ApiError(400, f"invalid requests: {problems}", code="invalid_request")
    new = NewBatch("anthropic", ENDPOINT, "24h", None, None, None)
    batch, _ = create_batch(ctx, caller, new, lambda: lines, 0)
    return present(ctx, request, batch)


@router.get("")
def list_batches(
    request: Request,
    ctx: Ctx,
    caller: Auth,
    after_id: str | None = None,
    before_id: str | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 20,
) -> dict[str, Any]:
    """Newest first, as Anthropic lists them."""
    stmt = select(Batch).where(Batch.api == "anthropic").limit(limit + 1)
    if not caller.is_admin:
        stmt = stmt.where(Batch.owner_key == caller.owner)
    if after_id:
        stmt = stmt.where(Batch.id < after_id).order_by(Batch.id.desc())
    elif before_id:
        stmt = stmt.where(Batch.id > before_id).order_by(Batch.id.asc())
    else:
        stmt = stmt.order_by(Batch.id.desc())
    with ctx.sessions() as session:
        rows = list(session.scalars(stmt))
    page = sorted(rows[:limit], key=lambda b: b.id, reverse=True)
    data = [present(ctx, request, b) for b in page]
    return {
        "data": data,
        "has_more": len(rows) > limit,
        "first_id": data[0]["id"] if data else None,
        "last_id": data[-1]["id"] if data else None,
    }


@router.get("/{batch_id}")
def retrieve(batch_id: str, request: Request, ctx: Ctx, caller: Auth) -> dict[str, Any]:
    return present(ctx, request, load_batch(ctx, caller, batch_id, "anthropic"))


@router.post("/{batch_id}/cancel", responses=CONFLICT_ERRORS)
async def cancel(batch_id: str, request: Request, ctx: Ctx, caller: Auth) -> dict[str, Any]:
    batch = await run_in_threadpool(cancel_batch, ctx, caller, batch_id, "anthropic")
    return await run_in_threadpool(present, ctx, request, batch)


@router.get("/{batch_id}/results", name="message_batch_results")
def results(batch_id: str, ctx: Ctx, caller: Auth) -> StreamingResponse:
    batch = load_batch(ctx, caller, batch_id, "anthropic")
    if PROCESSING.get(batch.status):
        raise ApiError(409, "results are available once the batch has ended", code="not_ended")
    return StreamingResponse(_result_lines(ctx, batch.id), media_type="application/x-jsonl")


def _result_lines(ctx: ApiContext, batch_id: str) -> Iterator[bytes]:
    with ctx.sessions() as session:
        stmt = (
            select(Job)
            .where(Job.batch_id == batch_id)
            .order_by(Job.id)
            .execution_options(yield_per=500)
        )
        for job in session.scalars(stmt):
            line = {"custom_id": job.custom_id, "result": _result(job)}
            yield json.dumps(line).encode() + b"\n"


def _result(job: Job) -> dict[str, Any]:
    if job.status == JobStatus.SUCCEEDED and job.response is not None:
        try:
            message = openai_to_anthropic_message(job.response, job.model)
        except AnthropicShapeError as exc:
            error = {
                "type": "api_error",
                "message": f"the reply cannot be shown as a Message: {exc}",
            }
            return {"type": "errored", "error": {"type": "error", "error": error}}
        return {"type": "succeeded", "message": message}
    if job.status == JobStatus.CANCELLED:
        return {"type": "canceled"}
    if job.status == JobStatus.EXPIRED:
        return {"type": "expired"}
    return {"type": "errored", "error": openai_error_to_anthropic(job.error or {})}
