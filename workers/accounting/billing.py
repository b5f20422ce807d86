"""Who pays for a job: the key that created it, its customer, the Lago subscription
usage is reported to (the key's own mapping wins over its customer's), and the budgets
its spend counts against.

Every finished job needs its payer, and most jobs of a fleet belong to a few keys, so a
worker process keeps each owner's payer for a few seconds (`PayerCache`, one per process
in its WorkerContext) instead of asking the database per job. A new budget, or a key's new
subscription, is seen by workers within that time; the API checks budgets at enqueue
without any cache."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import Row, select
from sqlalchemy.orm import Session, sessionmaker

from models.accounting import Budget
from models.budgets import budgets_for
from models.tables import Job
from models.tenancy import ApiKey, Customer
from workers.accounting.post_call import Billing

__all__ = ["Payer", "PayerCache", "billing_for"]

#: How long a worker trusts an owner's payer (seconds).
PAYER_TTL_SECONDS = 5.0
#: Owners remembered per process; past this the cache starts afresh.
PAYER_CACHE_SIZE = 10_000


_BILLING = select(
    ApiKey.customer_id, ApiKey.external_subscription_id, Customer.external_subscription_id
)


@dataclass(frozen=True, slots=True)
class Payer:
    billing: Billing
    #: Loaded and detached: read-only use (ids, periods, limits).
    budgets: tuple[Budget, ...] = ()


def billing_for(sessions: sessionmaker[Session], job_id: str) -> Billing:
    """A job's payer, read now (one query; no cache)."""
    with sessions() as session:
        row = session.execute(
            _BILLING.select_from(Job)
            .join(ApiKey, ApiKey.id == Job.owner_key)
            .outerjoin(Customer, Customer.id == ApiKey.customer_id)
            .where(Job.id == job_id)
        ).first()
    return _billing(row)


def lookup_payer(sessions: sessionmaker[Session], owner_key: str) -> Payer:
    with sessions() as session:
        row = session.execute(
            _BILLING.select_from(ApiKey)
            .outerjoin(Customer, Customer.id == ApiKey.customer_id)
            .where(ApiKey.id == owner_key)
        ).first()
        billing = _billing(row)
        return Payer(billing, tuple(budgets_for(session, owner_key, billing.customer_id)))


def _billing(row: Row[str | None, str | None, str | None] | None) -> Billing:
    if row is None:  # the master key, or a key since deleted
        return Billing()
    customer_id, key_subscription, customer_subscription = row
    return Billing(customer_id, key_subscription or customer_subscription)


class PayerCache:
    """Payers by owner key, each trusted for `ttl` seconds. Threads of one process
    share it; two threads missing at once both look up, which is harmless."""

    def __init__(
        self,
        sessions: sessionmaker[Session],
        ttl: float = PAYER_TTL_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._sessions = sessions
        self._ttl = ttl
        self._clock = clock
        self._entries: dict[str, tuple[float, Payer]] = {}

    def get(self, owner_key: str) -> Payer:
        now = self._clock()
        entry = self._entries.get(owner_key)
        if entry is not None and entry[0] > now:
            return entry[1]
        payer = lookup_payer(self._sessions, owner_key)
        if len(self._entries) >= PAYER_CACHE_SIZE:
            self._entries = {}
        self._entries[owner_key] = (now + self._ttl, payer)
        return payer
