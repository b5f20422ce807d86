"""Money and usage after each call: spend rows (one per job claim that used tokens)
and the outbox of usage events drained to Lago."""

from __future__ import annotations

import datetime as dt
import enum
from collections.abc import Sequence
from decimal import Decimal
from typing import Any, Protocol

from sqlalchemy import (
    JSON,
    ForeignKey,
    Index,
    Insert,
    Integer,
    Numeric,
    String,
    Text,
    UniqueConstraint,
    insert,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Mapped, Session, mapped_column

from models.tables import Base, UTCDateTime, utcnow

__all__ = [
    "Budget",
    "ChargeRows",
    "OutboxStatus",
    "Spend",
    "UsageOutbox",
    "insert_new_spend",
    "money",
    "write_charges",
]


def money(value: Decimal) -> str:
    """An amount as plain decimal digits: "0", "0.0000125", never "0E-10"."""
    return format(value.normalize(), "f")


class Spend(Base):
    """What one claim of a job cost. Unique per (job, claim): a redelivered post-call
    task finds the row and changes nothing."""

    __tablename__ = "spend"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(String(48), ForeignKey("jobs.id", ondelete="CASCADE"))
    claim: Mapped[int] = mapped_column(Integer)
    owner_key: Mapped[str] = mapped_column(String(64))
    customer_id: Mapped[str | None] = mapped_column(String(64))
    model_group: Mapped[str] = mapped_column(String(255))
    provider: Mapped[str | None] = mapped_column(String(64))
    provider_model: Mapped[str | None] = mapped_column(String(255))
    deployment_id: Mapped[str | None] = mapped_column(String(255))
    prompt_tokens: Mapped[int] = mapped_column(Integer, default=0)
    completion_tokens: Mapped[int] = mapped_column(Integer, default=0)
    cached_tokens: Mapped[int] = mapped_column(Integer, default=0)
    cache_creation_tokens: Mapped[int] = mapped_column(Integer, default=0)
    reasoning_tokens: Mapped[int] = mapped_column(Integer, default=0)
    #: None when no price is known: never guessed.
    cost: Mapped[Decimal | None] = mapped_column(Numeric(20, 10))
    cost_source: Mapped[str | None] = mapped_column(String(32))
    called_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)

    __table_args__ = (
        UniqueConstraint("job_id", "claim", name="uq_spend_job_claim"),
        Index("ix_spend_owner_called", "owner_key", "called_at"),
        Index("ix_spend_called", "called_at"),
    )


class OutboxStatus(enum.StrEnum):
    PENDING = "pending"
    SENT = "sent"
    DEAD = "dead"


class UsageOutbox(Base):
    """One usage event for Lago, written in the same transaction as its spend row.
    `transaction_id` is derived from job, claim and metric code, so a resend is
    recognised by Lago (and by us) as the same event."""

    __tablename__ = "usage_outbox"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    transaction_id: Mapped[str] = mapped_column(String(160), unique=True)
    external_subscription_id: Mapped[str] = mapped_column(String(255))
    code: Mapped[str] = mapped_column(String(128))
    timestamp: Mapped[int] = mapped_column(Integer)
    properties: Mapped[dict[str, Any]] = mapped_column(JSON)
    precise_total_amount_cents: Mapped[str | None] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(16), default=OutboxStatus.PENDING)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_error: Mapped[str | None] = mapped_column(Text)
    next_attempt_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    sent_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)

    __table_args__ = (Index("ix_usage_outbox_status_next", "status", "next_attempt_at"),)


class ChargeRows(Protocol):
    """A claim's spend row and usage events, ready to insert."""

    @property
    def job_id(self) -> str: ...

    @property
    def claim(self) -> int: ...

    def spend_row(self, called_at: dt.datetime) -> dict[str, Any]: ...

    def outbox_rows(self, called_at: dt.datetime) -> list[dict[str, Any]]: ...


def insert_new_spend(session: Session) -> Insert:
    """INSERT of spend rows that skips a claim whose row exists."""
    dialect = session.get_bind().dialect.name
    if dialect == "postgresql":
        return postgresql.insert(Spend).on_conflict_do_nothing()
    if dialect == "sqlite":
        return sqlite.insert(Spend).on_conflict_do_nothing()
    return insert(Spend)


def write_charges(
    session: Session, charges: Sequence[tuple[ChargeRows, dt.datetime]]
) -> set[tuple[str, int]]:
    """Insert the spend rows of several claims (each with its call's time) and the usage
    events of the rows that were new, in one statement each. Returns the (job, claim)
    pairs written; a claim that had its spend row already writes nothing."""
    if not charges:
        return set()
    conn = session.connection()
    new = conn.execute(
        insert_new_spend(session).returning(Spend.job_id, Spend.claim),
        [charge.spend_row(called_at) for charge, called_at in charges],
    )
    written = {(row.job_id, row.claim) for row in new}
    events = [
        event
        for charge, called_at in charges
        if (charge.job_id, charge.claim) in written
        for event in charge.outbox_rows(called_at)
    ]
    if events:
        conn.execute(insert(UsageOutbox), events)
    return written


class Budget(Base):
    """Max spend per period for a key or a customer, with an optional soft alert."""

    __tablename__ = "budgets"

    id: Mapped[str] = mapped_column(String(48), primary_key=True)
    scope: Mapped[str] = mapped_column(String(16))  # "key" | "customer"
    scope_id: Mapped[str] = mapped_column(String(64))
    period: Mapped[str] = mapped_column(String(16))  # "day" | "month" | "total"
    max_spend: Mapped[Decimal] = mapped_column(Numeric(20, 10))
    soft_limit: Mapped[Decimal | None] = mapped_column(Numeric(20, 10))
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)

    __table_args__ = (Index("ix_budgets_scope", "scope", "scope_id"),)
