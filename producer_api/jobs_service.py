"""Intake and reads of jobs, shared by /v1/jobs and /v1/chat/completions."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
from typing import Any

from sqlalchemy import select, update
from starlette.concurrency import run_in_threadpool

from models.contract import CHAT_COMPLETIONS
from models.ids import new_id
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
    "wait_for_end",
]

log = logging.getLogger(__name__)


def create_job(ctx: ApiContext, caller: Caller, body: JobCreate) -> Job:
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
) -> Job:
    """Check the key (`access`), persist, then publish (both in a group with other
    requests' jobs: producer_api.intake). The row is the truth: if publishing fails the
    job stays queued with no `published_at`, and the sweeper publishes it."""
    check_model(ctx, caller, model)
    now = utcnow()
    job_id = new_id("job")
    deadline = deadline or now + parse_duration(ctx.settings.default_completion_window)
    admission = admit_job(ctx, caller, job_id, request, priority, deadline, cache_ttl)
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
    )
    try:
        ctx.intake.store(job).result()  # with the rows of other requests (producer_api.intake)
    except Exception:
        release_job(ctx, caller.owner, job_id, admission.estimated_tokens)
        raise
    job_submitted(job.model, job.priority)
    return job


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
    its worker stops at its next check (before a retry, or when the call returns)."""
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
        session.execute(
            update(Job)
            .where(Job.id == job_id, Job.status == JobStatus.RUNNING)
            .values(cancel_requested=True)
        )
    if cancelled is not None:
        release_job(ctx, cancelled.owner_key, job_id, cancelled.estimated_tokens)
    if webhook is not None:
        ctx.publisher.publish_webhook(webhook)
    return load_job(ctx, caller, job_id)
