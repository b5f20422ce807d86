"""What a key may do, checked at intake before anything is persisted.

For an interactive job, in this order: model access (403 before the 404 for an unknown
model, so a restricted key never learns which other groups exist), then — for a
virtual key — its priority ceiling, then its rate limits (429 naming the limit, with
Retry-After). Budgets, from the accounting issue, belong between the two. A batch is
checked line by line for model access (each bad line is reported) and as a whole
against the key's batch allowance; its lines never count against rpm or tpm.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from models.batch_lines import estimate_request_tokens
from models.budgets import budgets_for, period_bounds, spent_of
from models.key_limits import Refusal, refusal_headers
from models.tables import Job, JobStatus, utcnow
from producer_api.auth import Caller
from producer_api.context import ApiContext
from producer_api.edge import add_answer_headers
from producer_api.errors import ApiError

__all__ = [
    "Admission",
    "admit_job",
    "check_batch_allowance",
    "check_model",
    "model_checker",
    "release_job",
]

#: When a batch would exceed the allowance, retry once some lines have finished.
BATCH_RETRY_AFTER_S = 60


@dataclass(frozen=True, slots=True)
class Admission:
    """What intake stores on the admitted job."""

    priority: int
    estimated_tokens: int | None
    cache_ttl: int | None


def check_model(ctx: ApiContext, caller: Caller, model: str) -> None:
    """403 when the key may not use the model, else 404 when the fleet does not serve it."""
    if not caller.may_use(model, ctx.config.router_settings.model_group_alias.get(model)):
        raise ApiError(
            403,
            f"this API key may not use the model `{model}`; ask an admin to add it to the "
            "key's models",
            param="model",
            code="model_not_allowed",
        )
    if not ctx.config.has_group(model):
        raise ApiError(
            404,
            f"The model `{model}` does not exist or is not served by this fleet",
            param="model",
            code="model_not_found",
        )


def model_checker(ctx: ApiContext, caller: Caller) -> Callable[[str], bool] | None:
    """The caller's model access for batch validation; None when every model is allowed."""
    if caller.grant is None or caller.grant.models is None:
        return None
    aliases = ctx.config.router_settings.model_group_alias
    return lambda model: caller.may_use(model, aliases.get(model))


def admit_job(
    ctx: ApiContext,
    caller: Caller,
    job_id: str,
    model: str,
    request: dict[str, Any],
    priority: int,
    deadline: dt.datetime,
    cache_ttl: int | None,
) -> Admission:
    """Count the job against the key's limits (the master key has none). `cache_ttl` is
    the request's own; the key's applies when the request gives none; 0 turns it off."""
    grant = caller.grant
    if grant is None:
        return Admission(priority, None, cache_ttl or None)
    if grant.max_priority is not None:
        priority = min(priority, grant.max_priority)
    estimate = estimate_request_tokens(request)
    checked = ctx.limiter.check(grant, job_id, estimate, deadline)
    if isinstance(checked, Refusal):
        raise _too_many(checked, estimate)
    try:
        reserve_budget(ctx, caller, job_id, estimated_cost(ctx, model, estimate), deadline)
    except ApiError:
        ctx.limiter.settle(caller.owner, job_id, -estimate)  # it will not run
        raise
    add_answer_headers(checked.headers())
    ttl = cache_ttl if cache_ttl is not None else grant.cache_ttl
    return Admission(priority, estimate, ttl or None)


def estimated_cost(ctx: ApiContext, model: str, tokens: int) -> Decimal:
    """What a job may cost at most, as far as the config's prices tell: its estimated
    tokens at the group's dearest token price (0 when the group has no price set)."""
    prices = [
        price
        for dep in ctx.config.deployments_for(model)
        for price in (
            dep.litellm_params.input_cost_per_token,
            dep.litellm_params.output_cost_per_token,
        )
        if price is not None
    ]
    return max(prices, default=Decimal(0)) * tokens


def reserve_budget(
    ctx: ApiContext, caller: Caller, job_id: str, cost: Decimal, until: dt.datetime
) -> None:
    """A key (or its customer) over a budget is refused until the period resets; else
    the job's estimated cost is reserved against each of its budgets until it ends
    (released by the worker, or by `release_job`)."""
    now = utcnow()
    with ctx.sessions() as session:
        budgets = budgets_for(session, caller.key_id, caller.customer_id)
        if not budgets:
            return
        spent = spent_of(session, ctx.redis_sync, budgets, now)
    over = next(((b, s, Decimal(0)) for b, s in spent if s >= b.max_spend), None)
    if over is None:
        booked = ctx.reservations.reserve(job_id, cost, spent, until, now)
        if booked is None:
            return
        over = (booked.budget, booked.spent, booked.reserved)
    budget, used, reserved = over
    _, resets_at = period_bounds(budget.period, now)
    retry = None
    if resets_at is not None:
        retry = str(max(1, math.ceil((resets_at - now).total_seconds())))
    held = f" and {reserved} reserved by jobs in flight" if reserved else ""
    reset = f"; it resets at {resets_at.isoformat()}" if resets_at else ""
    raise ApiError(
        429,
        f"budget exceeded: budget {budget.id} of {budget.scope} {budget.scope_id} is used "
        f"up: {used} spent{held}, of {budget.max_spend} this {budget.period}{reset}",
        param="budget",
        code="budget_exceeded",
        error_type="insufficient_quota",
        headers={"Retry-After": retry} if retry else None,
    )


def release_job(ctx: ApiContext, owner: str, job_id: str, estimated_tokens: int | None) -> None:
    """An admitted interactive job that will never run (cancelled while queued, or not
    stored): free its parallel slot, give back its estimated tokens and its budget
    reservations."""
    if estimated_tokens is not None:
        ctx.limiter.settle(owner, job_id, -estimated_tokens)
        ctx.reservations.release(job_id)


def _too_many(refusal: Refusal, estimate: int) -> ApiError:
    retry = max(1, math.ceil(refusal.retry_after_s))
    messages = {
        "rpm": f"this API key may start {refusal.value} interactive jobs per minute (rpm); "
        f"{refusal.used} were accepted in the last 60 s",
        "tpm": f"this API key may use {refusal.value} tokens per minute (tpm); "
        f"{refusal.used} are counted this minute and this job is estimated at {estimate}",
        "max_parallel_jobs": f"this API key may have {refusal.value} interactive jobs queued "
        f"or running at once (max_parallel_jobs); {refusal.used} are",
    }
    message = messages.get(refusal.limit, f"this API key is over its {refusal.limit} limit")
    return ApiError(
        429,
        f"rate limit exceeded: {message}. Retry after {retry} s.",
        param=refusal.limit,
        code="rate_limit_exceeded",
        headers={"Retry-After": str(retry), **refusal_headers(refusal)},
    )


def check_batch_allowance(session: Session, caller: Caller, lines: int) -> None:
    """The key's batch allowance: at most `max_batch_lines` lines of its batches queued
    or running at once. Counted from the rows (the truth) inside the transaction that
    inserts the new lines; on PostgreSQL an advisory lock per key serializes two
    batches created at once (SQLite's writers are serialized already)."""
    grant = caller.grant
    if grant is None or grant.max_batch_lines is None:
        return
    bind = session.get_bind()
    if bind.dialect.name == "postgresql":
        session.execute(select(func.pg_advisory_xact_lock(func.hashtext(grant.key_id))))
    pending = session.scalar(
        select(func.count())
        .select_from(Job)
        .where(
            Job.owner_key == grant.key_id,
            Job.batch_id.is_not(None),
            Job.status.in_([JobStatus.QUEUED, JobStatus.RUNNING]),
        )
    )
    limit, pending = grant.max_batch_lines, int(pending or 0)
    if pending + lines <= limit:
        return
    if lines > limit:
        detail = f"this batch alone has {lines} lines: split it"
    else:
        detail = f"{pending} are, and this batch has {lines}: retry when some have finished"
    raise ApiError(
        429,
        f"batch allowance exceeded: this API key may have {limit} batch lines queued or "
        f"running at once (max_batch_lines); {detail}",
        param="max_batch_lines",
        code="batch_allowance_exceeded",
        headers={"Retry-After": str(BATCH_RETRY_AFTER_S)},
    )
