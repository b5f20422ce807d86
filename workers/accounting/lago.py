"""Drain the usage outbox to Lago's `POST /api/v1/events/batch`, at most 100 events a
request, so that every event is recorded exactly once:

- 2xx: sent.
- 422 naming events whose `transaction_id` already exists: those were recorded
  before (a resend) and count as sent; Lago rejects the whole batch, so the others
  are sent again without them.
- 422 naming other problems: those events are dead (with the reason, counted); the
  rest are sent again. A 422 that names no event is split in halves until the bad
  one is alone, so one bad event never blocks the others.
- 429 (honouring `x-ratelimit-reset`), 5xx, timeouts, connection errors and other
  4xx (a wrong key is fixed by an operator): the events stay pending with backoff.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import httpx2 as httpx
from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from models.accounting import OutboxStatus, UsageOutbox
from models.settings import CommonSettings
from models.tables import utcnow

__all__ = ["DrainReport", "drain"]

log = logging.getLogger(__name__)

MAX_EVENTS = 100
TIMEOUT_S = 15.0
BACKOFF_BASE_S = 2.0
BACKOFF_CAP_S = 600.0
ALREADY = "value_already_exist"


@dataclass
class DrainReport:
    sent: int = 0
    dead: int = 0
    deferred: int = 0
    requests: int = 0
    dead_reasons: list[str] = field(default_factory=list)


class _Retry(Exception):
    def __init__(self, reason: str, delay: float | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.delay = delay


def drain(
    sessions: sessionmaker[Session],
    http: httpx.Client,
    settings: CommonSettings,
    rng: random.Random,
    max_requests: int = 50,
    timeout: float = TIMEOUT_S,
) -> DrainReport:
    report = DrainReport()
    while report.requests < max_requests:
        with sessions() as session:
            rows = list(
                session.scalars(
                    select(UsageOutbox)
                    .where(
                        UsageOutbox.status == OutboxStatus.PENDING,
                        UsageOutbox.next_attempt_at <= utcnow(),
                    )
                    .order_by(UsageOutbox.id)
                    .limit(MAX_EVENTS)
                )
            )
        if not rows:
            break
        try:
            _send(_Sender(http, settings, timeout), rows, sessions, report)
        except _Retry as retry:
            _defer(sessions, rows, retry, rng, report)
            break
    return report


@dataclass(frozen=True)
class _Sender:
    http: httpx.Client
    settings: CommonSettings
    timeout: float


def _send(
    sender: _Sender,
    rows: Sequence[UsageOutbox],
    sessions: sessionmaker[Session],
    report: DrainReport,
) -> None:
    """Send `rows`; on a partial rejection, settle what is known and resend the rest."""
    report.requests += 1
    response = _post(sender, rows)
    if response.status_code < 300:
        _mark_sent(sessions, [r.id for r in rows], report)
        return
    if response.status_code != 422:
        raise _retry_for(response)
    details = _error_details(response)
    if not details:
        if len(rows) == 1:
            _mark_dead(sessions, rows[0], _reason(response), report)
            return
        half = len(rows) // 2
        _send(sender, rows[:half], sessions, report)
        _send(sender, rows[half:], sessions, report)
        return
    already, rest = [], []
    for index, row in enumerate(rows):
        problem = details.get(index)
        if problem is None:
            rest.append(row)
        elif _only_already_exists(problem):
            already.append(row.id)
        else:
            _mark_dead(sessions, row, f"rejected by Lago: {problem}", report)
    _mark_sent(sessions, already, report)
    if rest:
        _send(sender, rest, sessions, report)


def _post(sender: _Sender, rows: Sequence[UsageOutbox]) -> Any:
    settings = sender.settings
    assert settings.lago_api_url and settings.lago_api_key
    url = settings.lago_api_url.rstrip("/") + "/api/v1/events/batch"
    headers = {"Authorization": f"Bearer {settings.lago_api_key.get_secret_value()}"}
    events = {"events": [_event(r) for r in rows]}
    try:
        return sender.http.post(url, json=events, headers=headers, timeout=sender.timeout)
    except httpx.TimeoutException as exc:
        raise _Retry("Lago did not answer in time") from exc
    except httpx.TransportError as exc:
        raise _Retry(f"cannot reach Lago: {type(exc).__name__}") from exc


def _event(row: UsageOutbox) -> dict[str, Any]:
    event: dict[str, Any] = {
        "transaction_id": row.transaction_id,
        "external_subscription_id": row.external_subscription_id,
        "code": row.code,
        "timestamp": row.timestamp,
        "properties": row.properties,
    }
    if row.precise_total_amount_cents is not None:
        event["precise_total_amount_cents"] = row.precise_total_amount_cents
    return event


def _retry_for(response: Any) -> _Retry:
    delay = None
    if response.status_code == 429:
        reset = response.headers.get("x-ratelimit-reset")
        try:
            delay = max(0.0, float(reset)) if reset is not None else None
        except ValueError:
            delay = None
    return _Retry(f"Lago answered HTTP {response.status_code}", delay)


def _error_details(response: Any) -> dict[int, Any]:
    """Lago's per-event errors: `error_details` keyed by the event's index."""
    try:
        details = response.json().get("error_details")
    except (ValueError, AttributeError):
        return {}
    if not isinstance(details, dict):
        return {}
    out: dict[int, Any] = {}
    for key, value in details.items():
        if str(key).isdigit():
            out[int(key)] = value
    return out


def _only_already_exists(problem: Any) -> bool:
    if not isinstance(problem, dict) or not problem:
        return False
    return all(
        field_name == "transaction_id" and isinstance(codes, list) and codes == [ALREADY]
        for field_name, codes in problem.items()
    )


def _reason(response: Any) -> str:
    try:
        body = response.json()
    except ValueError:
        return f"HTTP {response.status_code}"
    return f"HTTP {response.status_code}: {body.get('code') or body.get('error')}"


def _mark_sent(sessions: sessionmaker[Session], ids: list[int], report: DrainReport) -> None:
    if not ids:
        return
    with sessions.begin() as session:
        session.execute(
            update(UsageOutbox)
            .where(UsageOutbox.id.in_(ids))
            .values(status=OutboxStatus.SENT, sent_at=utcnow(), last_error=None)
        )
    report.sent += len(ids)


def _mark_dead(
    sessions: sessionmaker[Session], row: UsageOutbox, reason: str, report: DrainReport
) -> None:
    with sessions.begin() as session:
        session.execute(
            update(UsageOutbox)
            .where(UsageOutbox.id == row.id)
            .values(status=OutboxStatus.DEAD, last_error=reason[:2000])
        )
    report.dead += 1
    report.dead_reasons.append(reason)
    log.warning("usage event %s is dead: %s", row.transaction_id, reason)


def _defer(
    sessions: sessionmaker[Session],
    rows: Sequence[UsageOutbox],
    retry: _Retry,
    rng: random.Random,
    report: DrainReport,
) -> None:
    """Leave the rows pending for a later drain: the server's reset time when it gave
    one, else exponential backoff with full jitter on the rows' attempts."""
    attempts = max(r.attempts for r in rows) + 1
    delay = retry.delay
    if delay is None:
        delay = rng.uniform(0, min(BACKOFF_CAP_S, BACKOFF_BASE_S * 2 ** min(attempts, 12)))
    with sessions.begin() as session:
        session.execute(
            update(UsageOutbox)
            .where(
                UsageOutbox.id.in_([r.id for r in rows]),
                UsageOutbox.status == OutboxStatus.PENDING,
            )
            .values(
                attempts=UsageOutbox.attempts + 1,
                last_error=retry.reason,
                next_attempt_at=utcnow() + timedelta(seconds=delay),
            )
        )
    report.deferred += len(rows)
    log.warning("Lago drain deferred %d event(s) %.1fs: %s", len(rows), delay, retry.reason)
