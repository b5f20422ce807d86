"""Budgets per key and per customer: max spend per period, with a soft alert.

The spend of a budget's current period is a counter in Redis, added to by the post-
call step and rebuilt from the spend rows (the truth) whenever it is missing — after
a Redis restart, or at a new period. The API checks at enqueue, the workers before
each call. Both pass their own Redis client: this module only needs its four
commands, so it stays free of any client library.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Protocol

from sqlalchemy import and_, func, or_, select
from sqlalchemy.orm import Session

from models import redis_keys as rk
from models.accounting import Budget, Spend

__all__ = [
    "BudgetDenial",
    "Counter",
    "add_spend",
    "budgets_for",
    "check_budgets",
    "period_bounds",
    "spent_of",
]

log = logging.getLogger(__name__)


class Counter(Protocol):
    """The Redis commands budgets use (redis-py's sync client has them)."""

    def get(self, name: str) -> Any: ...

    def set(self, name: str, value: Any, *, px: int | None = ..., nx: bool = ...) -> Any: ...

    def incrbyfloat(self, name: str, amount: float) -> Any: ...

    def pexpire(self, name: str, time: int) -> Any: ...


@dataclass(frozen=True, slots=True)
class BudgetDenial:
    budget_id: str
    scope: str
    scope_id: str
    period: str
    max_spend: Decimal
    spent: Decimal
    resets_at: dt.datetime | None

    @property
    def message(self) -> str:
        reset = f"; it resets at {self.resets_at.isoformat()}" if self.resets_at else ""
        return (
            f"budget {self.budget_id} of {self.scope} {self.scope_id} is used up: "
            f"{self.spent} of {self.max_spend} this {self.period}{reset}"
        )


def period_bounds(period: str, now: dt.datetime) -> tuple[dt.datetime, dt.datetime | None]:
    """Start (inclusive) and end of the period containing `now` (UTC)."""
    if period == "day":
        start = now.replace(hour=0, minute=0, second=0, microsecond=0)
        return start, start + dt.timedelta(days=1)
    if period == "month":
        start = now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
        nxt = (start + dt.timedelta(days=32)).replace(day=1)
        return start, nxt
    return dt.datetime(1970, 1, 1, tzinfo=dt.UTC), None


def budgets_for(session: Session, key_id: str | None, customer_id: str | None) -> list[Budget]:
    scopes = [("key", key_id), ("customer", customer_id)]
    wanted = [(scope, sid) for scope, sid in scopes if sid]
    if not wanted:
        return []
    owned = [and_(Budget.scope == scope, Budget.scope_id == sid) for scope, sid in wanted]
    return list(session.scalars(select(Budget).where(or_(*owned))))


def _spent(session: Session, counter: Counter, budget: Budget, now: dt.datetime) -> Decimal:
    start, end = period_bounds(budget.period, now)
    key = rk.budget_counter(budget.id, int(start.timestamp()))
    cached = counter.get(key)
    if cached is not None:
        return Decimal(cached.decode() if isinstance(cached, bytes) else str(cached))
    column = Spend.owner_key if budget.scope == "key" else Spend.customer_id
    total = session.scalar(
        select(func.coalesce(func.sum(Spend.cost), 0)).where(
            column == budget.scope_id, Spend.called_at >= start
        )
    )
    value = Decimal(total or 0)
    counter.set(key, str(value), px=_ttl_ms(end, now), nx=True)
    return value


def spent_of(
    session: Session, counter: Counter, budgets: list[Budget], now: dt.datetime
) -> list[tuple[Budget, Decimal]]:
    """Each budget with its spend of the current period."""
    return [(budget, _spent(session, counter, budget, now)) for budget in budgets]


def check_budgets(
    session: Session, counter: Counter, budgets: list[Budget], now: dt.datetime
) -> BudgetDenial | None:
    for budget in budgets:
        spent = _spent(session, counter, budget, now)
        if spent >= budget.max_spend:
            _, end = period_bounds(budget.period, now)
            return BudgetDenial(
                budget.id,
                budget.scope,
                budget.scope_id,
                budget.period,
                budget.max_spend,
                spent,
                end,
            )
    return None


def add_spend(
    session: Session, counter: Counter, budgets: list[Budget], cost: Decimal, now: dt.datetime
) -> list[str]:
    """Add a call's cost (its spend row already committed) to every budget it falls
    under; returns the ids of budgets whose soft limit this call crossed (each
    reported once a period)."""
    alerts = []
    for budget in budgets:
        start, end = period_bounds(budget.period, now)
        key = rk.budget_counter(budget.id, int(start.timestamp()))
        if counter.get(key) is None:
            # Rebuilt from the spend rows, which already hold this call's row.
            spent_after = _spent(session, counter, budget, now)
        else:
            spent_after = Decimal(str(counter.incrbyfloat(key, float(cost))))
            counter.pexpire(key, _ttl_ms(end, now))
        soft = budget.soft_limit
        if soft is not None and spent_after - cost < soft <= spent_after:
            marker = rk.budget_alert(budget.id, int(start.timestamp()))
            if counter.set(marker, "1", px=_ttl_ms(end, now), nx=True):
                log.warning("budget %s passed its soft limit %s", budget.id, soft)
                alerts.append(budget.id)
    return alerts


def _ttl_ms(end: dt.datetime | None, now: dt.datetime) -> int:
    if end is None:
        return 30 * rk.BUDGET_TTL_EXTRA_MS
    return int((end - now).total_seconds() * 1000) + rk.BUDGET_TTL_EXTRA_MS
