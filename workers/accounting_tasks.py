"""Thin tasks of the accounting side: post-call (a claim left unpriced), the Lago drain
(beat, every few seconds) and the entitlement refresh (beat, every TTL/2), each of the
beat tasks one at a time across the fleet."""

from __future__ import annotations

import logging

from models.contract import LAGO_DRAIN_TASK, LAGO_ENTITLEMENT_TASK, POST_CALL_TASK
from models.redis_keys import (
    ENTITLEMENT_REFRESH_LOCK,
    ENTITLEMENT_REFRESH_LOCK_TTL_MS,
    LAGO_DRAIN_LOCK,
    LAGO_DRAIN_LOCK_TTL_MS,
)
from workers.accounting import charge as charges
from workers.accounting import entitlement, lago
from workers.accounting.billing import billing_for
from workers.accounting.post_call import record_spend
from workers.celery_app import app
from workers.fleet_lock import fleet_lock

log = logging.getLogger(__name__)


@app.task(name=POST_CALL_TASK, ignore_result=True)
def post_call(job_id: str, claim: int) -> None:
    """The recovery path of a claim that ended without its spend row (the worker ends
    a job together with its charge): price it, write it once, count it in budgets."""
    ctx = app.get_context()
    billing = billing_for(ctx.sessions, job_id)
    result = record_spend(ctx.sessions, ctx.config, ctx.settings, job_id, claim, billing)
    if result.created and result.owner_key is not None:
        charges.settle(ctx, result.owner_key, result.model_group or "", result.cost)
        log.info(
            "job %s claim %d: cost %s, %d usage event(s)", job_id, claim, result.cost, result.events
        )


@app.task(name=LAGO_DRAIN_TASK, ignore_result=True)
def lago_drain() -> int:
    ctx = app.get_context()
    if not ctx.settings.lago_enabled:
        return 0
    with fleet_lock(ctx.redis, LAGO_DRAIN_LOCK, LAGO_DRAIN_LOCK_TTL_MS) as held:
        if not held:
            return 0
        report = lago.drain(ctx.sessions, ctx.http, ctx.settings, ctx.rng)
    if report.sent or report.dead or report.deferred:
        log.info(
            "lago drain: %d sent, %d dead, %d deferred in %d request(s)",
            report.sent,
            report.dead,
            report.deferred,
            report.requests,
        )
    return report.sent


@app.task(name=LAGO_ENTITLEMENT_TASK, ignore_result=True)
def lago_entitlements() -> int:
    """Re-read Lago for the subscriptions jobs were checked for lately."""
    ctx = app.get_context()
    if not ctx.settings.lago_enabled:
        return 0
    with fleet_lock(ctx.redis, ENTITLEMENT_REFRESH_LOCK, ENTITLEMENT_REFRESH_LOCK_TTL_MS) as held:
        if not held:
            return 0
        report = entitlement.refresh(ctx.redis, ctx.http, ctx.settings)
    if report.skipped or report.forgotten:
        log.info(
            "entitlements: %d refreshed, %d left for the next round, %d idle forgotten",
            report.refreshed,
            report.skipped,
            report.forgotten,
        )
    return report.refreshed
