"""POST /v1/lago/webhooks: Lago's signed webhooks update the entitlement view at once
(`models/entitlement.py`), so a terminated subscription or a depleted wallet stops new
jobs before the next refresh.

The signature is the authentication (Lago sends no API key): HMAC-SHA256 of the raw
body under LAGO_WEBHOOK_SECRET, base64, in `X-Lago-Signature`; a bad or missing one is
401 and changes nothing. Handled types:

| webhook_type | effect |
| --- | --- |
| `subscription.terminated` | the subscription is denied (a hold, and its view) |
| `subscription.started` | the subscription is allowed; its terminated and alert holds lifted |
| `wallet.depleted_ongoing_balance` | every subscription of the customer is denied |
| `wallet_transaction.created`, `.updated` | a settled inbound one (a top-up) lifts the hold |
| `alert.triggered` | the alert's subscription (else its customer) is denied |
| `alert.resolved` | that alert hold is lifted |

Lago's `external_customer_id` is our customer's id. Every other type is answered 200
and ignored, so Lago does not retry it. Each effect is idempotent: Lago's retries are
harmless.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from starlette.concurrency import run_in_threadpool

from models.entitlement import (
    HOLD_ALERT,
    HOLD_SUBSCRIPTION,
    HOLD_WALLET,
    View,
    customer_subscriptions,
    signature_valid,
)
from models.redis_keys import (
    ENTITLEMENT_HOLD_TTL_S,
    entitlement_customer_holds,
    entitlement_subscription_holds,
    entitlement_view,
    entitlement_wallet,
)
from models.tables import utcnow
from producer_api.border import BorderRoute, parse_body
from producer_api.context import ApiContext, get_context
from producer_api.errors import ApiError, error_responses

__all__ = ["router"]

log = logging.getLogger(__name__)

router = APIRouter(route_class=BorderRoute, prefix="/v1/lago", tags=["lago"])

Ctx = Annotated[ApiContext, Depends(get_context)]
Object = dict[str, Any]
Handler = Callable[[ApiContext, Object], Awaitable[dict[str, Any]]]


@router.post("/webhooks", responses=error_responses(400, 401, 413))
async def lago_webhook(request: Request, ctx: Ctx) -> dict[str, Any]:
    """Lago's webhooks (signed with the endpoint's HMAC key)."""
    body = await request.body()
    secret = ctx.settings.lago_webhook_secret
    if secret is None:
        raise _unsigned("Lago webhooks are not accepted: LAGO_WEBHOOK_SECRET is not set")
    headers = request.headers
    if not signature_valid(
        secret.get_secret_value(),
        body,
        headers.get("x-lago-signature"),
        headers.get("x-lago-signature-algorithm"),
    ):
        raise _unsigned("missing or invalid X-Lago-Signature (hmac)")
    try:
        payload = parse_body(body)
    except json.JSONDecodeError:
        payload = None
    if not isinstance(payload, dict):
        raise ApiError(400, "the webhook body is not a JSON object", code="invalid_webhook")
    webhook_type = str(payload.get("webhook_type"))
    handler = HANDLERS.get(webhook_type)
    if handler is None:
        log.info("lago webhook %s ignored", webhook_type)
        return {"status": "ignored", "webhook_type": webhook_type}
    obj = payload.get(str(payload.get("object_type")))
    if not isinstance(obj, dict):
        raise ApiError(400, f"{webhook_type} carries no object", code="invalid_webhook")
    effect = await handler(ctx, obj)
    log.info("lago webhook %s: %s", webhook_type, effect)
    return {"status": "handled", "webhook_type": webhook_type, **effect}


async def _subscription_terminated(ctx: ApiContext, obj: Object) -> dict[str, Any]:
    subscription = _required(obj, "external_id")
    reason = "the subscription was terminated in Lago"
    ttl = ctx.settings.entitlement_ttl
    view = View(False, reason, "webhook", int(utcnow().timestamp()))
    async with ctx.redis.pipeline(transaction=True) as pipe:
        _hold(pipe, entitlement_subscription_holds(subscription), HOLD_SUBSCRIPTION, reason)
        pipe.set(entitlement_view(subscription), view.encode(), ex=ttl)
        await pipe.execute()
    return {"denied": [subscription]}


async def _subscription_started(ctx: ApiContext, obj: Object) -> dict[str, Any]:
    subscription = _required(obj, "external_id")
    ttl = ctx.settings.entitlement_ttl
    view = View(True, "the subscription started", "webhook", int(utcnow().timestamp()))
    async with ctx.redis.pipeline(transaction=True) as pipe:
        pipe.hdel(entitlement_subscription_holds(subscription), HOLD_SUBSCRIPTION, HOLD_ALERT)
        pipe.set(entitlement_view(subscription), view.encode(), ex=ttl)
        await pipe.execute()
    return {"allowed": [subscription]}


async def _wallet_depleted(ctx: ApiContext, obj: Object) -> dict[str, Any]:
    customer = _required(obj, "external_customer_id")
    subscriptions = await run_in_threadpool(_subscriptions_of, ctx, customer)
    if subscriptions is None:
        log.warning("lago webhook: wallet of unknown customer %s depleted", customer)
        return {"ignored": f"no customer {customer}"}
    wallet = obj.get("lago_id")
    reason = f"the ongoing balance of customer {customer}'s wallet is depleted"
    async with ctx.redis.pipeline(transaction=True) as pipe:
        _hold(pipe, entitlement_customer_holds(customer), HOLD_WALLET, reason)
        if wallet:
            pipe.set(entitlement_wallet(str(wallet)), customer, ex=ENTITLEMENT_HOLD_TTL_S)
        await pipe.execute()
    return {"customer": customer, "denied": subscriptions}


async def _wallet_transaction(ctx: ApiContext, obj: Object) -> dict[str, Any]:
    """A settled inbound transaction is a top-up (paid or granted credits)."""
    if obj.get("transaction_type") != "inbound" or obj.get("status") != "settled":
        return {"ignored": "not a settled top-up"}
    wallet = obj.get("lago_wallet_id")
    raw = await ctx.redis.get(entitlement_wallet(str(wallet))) if wallet else None
    if raw is None:
        return {"ignored": "no depleted wallet on record"}
    customer = raw.decode() if isinstance(raw, bytes) else str(raw)
    await ctx.redis.hdel(entitlement_customer_holds(customer), HOLD_WALLET)
    return {"customer": customer, "lifted": HOLD_WALLET}


async def _alert_triggered(ctx: ApiContext, obj: Object) -> dict[str, Any]:
    key, scope = _alert_scope(obj)
    name = obj.get("alert_code") or obj.get("code") or obj.get("lago_alert_id") or "?"
    reason = f"Lago alert {name} was triggered"
    if obj.get("current_value") is not None:
        reason += f" (value {obj['current_value']})"
    async with ctx.redis.pipeline(transaction=True) as pipe:
        _hold(pipe, key, HOLD_ALERT, reason)
        await pipe.execute()
    return {"denied": [scope]}


async def _alert_resolved(ctx: ApiContext, obj: Object) -> dict[str, Any]:
    key, scope = _alert_scope(obj)
    await ctx.redis.hdel(key, HOLD_ALERT)
    return {"allowed": [scope]}


HANDLERS: dict[str, Handler] = {
    "subscription.terminated": _subscription_terminated,
    "subscription.started": _subscription_started,
    "wallet.depleted_ongoing_balance": _wallet_depleted,
    "wallet_transaction.created": _wallet_transaction,
    "wallet_transaction.updated": _wallet_transaction,
    "alert.triggered": _alert_triggered,
    "alert.resolved": _alert_resolved,
}


def _hold(pipe: Any, key: str, kind: str, reason: str) -> None:
    pipe.hset(key, kind, reason)
    pipe.expire(key, ENTITLEMENT_HOLD_TTL_S)


def _alert_scope(obj: Object) -> tuple[str, str]:
    """An alert holds its subscription, or its customer when it names no subscription
    (wallet alerts)."""
    subscription = obj.get("external_subscription_id")
    if subscription:
        return entitlement_subscription_holds(str(subscription)), str(subscription)
    customer = _required(obj, "external_customer_id")
    return entitlement_customer_holds(customer), f"customer {customer}"


def _required(obj: Object, field: str) -> str:
    value = obj.get(field)
    if not value:
        raise ApiError(400, f"the webhook's object has no {field}", code="invalid_webhook")
    return str(value)


def _subscriptions_of(ctx: ApiContext, customer: str) -> list[str] | None:
    with ctx.sessions() as session:
        return customer_subscriptions(session, customer)


def _unsigned(message: str) -> ApiError:
    return ApiError(401, message, code="invalid_signature")
