"""Intake and reads of jobs, shared by /v1/jobs and /v1/chat/completions."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
from collections.abc import Iterator
from typing import Any

import redis
from opentelemetry import trace
from sqlalchemy import select, update
from starlette.concurrency import run_in_threadpool

from models import tracing
from models.contract import CHAT_COMPLETIONS
from models.ids import new_id
from models.redis_keys import JOB_CANCEL_TTL_S, job_cancel
from models.schemas.jobs import JobCreate
from models.tables import TERMINAL_STATUSES, Job, JobAttempt, JobStatus, utcnow
from models.webhooks import record_job_event
from models.wire import parse_duration
from producer_api.access import admit_job, check_model, release_job
from producer_api.auth import Caller
from producer_api.context import ApiContext
from producer_api.errors import ApiError
from producer_api.metrics import job_submitted

__all__ = [
    "cancel_job",
    "create_job",
    "insert_job",
    "load_attempts",
    "load_job",
    "require_webhook_secret",
    "wait_for_end",
]

log = logging.getLogger(__name__)


def require_webhook_secret(ctx: ApiContext, webhook_url: object) -> None:
    """A webhook URL is refused, naming the setting, when webhooks cannot be signed:
    it would be accepted and then never sent."""
    if webhook_url and ctx.settings.webhook_secret is None:
        raise ApiError(
            400,
            "webhook_url: this fleet sends no webhooks, it has no signing secret; its "
            "operator sets LLMFLEET_WEBHOOK_SECRET (`whsec_` + base64 of a random key) on "
            "the API and the workers",
            param="webhook_url",
            code="webhooks_not_configured",
        )


def create_job(ctx: ApiContext, caller: Caller, body: JobCreate) -> Job:
    require_webhook_secret(ctx, body.webhook_url)
    now = utcnow()
    return insert_job(
        ctx,
        caller,
        kind=CHAT_COMPLETIONS,
        model=body.model,
        request=body.provider_body(),
        priority=body.priority,
        deadline=body.effective_deadline(now),
        metadata=body.metadata,
        webhook_url=str(body.webhook_url) if body.webhook_url else None,
        cache_ttl=body.cache_ttl(),
    )


def insert_job(
    ctx: ApiContext,
    caller: Caller,
    *,
    kind: str,
    model: str,
    request: dict[str, Any],
    priority: int,
    deadline: dt.datetime | None = None,
    metadata: dict[str, Any] | None = None,
    webhook_url: str | None = None,
    cache_ttl: int | None = None,
    job_id: str | None = None,
    companions: tuple[Any, ...] = (),
) -> Job:
    """Check the key (`access`), persist (with `companions`, rows of the same
    transaction), then publish (both in a group with other requests' jobs:
    producer_api.intake). The row is the truth: if publishing fails the job stays
    queued with no `published_at`, and the sweeper publishes it."""
    check_model(ctx, caller, model)
    now = utcnow()
    job_id = job_id or new_id("job")
    with intake_span(job_id, kind, model) as span:
        deadline = deadline or now + parse_duration(ctx.settings.default_completion_window)
        admission = admit_job(ctx, caller, job_id, model, request, priority, deadline, cache_ttl)
        job = Job(
            id=job_id,
            status=JobStatus.QUEUED,
            kind=kind,
            model=model,
            request=request,
            attempts=0,
            calls=0,
            priority=admission.priority,
            deadline=deadline,
            created_at=now,
            queued_at=now,
            cancel_requested=False,
            owner_key=caller.owner,
            meta=metadata,
            webhook_url=webhook_url,
            estimated_tokens=admission.estimated_tokens,
            cache_ttl=admission.cache_ttl,
            cached=False,
            trace_context=None if span is None else tracing.traceparent(span),
        )
        try:
            ctx.intake.store(job, companions).result()  # with other requests' (producer_api.intake)
        except Exception:
            release_job(ctx, caller.owner, job_id, admission.estimated_tokens)
            raise
        job_submitted(job.model, job.priority)
        return job


@contextlib.contextmanager
def intake_span(job_id: str, kind: str, model: str) -> Iterator[trace.Span | None]:
    """The job's first span (models.tracing), under the request's, when traces are
    exported. A refusal marks it failed by the exception's class only: messages stay
    out of traces as they do of logs."""
    if not tracing.enabled():
        yield None
        return
    attributes = {
        "llmfleet.job.id": job_id,
        "llmfleet.job.kind": kind,
        "gen_ai.request.model": model,
    }
    with tracing.tracer().start_as_current_span(
        "llmfleet.intake",
        attributes=attributes,
        record_exception=False,
        set_status_on_exception=False,
    ) as span:
        try:
            yield span
        except Exception as exc:
            span.set_status(trace.StatusCode.ERROR, type(exc).__name__)
            raise


def load_job(ctx: ApiContext, caller: Caller, job_id: str) -> Job:
    with ctx.sessions() as session:
        stmt = select(Job).where(Job.id == job_id)
        if not caller.is_admin:
            stmt = stmt.where(Job.owner_key == caller.owner)
        job = session.scalars(stmt).first()
    if job is None:
        raise ApiError(404, f"No job with id {job_id!r}", param="job_id", code="not_found")
    return job


def load_attempts(ctx: ApiContext, job_id: str) -> list[JobAttempt]:
    with ctx.sessions() as session:
        stmt = select(JobAttempt).where(JobAttempt.job_id == job_id).order_by(JobAttempt.id)
        return list(session.scalars(stmt))


async def wait_for_end(ctx: ApiContext, caller: Caller, job_id: str, timeout: float) -> Job:
    """The job once it has ended, or as it is when `timeout` seconds have passed."""
    loop = asyncio.get_running_loop()
    until = loop.time() + timeout
    async with ctx.waiters.watch(job_id) as ended:
        while True:
            ended.clear()
            job = await run_in_threadpool(load_job, ctx, caller, job_id)
            remaining = until - loop.time()
            if job.status in TERMINAL_STATUSES or remaining <= 0:
                return job
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(ended.wait(), remaining)


def cancel_job(ctx: ApiContext, caller: Caller, job_id: str) -> Job:
    """A queued job ends `cancelled` at once and never runs; a running one is flagged and
    its worker stops at its next check (before a retry, or when the call returns; a
    streamed call within a second, closing its provider's stream)."""
    load_job(ctx, caller, job_id)  # 404 for a job the caller cannot see
    now = utcnow()
    with ctx.sessions.begin() as session:
        cancelled = session.execute(
            update(Job)
            .where(Job.id == job_id, Job.status == JobStatus.QUEUED)
            .values(
                status=JobStatus.CANCELLED,
                cancel_requested=True,
                finished_at=now,
                error={
                    "message": "the job was cancelled before it ran",
                    "type": "cancelled",
                    "param": None,
                    "code": "job_cancelled",
                },
            )
            .returning(Job.webhook_url, Job.owner_key, Job.estimated_tokens)
        ).first()
        webhook = None
        if cancelled is not None:
            webhook = record_job_event(session, job_id, cancelled.webhook_url, JobStatus.CANCELLED)
        running = session.execute(
            update(Job)
            .where(Job.id == job_id, Job.status == JobStatus.RUNNING)
            .values(cancel_requested=True)
            .returning(Job.id)
        ).first()
    if running:  # a streamed call looks here within a second (workers.streaming)
        with contextlib.suppress(redis.RedisError):
            ctx.redis_sync.set(job_cancel(job_id), 1, ex=JOB_CANCEL_TTL_S)
    if cancelled is not None:
        release_job(ctx, cancelled.owner_key, job_id, cancelled.estimated_tokens)
    if webhook is not None:
        ctx.publisher.publish_webhook(webhook)
    return load_job(ctx, caller, job_id)
