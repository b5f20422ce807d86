"""When an interactive job of a virtual key ends: free its parallel slot and correct
the tokens its key was charged at intake (the estimate) by what it really used — 0
for a cache hit, a job that expired or was cancelled before a call, or a call that
reported no usage (see `models.key_limits` for the windows); and, once its cost is
counted, release what it reserved of its budgets (`models.budget_reservations`)."""

from __future__ import annotations

import logging

import redis

from models.budget_reservations import Reservations
from models.key_limits import KeyLimiter
from models.tables import JobStatus
from workers.jobstore import Claim, Outcome, Stored
from workers.resources import WorkerContext

__all__ = ["release_budgets", "settle_job"]

log = logging.getLogger(__name__)


def settle_job(
    ctx: WorkerContext, claimed: Claim, stored: Stored | None, outcome: Outcome | None
) -> None:
    """Only jobs admitted by key limits carry an estimate; a job that now waits for
    capacity (stored `queued`) or whose claim was lost is settled later, once."""
    if claimed.estimated_tokens is None or stored is None or stored.status is JobStatus.QUEUED:
        return
    used = 0
    if outcome is not None and outcome.usage is not None and not outcome.cached:
        used = outcome.usage.total_tokens
    try:
        KeyLimiter(ctx.redis).settle(claimed.owner, claimed.job_id, used - claimed.estimated_tokens)
    except redis.RedisError as exc:  # the slot frees itself at the job's deadline
        log.warning("job %s: key limits not settled: %s", claimed.job_id, type(exc).__name__)


def release_budgets(ctx: WorkerContext, claimed: Claim, stored: Stored | None) -> None:
    """After the job's spend is counted (or there is none to count): its budget
    reservations go. A job that waits again keeps them."""
    if claimed.estimated_tokens is None or stored is None or stored.status is JobStatus.QUEUED:
        return
    try:  # one round trip, whether the job holds any (budgets change at any time)
        Reservations(ctx.redis).release(claimed.job_id)
    except redis.RedisError as exc:  # the reservation lapses at the job's deadline
        log.warning(
            "job %s: budget reservation not released: %s", claimed.job_id, type(exc).__name__
        )
