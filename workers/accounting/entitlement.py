"""The Lago entitlement pre-check: before a job's first provider call, may the
subscription it is billed to run it? Plain functions, no Celery import.

The answer comes from the cached view in Redis (`models/entitlement.py`): a hold
(webhook) denies; else the subscription's view decides. On a miss the subscription is
looked up in Lago at once (2 s timeout) and the view cached for the TTL; the refresher
(`refresh`, a beat task every TTL/2) keeps the views of the subscriptions in use fresh,
so a busy subscription is rarely looked up on a job's path.

Lago's answer: `GET /api/v1/subscriptions/{id}` -> status `active` allows, any other
status denies, 404 denies (Lago does not know it). With a cap configured for the
subscription (LLMFLEET_LAGO_USAGE_LIMITS, cents), an active one is denied once
`GET /api/v1/customers/{customer}/current_usage` reports `total_amount_cents` at or
over the cap. Timeouts, connection errors, 429, 5xx and other 4xx mean Lago can't be
reached: that is remembered briefly (`allowed: None`) and LLMFLEET_ENTITLEMENT_POLICY
decides (`fail_open` runs the job; its usage is still reported, because the post-call
path never looks at this check).

With reporting off (no LAGO_API_URL / LAGO_API_KEY) or no subscription for the job,
there is nothing to check.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import httpx2 as httpx
import redis

from models.entitlement import View, first_hold, view_for_status
from models.redis_keys import (
    ENTITLEMENT_TRACKED,
    ENTITLEMENT_UNKNOWN_TTL_S,
    entitlement_customer_holds,
    entitlement_subscription_holds,
    entitlement_view,
)
from models.settings import CommonSettings
from models.tables import JobStatus
from models.tenancy import MASTER_OWNER
from workers.accounting.billing import billing_for
from workers.accounting.post_call import Billing
from workers.jobstore import Claim, Outcome
from workers.resources import WorkerContext

__all__ = [
    "LAGO_TIMEOUT_S",
    "LagoUnreachable",
    "RefreshReport",
    "Verdict",
    "check",
    "denial_error",
    "fetch_view",
    "pre_check",
    "refresh",
]

log = logging.getLogger(__name__)

LAGO_TIMEOUT_S = 2.0
#: Subscriptions not checked for this many TTLs are no longer refreshed.
IDLE_TTLS = 10


class LagoUnreachable(Exception):
    """Lago gave no usable answer (timeout, connection error, 429, 5xx, other 4xx)."""


@dataclass(frozen=True, slots=True)
class Verdict:
    allowed: bool
    subscription: str
    reason: str
    #: Lago was asked on this job's path (a cache miss).
    looked_up: bool = False


def pre_check(ctx: WorkerContext, claim: Claim) -> Outcome | None:
    """The failed Outcome of a job that may not run, else None (run it)."""
    if not ctx.settings.lago_enabled or claim.owner == MASTER_OWNER:
        return None  # the master key's jobs are billed to no one
    verdict = check(ctx.redis, ctx.http, ctx.settings, billing_for(ctx.sessions, claim.job_id))
    if verdict is None or verdict.allowed:
        return None
    log.info("job %s: denied by entitlement check: %s", claim.job_id, verdict.reason)
    return Outcome(JobStatus.FAILED, error=denial_error(verdict))


def denial_error(verdict: Verdict) -> dict[str, Any]:
    """OpenAI's shape for "you can't be served": 402, `insufficient_quota`."""
    return {
        "message": f"Lago subscription {verdict.subscription} may not run jobs: {verdict.reason}",
        "type": "insufficient_quota",
        "param": None,
        "code": "entitlement_denied",
        "status_code": 402,
    }


def check(
    client: redis.Redis, http: httpx.Client, settings: CommonSettings, billing: Billing
) -> Verdict | None:
    """The verdict for a job billed to `billing`; None when there is nothing to check.
    One Redis round trip when the view is cached."""
    subscription = billing.external_subscription_id
    if not settings.lago_enabled or subscription is None:
        return None
    now = int(time.time())
    pipe = client.pipeline(transaction=False)
    pipe.get(entitlement_view(subscription))
    pipe.hgetall(entitlement_subscription_holds(subscription))
    if billing.customer_id is not None:
        pipe.hgetall(entitlement_customer_holds(billing.customer_id))
    pipe.zadd(ENTITLEMENT_TRACKED, {subscription: now})
    raw_view, *holds = pipe.execute()[:-1]
    held = first_hold(*holds)
    if held is not None:
        return Verdict(False, subscription, held)
    view = View.decode(raw_view)
    looked_up = view is None
    if view is None:
        view = _look_up(client, http, settings, subscription, now)
    if view.allowed is None:
        allowed = settings.entitlement_policy == "fail_open"
        reason = f"Lago can't be reached ({view.reason}) and the policy is to " + (
            "allow" if allowed else "deny"
        )
        return Verdict(allowed, subscription, reason, looked_up)
    return Verdict(view.allowed, subscription, view.reason, looked_up)


def _look_up(
    client: redis.Redis, http: httpx.Client, settings: CommonSettings, subscription: str, now: int
) -> View:
    """Ask Lago and cache the answer. `nx`: a view a webhook wrote meanwhile wins."""
    try:
        view = fetch_view(http, settings, subscription, now)
        ttl = settings.entitlement_ttl
    except LagoUnreachable as exc:
        log.warning("entitlement of %s: Lago can't be reached: %s", subscription, exc)
        view = View(None, str(exc), "lago", now)
        ttl = min(settings.entitlement_ttl, ENTITLEMENT_UNKNOWN_TTL_S)
    client.set(entitlement_view(subscription), view.encode(), ex=ttl, nx=True)
    return view


def fetch_view(http: httpx.Client, settings: CommonSettings, subscription: str, now: int) -> View:
    """The subscription's view from Lago (status, then usage against its cap)."""
    body = _get(http, settings, f"/api/v1/subscriptions/{quote(subscription, safe='')}")
    if body is None:
        return View(False, "the subscription is unknown to Lago", "lago", now)
    sub = body.get("subscription") or {}
    view = view_for_status(sub.get("status"), "lago", now)
    cap = settings.lago_usage_limits.get(subscription)
    customer = sub.get("external_customer_id")
    if not view.allowed or cap is None or not customer:
        return view
    usage = _get(
        http,
        settings,
        f"/api/v1/customers/{quote(str(customer), safe='')}/current_usage",
        {"external_subscription_id": subscription},
    )
    try:
        amount = int((usage or {}).get("customer_usage", {}).get("total_amount_cents") or 0)
    except (TypeError, ValueError) as exc:
        raise LagoUnreachable("unreadable current_usage answer") from exc
    if amount >= cap:
        reason = f"this period's usage ({amount} cents) has reached its cap of {cap} cents"
        return View(False, reason, "lago", now)
    return view


def _get(
    http: httpx.Client,
    settings: CommonSettings,
    path: str,
    params: dict[str, str] | None = None,
) -> dict[str, Any] | None:
    """Lago's JSON answer; None on 404."""
    assert settings.lago_api_url and settings.lago_api_key
    url = settings.lago_api_url.rstrip("/") + path
    headers = {"Authorization": f"Bearer {settings.lago_api_key.get_secret_value()}"}
    try:
        response = http.get(url, params=params, headers=headers, timeout=LAGO_TIMEOUT_S)
    except httpx.TimeoutException as exc:
        raise LagoUnreachable("no answer within 2 s") from exc
    except httpx.TransportError as exc:
        raise LagoUnreachable(f"{type(exc).__name__}") from exc
    if response.status_code == 404:
        return None
    if response.status_code >= 300:
        raise LagoUnreachable(f"HTTP {response.status_code}")
    try:
        body = response.json()
    except ValueError as exc:
        raise LagoUnreachable("unreadable answer") from exc
    if not isinstance(body, dict):
        raise LagoUnreachable("unreadable answer")
    return body


@dataclass
class RefreshReport:
    refreshed: int = 0
    forgotten: int = 0
    #: Not refreshed this round: Lago could not be reached (the rest are not tried).
    skipped: int = 0


def refresh(
    client: redis.Redis, http: httpx.Client, settings: CommonSettings, now: float | None = None
) -> RefreshReport:
    """Re-read Lago for every subscription checked lately, overwriting its view.
    Subscriptions idle for IDLE_TTLS TTLs are forgotten; when Lago can't be reached the
    views stay as they are (they expire at their TTL) and the round ends early."""
    now = time.time() if now is None else now
    ttl = settings.entitlement_ttl
    report = RefreshReport()
    if not settings.lago_enabled:
        return report
    report.forgotten = int(
        client.zremrangebyscore(ENTITLEMENT_TRACKED, "-inf", now - IDLE_TTLS * ttl)
    )
    subscriptions = [
        s.decode() if isinstance(s, bytes) else str(s)
        for s in client.zrange(ENTITLEMENT_TRACKED, 0, -1)
    ]
    budget_until = time.monotonic() + ttl / 2
    for index, subscription in enumerate(subscriptions):
        try:
            if time.monotonic() > budget_until:
                raise LagoUnreachable("the round took longer than TTL/2")
            view = fetch_view(http, settings, subscription, int(now))
        except LagoUnreachable as exc:
            report.skipped = len(subscriptions) - index
            log.warning("entitlement refresh: %d left for the next round: %s", report.skipped, exc)
            break
        client.set(entitlement_view(subscription), view.encode(), ex=ttl)
        report.refreshed += 1
    return report
