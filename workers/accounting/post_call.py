"""A finished claim's usage as money: its spend row and, when Lago reporting is on and
the caller maps to a subscription, usage events in the outbox — written together, once
per (job, claim).

Normally the worker prices the claim (`price_claim`) before it stores the job's end,
and `jobstore.finish` writes the charge in the same transaction as the end state. The
post-call task (`record_spend`) is the recovery path, for a claim that ended without a
spend row: its pricing failed in the worker, or a worker of an older version ended it.
The sweeper finds such claims (`unbilled_claims`) and sends the task; the unique key
(job, claim) makes a second write a no-op however often it is delivered."""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from sqlalchemy import exists, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from models.accounting import OutboxStatus, Spend, write_charges
from models.fleet_config import Deployment, FleetConfig
from models.settings import CommonSettings
from models.tables import Job, JobStatus, utcnow
from workers.accounting.cost import Price, price_call
from workers.providers.base import Usage

__all__ = [
    "Billing",
    "Charge",
    "SpendResult",
    "price_claim",
    "record_spend",
    "transaction_id",
    "unbilled_claims",
]

log = logging.getLogger(__name__)

USAGE_FIELDS = (
    "prompt_tokens",
    "completion_tokens",
    "cached_tokens",
    "cache_creation_tokens",
    "reasoning_tokens",
)
#: End states whose claim may have used tokens (a cancel still pays for its call).
BILLED_STATUSES = (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED)


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


@dataclass(frozen=True, slots=True)
class Charge:
    """One claim's spend row and usage events, priced, not yet written. The call's
    time (the claim's `started_at`) is known only inside the writing transaction."""

    job_id: str
    claim: int
    owner_key: str
    model_group: str
    deployment_id: str | None
    usage: Usage
    price: Price
    billing: Billing
    provider: str | None = None
    provider_model: str | None = None
    #: (Lago metric code, value) per non-zero usage figure, and the cost's code if any.
    metrics: tuple[tuple[str, int], ...] = ()
    cost_code: str | None = None

    @property
    def cost(self) -> Decimal | None:
        return self.price.cost

    @property
    def cost_source(self) -> str | None:
        return self.price.source

    @property
    def events(self) -> int:
        if not self.billing.external_subscription_id:
            return 0
        return len(self.metrics) + (1 if self.cost_code else 0)

    def write(self, session: Session, called_at: dt.datetime) -> bool:
        """Insert the spend row and its events; False (and nothing written) when the
        claim already has its spend row."""
        return bool(write_charges(session, [(self, called_at)]))

    def spend_row(self, called_at: dt.datetime) -> dict[str, Any]:
        return self._spend(called_at)

    def outbox_rows(self, called_at: dt.datetime) -> list[dict[str, Any]]:
        return self._events(int(called_at.timestamp()))

    def _spend(self, called_at: dt.datetime) -> dict[str, Any]:
        usage = self.usage
        return {
            "job_id": self.job_id,
            "claim": self.claim,
            "owner_key": self.owner_key,
            "customer_id": self.billing.customer_id,
            "model_group": self.model_group,
            "provider": self.provider,
            "provider_model": self.provider_model,
            "deployment_id": self.deployment_id,
            "prompt_tokens": usage.prompt_tokens,
            "completion_tokens": usage.completion_tokens,
            "cached_tokens": usage.cached_tokens,
            "cache_creation_tokens": usage.cache_creation_tokens,
            "reasoning_tokens": usage.reasoning_tokens,
            "cost": self.price.cost,
            "cost_source": self.price.source,
            "called_at": called_at,
            "created_at": utcnow(),
        }

    def _events(self, timestamp: int) -> list[dict[str, Any]]:
        """One event per non-zero usage figure (and optionally the cost), with property
        values as strings, the call's own Unix timestamp and a deterministic id."""
        subscription = self.billing.external_subscription_id
        if not subscription:
            return []
        properties: dict[str, Any] = {
            "model": self.model_group,
            "provider": self.provider or "",
            "deployment": self.deployment_id or "",
        }
        now = utcnow()
        common = {
            "external_subscription_id": subscription,
            "timestamp": timestamp,
            "precise_total_amount_cents": None,
            "status": OutboxStatus.PENDING,
            "attempts": 0,
            "next_attempt_at": now,
            "created_at": now,
        }
        events = [
            {
                **common,
                "transaction_id": transaction_id(self.job_id, self.claim, code),
                "code": code,
                "properties": {**properties, "value": str(value)},
            }
            for code, value in self.metrics
        ]
        if self.cost_code and self.cost is not None:
            events.append(
                {
                    **common,
                    "transaction_id": transaction_id(self.job_id, self.claim, self.cost_code),
                    "code": self.cost_code,
                    "properties": properties,
                    "precise_total_amount_cents": str(self.cost * 100),
                }
            )
        return events


def transaction_id(job_id: str, claim: int, code: str) -> str:
    """Deterministic, so a resend is the same event to Lago."""
    return f"{job_id}:{claim}:{code}"


def price_claim(
    config: FleetConfig,
    settings: CommonSettings,
    job_id: str,
    claim: int,
    owner_key: str,
    model_group: str,
    deployment_id: str | None,
    usage: Usage,
    billing: Billing,
) -> Charge:
    deployment = _deployment(config, model_group, deployment_id)
    params = deployment.litellm_params if deployment else None
    price = price_call(params, usage) if params else Price(None, None)
    metrics: tuple[tuple[str, int], ...] = ()
    cost_code = None
    if settings.lago_enabled and billing.external_subscription_id:
        codes = settings.lago_metric_codes
        metrics = tuple(
            (codes[field], getattr(usage, field))
            for field in USAGE_FIELDS
            if codes.get(field) and getattr(usage, field)
        )
        cost_code = settings.lago_cost_code or None
    return Charge(
        job_id,
        claim,
        owner_key,
        model_group,
        deployment_id,
        usage,
        price,
        billing,
        provider=params.provider if params else None,
        provider_model=params.provider_model if params else None,
        metrics=metrics,
        cost_code=cost_code,
    )


def record_spend(
    sessions: sessionmaker[Session],
    config: FleetConfig,
    settings: CommonSettings,
    job_id: str,
    claim: int,
    billing: Billing,
) -> SpendResult:
    """The recovery path: price and write a claim that ended without its spend row."""
    with sessions() as session:
        job = session.execute(
            select(
                Job.attempts,
                Job.owner_key,
                Job.model,
                Job.served_group,
                Job.deployment_id,
                Job.started_at,
                Job.cost,
                *(getattr(Job, f) for f in (*USAGE_FIELDS, "total_tokens")),
            ).where(Job.id == job_id)
        ).first()
        if job is None or job.attempts != claim or not job.total_tokens:
            return SpendResult(False, None, 0)
        if session.scalar(select(Spend.id).where(Spend.job_id == job_id, Spend.claim == claim)):
            return SpendResult(False, job.cost, 0)
    usage = Usage(
        job.prompt_tokens or 0,
        job.completion_tokens or 0,
        job.total_tokens or 0,
        cached_tokens=job.cached_tokens or 0,
        cache_creation_tokens=job.cache_creation_tokens or 0,
        reasoning_tokens=job.reasoning_tokens or 0,
    )
    group = job.served_group or job.model
    charge = price_claim(
        config, settings, job_id, claim, job.owner_key, group, job.deployment_id, usage, billing
    )
    try:
        with sessions.begin() as session:
            created = charge.write(session, job.started_at or utcnow())
            if created:
                session.execute(
                    update(Job)
                    .where(Job.id == job_id)
                    .values(cost=charge.cost, cost_source=charge.cost_source)
                )
    except IntegrityError:
        created = False  # a concurrent delivery got there first
    if not created:
        return SpendResult(False, charge.cost, 0)
    return SpendResult(True, charge.cost, charge.events, job.owner_key, group)


def unbilled_claims(
    sessions: sessionmaker[Session],
    grace_seconds: float = 60.0,
    window_seconds: float = 3600.0,
    limit: int = 500,
) -> list[tuple[str, int]]:
    """Claims that ended with tokens used but no spend row, as (job id, claim): the
    sweeper sends each a post-call task. Only jobs published within `window_seconds`
    are looked at, so the scan stays on the (status, published_at) index."""
    now = utcnow()
    unbilled = ~exists().where(Spend.job_id == Job.id, Spend.claim == Job.attempts)
    with sessions() as session:
        rows = session.execute(
            select(Job.id, Job.attempts)
            .where(
                Job.status.in_(BILLED_STATUSES),
                Job.published_at >= now - dt.timedelta(seconds=window_seconds),
                Job.finished_at < now - dt.timedelta(seconds=grace_seconds),
                Job.total_tokens > 0,
                unbilled,
            )
            .order_by(Job.id)
            .limit(limit)
        ).all()
    return [(r.id, r.attempts) for r in rows]


def _deployment(
    config: FleetConfig, model_group: str, deployment_id: str | None
) -> Deployment | None:
    for dep in config.deployments_for(model_group):
        if dep.id == deployment_id:
            return dep
    return None
