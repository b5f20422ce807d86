"""The Lago entitlement view: the part both the API (Lago's webhooks write it) and the
workers (the pre-check reads it, the refresher writes it) need. No I/O of its own.

Redis holds, per Lago subscription (keys in `models/redis_keys.py`):

- a **view**, `View` as JSON, trusted for LLMFLEET_ENTITLEMENT_TTL seconds. It says
  what Lago's subscription status allows (`active` allows; `terminated`, `canceled`,
  `pending` and anything else deny) and, where a cap is configured, whether the
  period's usage is under it. `allowed` is None when Lago could not be reached: then
  LLMFLEET_ENTITLEMENT_POLICY decides.
- **holds**, a hash of kind -> reason, per subscription or per customer, for denials
  the subscription's status does not show: Lago keeps a subscription `active` while
  its customer's wallet is depleted or a usage alert has fired, and a terminated one
  must stay denied whatever a stale lookup says. The refresher never lifts a hold; the
  webhooks that undo its cause do (`subscription.started`, `alert.resolved`, a settled
  wallet top-up), or its safety expiry.

Lago signs each webhook with HMAC-SHA256 of the raw body under the endpoint's HMAC
key, base64, in `X-Lago-Signature` (`X-Lago-Signature-Algorithm: hmac`).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from models.tenancy import ApiKey, Customer

__all__ = [
    "HOLD_ALERT",
    "HOLD_SUBSCRIPTION",
    "HOLD_WALLET",
    "View",
    "customer_subscriptions",
    "first_hold",
    "lago_signature",
    "signature_valid",
    "view_for_status",
]

#: Hold kinds: a terminated subscription, a customer's depleted wallet, a fired alert.
HOLD_SUBSCRIPTION = "subscription"
HOLD_WALLET = "wallet"
HOLD_ALERT = "alert"

#: Lago subscription statuses that allow jobs; every other one denies.
ALLOWING_STATUSES = frozenset({"active"})


@dataclass(frozen=True, slots=True)
class View:
    """What one subscription may do, as last learnt from Lago."""

    #: None: Lago could not be reached (the policy decides).
    allowed: bool | None
    reason: str
    #: "lago" (looked up) or "webhook".
    source: str
    #: When it was learnt, Unix seconds.
    at: int

    def encode(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def decode(cls, raw: bytes | str | None) -> View | None:
        """None when missing or unreadable: either way, look it up again."""
        if raw is None:
            return None
        try:
            data = json.loads(raw)
            allowed = data["allowed"]
            if allowed is not None and not isinstance(allowed, bool):
                return None
            return cls(allowed, str(data["reason"]), str(data["source"]), int(data["at"]))
        except (ValueError, KeyError, TypeError):
            return None


def view_for_status(status: str | None, source: str, at: int) -> View:
    if status in ALLOWING_STATUSES:
        return View(True, "the subscription is active", source, at)
    return View(False, f"the subscription is {status or 'of unknown status'} in Lago", source, at)


def first_hold(*holds: Mapping[bytes, bytes] | Mapping[str, str]) -> str | None:
    """The reason of a hold among hashes of kind -> reason (the same one each time)."""
    for hold in holds:
        for kind in sorted(hold):
            reason = hold[kind]  # type: ignore[index]
            return reason.decode() if isinstance(reason, bytes) else str(reason)
    return None


def lago_signature(key: str, body: bytes) -> str:
    digest = hmac.new(key.encode(), body, hashlib.sha256).digest()
    return base64.b64encode(digest).decode()


def signature_valid(key: str, body: bytes, signature: str | None, algorithm: str | None) -> bool:
    """Lago's `hmac` signature over the raw body; a missing signature or another
    algorithm (Lago's default `jwt`) is not valid here."""
    if not signature or (algorithm is not None and algorithm.strip().lower() != "hmac"):
        return False
    expected = lago_signature(key, body).encode()
    return hmac.compare_digest(expected, signature.strip().encode())


def customer_subscriptions(session: Session, customer_id: str) -> list[str] | None:
    """The Lago subscriptions billed to our customer `customer_id` (Lago's
    `external_customer_id` is our customer's id): its own and its keys'. None when
    there is no such customer."""
    own = session.scalar(
        select(Customer.external_subscription_id).where(Customer.id == customer_id)
    )
    if own is None and session.get(Customer, customer_id) is None:
        return None
    keys = session.scalars(
        select(ApiKey.external_subscription_id).where(
            ApiKey.customer_id == customer_id, ApiKey.external_subscription_id.is_not(None)
        )
    )
    return sorted({s for s in (own, *keys) if s})
