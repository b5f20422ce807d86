"""/v1/batches: OpenAI's Batch API, plus live partial output and a dry run."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from decimal import Decimal
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query
from fastapi.responses import StreamingResponse
from sqlalchemy import select
from starlette.concurrency import run_in_threadpool

from models.batch_lines import validate_file
from models.schemas.batches import BatchCreate, BatchesPublic, BatchPublic, output_line
from models.tables import TERMINAL_STATUSES, Batch, Job, JobStatus
from producer_api.access import model_checker
from producer_api.auth import Caller, require_key
from producer_api.batches_service import (
    NewBatch,
    cancel_batch,
    create_batch,
    load_batch,
    view_batch,
)
from producer_api.border import BorderRoute
from producer_api.context import ApiContext, get_context
from producer_api.errors import API_ERRORS, BODY_ERRORS, CONFLICT_ERRORS, RATE_ERRORS, ApiError
from producer_api.jobs_service import require_webhook_secret
from producer_api.routes.files import load_file

router = APIRouter(
    route_class=BorderRoute, prefix="/v1/batches", tags=["batches"], responses=API_ERRORS
)

Ctx = Annotated[ApiContext, Depends(get_context)]
Auth = Annotated[Caller, Depends(require_key)]


def present(ctx: ApiContext, batch: Batch) -> BatchPublic:
    view = view_batch(ctx, batch)
    return BatchPublic.from_row(view.batch, view.counts, view.usage)


@router.post("", response_model=None, responses={**BODY_ERRORS, **RATE_ERRORS})
def post_batch(
    body: BatchCreate,
    ctx: Ctx,
    caller: Auth,
    dry_run: Annotated[
        bool, Query(description="Validate and estimate the cost; create nothing.")
    ] = False,
) -> Any:
    """Validates every line first: a bad file answers a `failed` batch listing every
    bad line; a good one is `in_progress` at once."""
    require_webhook_secret(ctx, body.webhook_url)
    file = load_file(ctx, caller, body.input_file_id)
    if file.purpose != "batch":
        raise ApiError(
            400, "input_file_id must be a file with purpose 'batch'", param="input_file_id"
        )

    def lines() -> Iterator[bytes]:
        with ctx.storage.reader(file.storage_key) as handle:
            yield from handle

    new = NewBatch(
        "openai", body.endpoint, body.completion_window, file.id, body.metadata, body.webhook_url
    )
    if dry_run:
        return dry_run_report(ctx, caller, new, lines(), file.bytes)
    batch, _ = create_batch(ctx, caller, new, lines, file.bytes)
    return present(ctx, batch)


def dry_run_report(
    ctx: ApiContext, caller: Caller, new: NewBatch, lines: Iterable[bytes], size: int
) -> dict[str, Any]:
    allowed = model_checker(ctx, caller)
    report = validate_file(lines, size, new.endpoint, ctx.config.has_group, allowed)
    prices = [
        d.litellm_params.input_cost_per_token
        for model in report.models
        for d in ctx.config.deployments_for(model)
        if d.litellm_params.input_cost_per_token is not None
    ]
    cost = (
        str(min(prices) * Decimal(report.estimated_prompt_tokens))
        if prices and len(report.models) == 1
        else None
    )
    return {
        "object": "batch.dry_run",
        "valid": report.ok,
        "request_count": report.lines,
        "errors": {"object": "list", "data": report.error_dicts()} if not report.ok else None,
        "models": sorted(report.models),
        "estimated_input_tokens": report.estimated_prompt_tokens,
        "estimated_input_cost": cost,
    }


@router.get("", response_model=BatchesPublic)
def list_batches(
    ctx: Ctx,
    caller: Auth,
    after: str | None = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
) -> BatchesPublic:
    """Newest first; the SDK pages with the last item's id as `after`."""
    stmt = select(Batch).where(Batch.api == "openai").order_by(Batch.id.desc()).limit(limit + 1)
    if not caller.is_admin:
        stmt = stmt.where(Batch.owner_key == caller.owner)
    if after:
        stmt = stmt.where(Batch.id < after)
    with ctx.sessions() as session:
        rows = list(session.scalars(stmt))
    page = [present(ctx, b) for b in rows[:limit]]
    return BatchesPublic(
        data=page,
        first_id=page[0].id if page else None,
        last_id=page[-1].id if page else None,
        has_more=len(rows) > limit,
    )


@router.get("/{batch_id}", response_model=BatchPublic)
def get_batch(batch_id: str, ctx: Ctx, caller: Auth) -> BatchPublic:
    return present(ctx, load_batch(ctx, caller, batch_id))


@router.post("/{batch_id}/cancel", response_model=BatchPublic, responses=CONFLICT_ERRORS)
async def post_cancel(batch_id: str, ctx: Ctx, caller: Auth) -> BatchPublic:
    batch = await run_in_threadpool(cancel_batch, ctx, caller, batch_id)
    return await run_in_threadpool(present, ctx, batch)


@router.get("/{batch_id}/output")
def batch_output(
    batch_id: str,
    ctx: Ctx,
    caller: Auth,
    partial: bool = False,
    which: Literal["output", "errors"] = "output",
) -> StreamingResponse:
    """The finished lines so far (`partial=true`), at any time; without `partial`, only
    once the batch has ended. Same lines as the output (or error) file."""
    batch = load_batch(ctx, caller, batch_id)
    if not partial and batch.status not in ("completed", "expired", "cancelled", "failed"):
        raise ApiError(409, "the batch is still running; pass partial=true", param="partial")
    return StreamingResponse(stream_lines(ctx, batch.id, which), media_type="application/jsonl")


def stream_lines(ctx: ApiContext, batch_id: str, which: str) -> Iterator[bytes]:
    terminal = [s.value for s in TERMINAL_STATUSES]
    wanted = (
        [JobStatus.SUCCEEDED.value]
        if which == "output"
        else [s for s in terminal if s != "succeeded"]
    )
    with ctx.sessions() as session:
        stmt = (
            select(Job)
            .where(Job.batch_id == batch_id, Job.status.in_(wanted))
            .order_by(Job.id)
            .execution_options(yield_per=500)
        )
        for job in session.scalars(stmt):
            _, line = output_line(job)
            yield json.dumps(line).encode() + b"\n"
