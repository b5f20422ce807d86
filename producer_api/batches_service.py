"""Creating, reading and cancelling batches (both wire shapes use these).

A batch is validated whole before anything is created; a good one becomes one job
row per line in the same transaction as the batch row, with no message published:
the workers' batch dispatcher feeds them to the broker a little at a time.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from sqlalchemy import insert, select, update

from models.batch_lines import BatchLine, ValidationReport, parse_lines, validate_file
from models.batch_stats import status_counts, usage_of
from models.contract import CHAT_COMPLETIONS, EMBEDDINGS, PRIORITY_BATCH
from models.ids import new_id
from models.schemas.batches import (
    RequestCounts,
    counts_from_statuses,
)
from models.tables import Batch, Job, JobStatus, locked_in_id_order, utcnow
from models.webhooks import record_event
from models.wire import parse_duration
from producer_api.access import check_batch_allowance, model_checker
from producer_api.auth import Caller
from producer_api.context import ApiContext
from producer_api.errors import ApiError
from producer_api.metrics import job_submitted

__all__ = [
    "BatchView",
    "NewBatch",
    "cancel_batch",
    "create_batch",
    "load_batch",
    "view_batch",
]

INSERT_CHUNK = 1000
ENDED = frozenset({"failed", "completed", "expired", "cancelled"})
KIND_FOR_ENDPOINT = {"/v1/chat/completions": CHAT_COMPLETIONS, "/v1/embeddings": EMBEDDINGS}


@dataclass(frozen=True)
class NewBatch:
    api: str
    endpoint: str
    completion_window: str
    input_file_id: str | None
    metadata: dict[str, Any] | None
    webhook_url: str | None


@dataclass(frozen=True)
class BatchView:
    batch: Batch
    counts: RequestCounts
    usage: dict[str, Any] | None


def create_batch(
    ctx: ApiContext,
    caller: Caller,
    new: NewBatch,
    lines: Callable[[], Iterable[bytes]],
    size: int,
) -> tuple[Batch, ValidationReport]:
    """`lines` gives a fresh iterator over the input's lines each call: it is read
    twice, once to validate the whole, once to create the jobs. A line for a model the
    key may not use is a bad line; a good batch must fit the key's batch allowance."""
    allowed = model_checker(ctx, caller)
    report = validate_file(lines(), size, new.endpoint, ctx.config.has_group, allowed)
    now = utcnow()
    batch = Batch(
        id=new_id("msgbatch" if new.api == "anthropic" else "batch"),
        owner_key=caller.owner,
        api=new.api,
        endpoint=new.endpoint,
        input_file_id=new.input_file_id,
        completion_window=new.completion_window,
        status="in_progress" if report.ok else "failed",
        errors=None if report.ok else report.error_dicts(),
        total=report.lines if report.ok else 0,
        model=next(iter(report.models)) if len(report.models) == 1 else None,
        meta=new.metadata,
        webhook_url=new.webhook_url,
        priority=PRIORITY_BATCH,
        created_at=now,
        in_progress_at=now if report.ok else None,
        failed_at=None if report.ok else now,
        expires_at=now + parse_duration(new.completion_window),
    )
    delivery = None
    per_model: Counter[str] = Counter()
    with ctx.sessions.begin() as session:
        if report.ok:
            check_batch_allowance(session, caller, report.lines)
        session.add(batch)
        session.flush()
        if report.ok:
            for chunk in _chunks(_job_rows(batch, lines(), ctx, caller), INSERT_CHUNK):
                session.execute(insert(Job), chunk)
                per_model.update(row["model"] for row in chunk)
        elif new.webhook_url:
            delivery = record_event(session, new.webhook_url, "batch.failed", {"id": batch.id})
    for model, count in per_model.items():
        job_submitted(model, batch.priority, count)
    if delivery is not None:
        ctx.publisher.publish_webhook(delivery)
    if report.ok:
        ctx.publisher.publish_batch_tick()
    return batch, report


def _job_rows(
    batch: Batch, lines: Iterable[bytes], ctx: ApiContext, caller: Caller
) -> Iterator[dict[str, Any]]:
    kind = KIND_FOR_ENDPOINT[batch.endpoint]
    allowed = model_checker(ctx, caller)
    key_ttl = caller.grant.cache_ttl if caller.grant else None
    for parsed in parse_lines(lines, batch.endpoint, ctx.config.has_group, allowed):
        assert isinstance(parsed, BatchLine)  # the file was validated whole
        ttl = parsed.cache_ttl if parsed.cache_ttl is not None else key_ttl
        yield {
            "id": new_id("job"),
            "status": JobStatus.QUEUED,
            "kind": kind,
            "model": parsed.model,
            "request": parsed.body,
            "attempts": 0,
            "calls": 0,
            "priority": batch.priority,
            "deadline": batch.expires_at,
            "created_at": batch.created_at,
            "queued_at": batch.created_at,
            "cancel_requested": False,
            "owner_key": batch.owner_key,
            "batch_id": batch.id,
            "custom_id": parsed.custom_id,
            "cache_ttl": ttl or None,
            "cached": False,
        }


def _chunks(rows: Iterator[dict[str, Any]], size: int) -> Iterator[list[dict[str, Any]]]:
    chunk: list[dict[str, Any]] = []
    for row in rows:
        chunk.append(row)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def load_batch(ctx: ApiContext, caller: Caller, batch_id: str, api: str = "openai") -> Batch:
    with ctx.sessions() as session:
        stmt = select(Batch).where(Batch.id == batch_id, Batch.api == api)
        if not caller.is_admin:
            stmt = stmt.where(Batch.owner_key == caller.owner)
        batch = session.scalars(stmt).first()
    if batch is None:
        raise ApiError(404, f"No batch with id {batch_id!r}", param="batch_id", code="not_found")
    return batch


def view_batch(ctx: ApiContext, batch: Batch) -> BatchView:
    """Live counts while it runs; the usage stored at the end once it has ended."""
    with ctx.sessions() as session:
        counts = counts_from_statuses(batch.total, status_counts(session, batch.id))
        usage = batch.usage
        if usage is None and batch.status != "failed":
            usage = usage_of(session, batch.id)
    return BatchView(batch, counts, usage)


def cancel_batch(ctx: ApiContext, caller: Caller, batch_id: str, api: str = "openai") -> Batch:
    """Lines not started never run; running ones stop when they can; the dispatcher
    ends the batch `cancelled` once nothing runs, with the partial output kept."""
    batch = load_batch(ctx, caller, batch_id, api)
    if batch.status in ENDED:
        raise ApiError(409, f"the batch has already ended ({batch.status})", code="batch_ended")
    now = utcnow()
    with ctx.sessions.begin() as session:
        session.execute(
            update(Batch)
            .where(Batch.id == batch.id, Batch.status == "in_progress")
            .values(status="cancelling", cancelling_at=now)
        )
        session.execute(
            update(Job)
            .where(
                Job.id.in_(
                    locked_in_id_order(Job.batch_id == batch.id, Job.status == JobStatus.QUEUED)
                ),
                Job.status == JobStatus.QUEUED,
            )
            .values(
                status=JobStatus.CANCELLED,
                cancel_requested=True,
                finished_at=now,
                error={
                    "message": "the batch was cancelled before this request ran",
                    "type": "cancelled",
                    "param": None,
                    "code": "batch_cancelled",
                },
            )
        )
        session.execute(
            update(Job)
            .where(
                Job.id.in_(
                    locked_in_id_order(Job.batch_id == batch.id, Job.status == JobStatus.RUNNING)
                ),
                Job.status == JobStatus.RUNNING,
            )
            .values(cancel_requested=True)
        )
    ctx.publisher.publish_batch_tick()
    return load_batch(ctx, caller, batch_id, api)
