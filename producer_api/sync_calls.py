"""Calls answered while the caller waits (OpenAI's chat completions and embeddings,
Anthropic's messages), each run as an interactive job: enqueue, wait for the end or the
first streamed event, and say why there is no answer when there is none. The routes
render the answer in their own protocol's shape."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from fastapi import Request
from starlette.concurrency import run_in_threadpool

from models.accounting import money
from models.contract import PRIORITY_SYNC
from models.tables import Job, JobStatus, utcnow
from producer_api.auth import Caller
from producer_api.context import ApiContext
from producer_api.edge import add_answer_headers
from producer_api.errors import error_body
from producer_api.jobs_service import cancel_job, insert_job, wait_for_end
from producer_api.stream_relay import Finished, Piece, relay, stored_end

__all__ = ["Failure", "Started", "SyncCall", "answer", "settle", "start_stream"]

#: The header naming the job that ran a call.
JOB_ID_HEADER = "x-llmfleet-job-id"
#: Retry-After of a sync call that found no capacity in time.
NO_CAPACITY_RETRY_AFTER_S = 5


@dataclass(frozen=True, slots=True)
class SyncCall:
    kind: str
    model: str
    request: dict[str, Any]
    cache_ttl: int | None = None


@dataclass(frozen=True, slots=True)
class Failure:
    """Why a call has no answer: the HTTP status, an OpenAI-shaped error (message,
    type, param, code) and headers."""

    status: int
    error: dict[str, Any]
    headers: dict[str, str] | None = None


@dataclass(frozen=True, slots=True)
class Started:
    """A streamed call whose first event has come: the rest follow from `events`."""

    job: Job
    first: Piece | Finished
    events: AsyncIterator[Piece | Finished]

    def abandon(self, ctx: ApiContext, caller: Caller) -> None:
        """The caller went away before the end: the job is cancelled."""
        cancel_job(ctx, caller, self.job.id)


async def answer(ctx: ApiContext, caller: Caller, call: SyncCall, http: Request) -> Job | Failure:
    """The job once it succeeded, or why it did not: the provider's error (after the
    fleet's retries and fallbacks), a 429 when no capacity came within
    LLMFLEET_SYNC_CAPACITY_WAIT, or a 504 past the timeout."""
    return await settle(ctx, caller, call.model, await _enqueue(ctx, caller, call), http)


async def settle(
    ctx: ApiContext, caller: Caller, model: str, job: Job, http: Request
) -> Job | Failure:
    """`job` (an interactive job just enqueued) once it succeeded, or why it did not."""
    timeout = _timeout(ctx, http)
    job = await wait_for_end(ctx, caller, job.id, timeout)
    if job.status == JobStatus.SUCCEEDED:
        add_answer_headers(served_headers(job))
        return job
    return await _failure(ctx, caller, model, job, timeout)


def served_headers(job: Job) -> dict[str, str]:
    """What served the call, under LiteLLM's header names (its clients and dashboards
    read them) and the job's id under ours."""
    headers = {JOB_ID_HEADER: job.id}
    if job.deployment_id:
        headers["x-litellm-model-id"] = job.deployment_id
    if job.served_group:
        headers["x-litellm-model-group"] = job.served_group
    if job.cost is not None:
        headers["x-litellm-response-cost"] = money(job.cost)
    return headers


async def start_stream(
    ctx: ApiContext, caller: Caller, call: SyncCall, http: Request
) -> Started | Failure:
    """A streamed call, once its first event has come. Until then it is the same call
    as `answer`: an error, no capacity or no event in time is a Failure."""
    timeout = _timeout(ctx, http)
    job = await _enqueue(ctx, caller, call)
    events = relay(ctx, caller, job.id)
    try:
        first = await asyncio.wait_for(anext(events), timeout)
    except TimeoutError:
        first = None
    if first is None or (isinstance(first, Finished) and first.status != JobStatus.SUCCEEDED):
        await events.aclose()  # type: ignore[attr-defined]
        ended = await stored_end(ctx, caller, job.id) if first is not None else job
        return await _failure(ctx, caller, call.model, ended, timeout)
    add_answer_headers({JOB_ID_HEADER: job.id})
    return Started(job, first, events)


async def _enqueue(ctx: ApiContext, caller: Caller, call: SyncCall) -> Job:
    return await run_in_threadpool(
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


async def _failure(
    ctx: ApiContext, caller: Caller, model: str, job: Job, timeout: float
) -> Failure:
    """Why a job did not succeed (or not yet, at `timeout`: it is cancelled)."""
    if job.status in (JobStatus.QUEUED, JobStatus.RUNNING):
        await run_in_threadpool(cancel_job, ctx, caller, job.id)
        message = f"the call did not finish within {timeout:g}s (job {job.id} was cancelled)"
        return Failure(504, error_body(message, "timeout_error", code="timeout")["error"])
    if job.status == JobStatus.EXPIRED:
        waited = ctx.settings.sync_capacity_wait_seconds
        message = (
            f"no capacity for `{model}` within {waited:g}s "
            f"({job.wait_reason or 'the fleet is busy'})"
        )
        return Failure(
            429,
            error_body(message, "rate_limit_error", code="no_capacity")["error"],
            {"Retry-After": str(NO_CAPACITY_RETRY_AFTER_S)},
        )
    stored = job.error or {"message": f"job ended {job.status}", "type": "api_error"}
    error = error_body(stored["message"], stored["type"], stored.get("param"), stored.get("code"))
    return Failure(int(stored.get("status_code") or 502), error["error"])


def _timeout(ctx: ApiContext, http: Request) -> float:
    """The fleet's sync timeout, or the client's own when it says a shorter one (the
    `openai` and `anthropic` SDKs send theirs as `X-Stainless-Timeout`)."""
    timeout = ctx.settings.sync_timeout_seconds
    with contextlib.suppress(ValueError):
        asked = float(http.headers.get("x-stainless-timeout", "inf"))
        if 0 < asked < timeout:
            timeout = asked
    return timeout
