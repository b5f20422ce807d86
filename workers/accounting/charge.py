"""A job's charge around the transaction that ends it: priced before (`prepare`), written
by `jobstore.finish` with the end state, and counted against budgets after the commit
(`settle`). A claim whose pricing fails here ends without a spend row; the post-call
task prices it instead (see `workers.accounting.post_call`)."""

from __future__ import annotations

import logging
from decimal import Decimal

import redis

from models.budgets import add_spend
from models.tables import utcnow
from workers import metrics
from workers.accounting.post_call import Charge, price_claim
from workers.jobstore import Claim, Outcome
from workers.resources import WorkerContext

__all__ = ["prepare", "settle"]

log = logging.getLogger(__name__)


def prepare(ctx: WorkerContext, claimed: Claim, outcome: Outcome) -> Charge | None:
    """The charge of a call that used tokens; None when there is nothing to bill, or
    when pricing failed (then the caller sends the post-call task)."""
    usage = outcome.usage
    if usage is None or not usage.total_tokens or outcome.cached:
        return None
    try:
        payer = ctx.payers.get(claimed.owner)
        return price_claim(
            ctx.config,
            ctx.settings,
            claimed.job_id,
            claimed.attempt,
            claimed.owner,
            outcome.served_group or claimed.model,
            outcome.deployment_id,
            usage,
            payer.billing,
        )
    except Exception:
        log.warning("job %s: not priced now; the post-call task will", claimed.job_id)
        return None


def settle(ctx: WorkerContext, owner: str, model_group: str, cost: Decimal | None) -> None:
    """After the spend row is committed: count its cost against the owner's budgets."""
    metrics.cost_known(model_group, owner, cost)
    if cost is None:
        return
    budgets = list(ctx.payers.get(owner).budgets)
    if not budgets:
        return
    try:
        with ctx.sessions() as session:
            add_spend(session, ctx.redis, budgets, cost, utcnow())
    except redis.RedisError as exc:  # the counter is rebuilt from spend rows when it expires
        log.warning("budget counters not updated (cost %s): %s", cost, type(exc).__name__)
