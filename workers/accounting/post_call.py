"""The post-call step: turn a finished claim's usage into a spend row and, when Lago
reporting is on and the caller maps to a subscription, usage events in the outbox —
all in one transaction, once per (job, claim) however often the task is delivered."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from models.accounting import OutboxStatus, Spend, UsageOutbox
from models.fleet_config import Deployment, FleetConfig
from models.settings import CommonSettings
from models.tables import Job, utcnow
from workers.accounting.cost import Price, price_call
from workers.providers.base import Usage

__all__ = ["Billing", "SpendResult", "record_spend", "transaction_id"]

log = logging.getLogger(__name__)

USAGE_FIELDS = (
    "prompt_tokens",
    "completion_tokens",
    "cached_tokens",
    "cache_creation_tokens",
    "reasoning_tokens",
)


@dataclass(frozen=True, slots=True)
class Billing:
    """Who pays: the key's or customer's Lago subscription, if any."""

    customer_id: str | None = None
    external_subscription_id: str | None = None


@dataclass(frozen=True, slots=True)
class SpendResult:
    created: bool
    cost: Decimal | None
    events: int
    owner_key: str | None = None
    model_group: str | None = None


def transaction_id(job_id: str, claim: int, code: str) -> str:
    """Deterministic, so a resend is the same event to Lago."""
    return f"{job_id}:{claim}:{code}"


def record_spend(
    sessions: sessionmaker[Session],
    config: FleetConfig,
    settings: CommonSettings,
    job_id: str,
    claim: int,
    billing: Billing,
) -> SpendResult:
    with sessions() as session:
        job = session.get(Job, job_id)
        if job is None or job.attempts != claim or not job.total_tokens:
            return SpendResult(False, None, 0)
        if session.scalar(select(Spend.id).where(Spend.job_id == job_id, Spend.claim == claim)):
            return SpendResult(False, job.cost, 0)
    deployment = _deployment(config, job)
    usage = _usage(job)
    price = price_call(deployment.litellm_params, usage) if deployment else Price(None, None)
    spend = _spend_row(job, claim, deployment, usage, price, billing)
    events = list(_events(spend, job, deployment, settings, billing))
    try:
        with sessions.begin() as session:
            session.add(spend)
            session.add_all(events)
            locked = session.get(Job, job_id, with_for_update=True)
            if locked is not None:
                locked.cost = price.cost
    except IntegrityError:
        return SpendResult(False, price.cost, 0)  # a concurrent delivery got there first
    return SpendResult(True, price.cost, len(events), job.owner_key, spend.model_group)


def _deployment(config: FleetConfig, job: Job) -> Deployment | None:
    for dep in config.deployments_for(job.served_group or job.model):
        if dep.id == job.deployment_id:
            return dep
    return None


def _usage(job: Job) -> Usage:
    return Usage(
        job.prompt_tokens or 0,
        job.completion_tokens or 0,
        job.total_tokens or 0,
        cached_tokens=job.cached_tokens or 0,
        cache_creation_tokens=job.cache_creation_tokens or 0,
        reasoning_tokens=job.reasoning_tokens or 0,
    )


def _spend_row(
    job: Job,
    claim: int,
    deployment: Deployment | None,
    usage: Usage,
    price: Price,
    billing: Billing,
) -> Spend:
    params = deployment.litellm_params if deployment else None
    return Spend(
        job_id=job.id,
        claim=claim,
        owner_key=job.owner_key,
        customer_id=billing.customer_id,
        model_group=job.served_group or job.model,
        provider=params.provider if params else None,
        provider_model=params.provider_model if params else None,
        deployment_id=job.deployment_id,
        prompt_tokens=usage.prompt_tokens,
        completion_tokens=usage.completion_tokens,
        cached_tokens=usage.cached_tokens,
        cache_creation_tokens=usage.cache_creation_tokens,
        reasoning_tokens=usage.reasoning_tokens,
        cost=price.cost,
        cost_source=price.source,
        called_at=job.started_at or utcnow(),
        created_at=utcnow(),
    )


def _events(
    spend: Spend,
    job: Job,
    deployment: Deployment | None,
    settings: CommonSettings,
    billing: Billing,
) -> Iterator[UsageOutbox]:
    """One event per non-zero usage figure (and optionally the cost), with property
    values as strings, the call's own Unix timestamp and a deterministic id."""
    if not settings.lago_enabled or not billing.external_subscription_id:
        return
    properties: dict[str, Any] = {
        "model": spend.model_group,
        "provider": spend.provider or "",
        "deployment": spend.deployment_id or "",
    }
    timestamp = int(spend.called_at.timestamp())
    for field in USAGE_FIELDS:
        value = getattr(spend, field)
        code = settings.lago_metric_codes.get(field)
        if code and value:
            yield _event(spend, billing, code, timestamp, {**properties, "value": str(value)})
    if settings.lago_cost_code and spend.cost is not None:
        event = _event(spend, billing, settings.lago_cost_code, timestamp, properties)
        event.precise_total_amount_cents = str(spend.cost * 100)
        yield event


def _event(
    spend: Spend, billing: Billing, code: str, timestamp: int, properties: dict[str, Any]
) -> UsageOutbox:
    assert billing.external_subscription_id is not None
    return UsageOutbox(
        transaction_id=transaction_id(spend.job_id, spend.claim, code),
        external_subscription_id=billing.external_subscription_id,
        code=code,
        timestamp=timestamp,
        properties=properties,
        status=OutboxStatus.PENDING,
        attempts=0,
        next_attempt_at=utcnow(),
        created_at=utcnow(),
    )
