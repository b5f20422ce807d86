"""Send recorded webhook events (`models/webhooks.py`), signed the Standard Webhooks
way, at least once, every attempt counted on the delivery's row.

A send is claimed with one conditional UPDATE that moves `next_attempt_at` a lease
ahead, so a duplicate message of the same delivery finds it not due and does nothing;
no transaction is held open across the HTTP call. The outcome is written fenced by the
attempt count the claim saw. Plain functions with no Celery import; `workers.tasks`
wraps them and re-publishes a delivery when it has to be tried again.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import json
import random
import time
from dataclasses import dataclass
from typing import Any

import httpx2 as httpx
from pydantic import SecretStr
from sqlalchemy import or_, select, update
from sqlalchemy.orm import Session, sessionmaker

from models.tables import WebhookDelivery, utcnow
from models.webhooks import DeliveryStatus, secret_key
from workers import metrics

__all__ = [
    "BASE_BACKOFF_SECONDS",
    "MAX_BACKOFF_SECONDS",
    "backoff",
    "deliver",
    "requeue_lost",
    "sign",
]

#: First retry within this many seconds; each failure doubles it, up to the cap.
BASE_BACKOFF_SECONDS = 2.0
MAX_BACKOFF_SECONDS = 900.0
TIMEOUT_SECONDS = 10.0
#: How long a claimed send keeps others off the row: above the worst-case send
#: (10 s for each of connect, write and read), below any wait for a lost one.
LEASE_SECONDS = 120.0
#: A timer may fire a little before `next_attempt_at`; that message is still due.
EARLY_SECONDS = 1.0
MISSING_SECRET = "LLMFLEET_WEBHOOK_SECRET is not set"


@dataclass(frozen=True, slots=True)
class _Claim:
    delivery_id: str
    url: str
    payload: dict[str, Any]
    attempts: int


def sign(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    """The `webhook-signature` header value: HMAC-SHA256 over `id.timestamp.body`."""
    signed = f"{msg_id}.{timestamp}.".encode() + body
    digest = hmac.new(secret_key(secret), signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode("ascii")


def backoff(failures: int, rng: random.Random) -> float:
    """Seconds before the next try after `failures` failed ones: exponential with
    full jitter, so receivers coming back are not hit by every sender at once."""
    ceiling = min(MAX_BACKOFF_SECONDS, BASE_BACKOFF_SECONDS * 2 ** (failures - 1))
    return rng.uniform(0, ceiling)


def deliver(
    http: httpx.Client,
    sessions: sessionmaker[Session],
    secret: SecretStr | None,
    max_attempts: int,
    delivery_id: str,
    rng: random.Random,
) -> float | None:
    """Send the delivery once if it is due. Returns the seconds until it must be tried
    again, or None when there is nothing more to do here (delivered, failed for good,
    not due, or being sent by another worker)."""
    if secret is None:
        # Never send unsigned: a receiver could not tell it from a forgery.
        _end_unsent(sessions, delivery_id, MISSING_SECRET)
        return None
    claimed = _claim(sessions, delivery_id)
    if claimed is None:
        return None
    body = json.dumps(claimed.payload, separators=(",", ":")).encode()
    timestamp = int(time.time())
    headers = {
        "webhook-id": delivery_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": sign(secret.get_secret_value(), delivery_id, timestamp, body),
        "content-type": "application/json",
    }
    status_code, error = _post(http, claimed.url, body, headers)
    return _record(sessions, claimed, status_code, error, max_attempts, rng)


def _end_unsent(sessions: sessionmaker[Session], delivery_id: str, error: str) -> None:
    with sessions.begin() as session:
        session.execute(
            update(WebhookDelivery)
            .where(
                WebhookDelivery.id == delivery_id,
                WebhookDelivery.status == DeliveryStatus.PENDING,
            )
            .values(status=DeliveryStatus.FAILED, last_error=error, next_attempt_at=None)
            .execution_options(synchronize_session=False)
        )


def _claim(sessions: sessionmaker[Session], delivery_id: str) -> _Claim | None:
    """Take the right to send a pending, due delivery: `next_attempt_at` moves a lease
    ahead, so until this send is recorded the row is not due for anyone else."""
    now = utcnow()
    stmt = (
        update(WebhookDelivery)
        .where(
            WebhookDelivery.id == delivery_id,
            WebhookDelivery.status == DeliveryStatus.PENDING,
            or_(
                WebhookDelivery.next_attempt_at.is_(None),
                WebhookDelivery.next_attempt_at <= now + dt.timedelta(seconds=EARLY_SECONDS),
            ),
        )
        .values(next_attempt_at=now + dt.timedelta(seconds=LEASE_SECONDS))
        .returning(WebhookDelivery.url, WebhookDelivery.payload, WebhookDelivery.attempts)
        .execution_options(synchronize_session=False)
    )
    with sessions.begin() as session:
        row = session.execute(stmt).first()
    if row is None:
        return None
    return _Claim(delivery_id, row.url, row.payload, row.attempts)


def _post(
    http: httpx.Client, url: str, body: bytes, headers: dict[str, str]
) -> tuple[int | None, str | None]:
    """(status code, error). The error names what went wrong, never the payload, nor
    the receiver's body (which may echo it)."""
    try:
        response = http.post(url, content=body, headers=headers, timeout=TIMEOUT_SECONDS)
    except (httpx.HTTPError, httpx.InvalidURL) as exc:
        return None, f"{type(exc).__name__}: {exc}"
    if response.is_success:
        return response.status_code, None
    return response.status_code, f"HTTP {response.status_code} {response.reason_phrase}".strip()


def _record(
    sessions: sessionmaker[Session],
    claimed: _Claim,
    status_code: int | None,
    error: str | None,
    max_attempts: int,
    rng: random.Random,
) -> float | None:
    now = utcnow()
    attempts = claimed.attempts + 1
    values: dict[str, Any] = {
        "attempts": attempts,
        "last_status_code": status_code,
        "last_error": error,
        "next_attempt_at": None,
    }
    delay: float | None = None
    if error is None:
        values |= {"status": DeliveryStatus.DELIVERED, "delivered_at": now}
    elif attempts >= max_attempts:
        values["status"] = DeliveryStatus.FAILED
    else:
        delay = backoff(attempts, rng)
        values["next_attempt_at"] = now + dt.timedelta(seconds=delay)
    if error is not None:
        metrics.webhook_failed(final=delay is None)
    stmt = (
        update(WebhookDelivery)
        .where(
            WebhookDelivery.id == claimed.delivery_id,
            WebhookDelivery.status == DeliveryStatus.PENDING,
            WebhookDelivery.attempts == claimed.attempts,
        )
        .values(**values)
        .returning(WebhookDelivery.id)
        .execution_options(synchronize_session=False)
    )
    with sessions.begin() as session:
        if session.execute(stmt).first() is None:
            return None  # a send that outlived its lease: the newer claim decides
    return delay


def requeue_lost(
    sessions: sessionmaker[Session], grace_seconds: float = 60.0, limit: int = 500
) -> list[str]:
    """Pending deliveries due more than `grace_seconds` ago: their message was lost
    (or their sender died mid-send). They are marked due now, so the next sweep leaves
    them alone while the message just published does its work, and returned to be
    published again."""
    now = utcnow()
    overdue = (
        WebhookDelivery.status == DeliveryStatus.PENDING,
        WebhookDelivery.next_attempt_at < now - dt.timedelta(seconds=grace_seconds),
    )
    picked = (
        select(WebhookDelivery.id)
        .where(*overdue)
        .order_by(WebhookDelivery.next_attempt_at)
        .limit(limit)
    )
    stmt = (
        update(WebhookDelivery)
        .where(WebhookDelivery.id.in_(picked), *overdue)
        .values(next_attempt_at=now)
        .returning(WebhookDelivery.id)
        .execution_options(synchronize_session=False)
    )
    with sessions.begin() as session:
        return list(session.scalars(stmt))
