"""Webhook events as rows: the part both the API and the workers need.

An event is recorded in the same transaction as the state change it reports (a job
or batch reaching an end state), so an end state is never committed without its
event, nor an event without its end state. Recording does no I/O of its own; the
workers sign and send the row later (`workers/webhooks.py`), retrying until it is
delivered or out of attempts. Payloads follow Standard Webhooks
(https://www.standardwebhooks.com): `{"object": "event", "id", "type", "created_at",
"data"}`.

Event types: `job.succeeded`, `job.failed`, `job.cancelled`, `job.expired` (data
`{"id", "status"}`), and `batch.completed`, `batch.failed`, `batch.expired`,
`batch.cancelled` (data `{"id"}`).
"""

from __future__ import annotations

import base64
import binascii
import enum
from typing import Any

from sqlalchemy.orm import Session

from models.ids import new_id
from models.tables import TERMINAL_STATUSES, JobStatus, WebhookDelivery, utcnow

__all__ = [
    "SECRET_PREFIX",
    "DeliveryStatus",
    "event_payload",
    "record_event",
    "record_job_event",
    "secret_key",
]

SECRET_PREFIX = "whsec_"


class DeliveryStatus(enum.StrEnum):
    PENDING = "pending"
    DELIVERED = "delivered"
    FAILED = "failed"


def secret_key(secret: str) -> bytes:
    """The HMAC key of a `whsec_<base64>` secret. Raises ValueError (without the
    secret in the message) when the secret is not in that form."""
    if not secret.startswith(SECRET_PREFIX):
        raise ValueError(f"must start with {SECRET_PREFIX!r}")
    encoded = secret.removeprefix(SECRET_PREFIX)
    try:
        # Secrets are often written without base64 padding; add what is missing.
        key = base64.b64decode(encoded + "=" * (-len(encoded) % 4), validate=True)
    except binascii.Error:
        raise ValueError(f"must be {SECRET_PREFIX!r} followed by base64") from None
    if not key:
        raise ValueError(f"must have a key after {SECRET_PREFIX!r}")
    return key


def event_payload(event_type: str, data: dict[str, Any], created_at: int) -> dict[str, Any]:
    return {
        "object": "event",
        "id": new_id("evt"),
        "type": event_type,
        "created_at": created_at,
        "data": data,
    }


def record_event(session: Session, url: str, event_type: str, data: dict[str, Any]) -> str:
    """Add one pending delivery of a new event to the caller's transaction; returns
    the delivery id, to publish once the transaction has committed."""
    now = utcnow()
    delivery = WebhookDelivery(
        id=new_id("whd"),
        event_type=event_type,
        url=url,
        payload=event_payload(event_type, data, int(now.timestamp())),
        status=DeliveryStatus.PENDING,
        attempts=0,
        created_at=now,
        next_attempt_at=now,
    )
    session.add(delivery)
    return delivery.id


def record_job_event(
    session: Session, job_id: str, webhook_url: str | None, status: str
) -> str | None:
    """The `job.<status>` event of a job that has just ended, if it asked for webhooks."""
    if webhook_url is None or JobStatus(status) not in TERMINAL_STATUSES:
        return None
    return record_event(session, webhook_url, f"job.{status}", {"id": job_id, "status": status})
