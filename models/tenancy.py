"""Tenants: virtual API keys, teams and customers.

Every job, file and batch carries `owner_key`: the id of the key that created it
(`master` for the master key). A key belongs to a team or a customer (or neither);
its limits and model access travel with it into each request as a `KeyGrant`.

The key itself is never stored: only HMAC-SHA256(server secret, key) in `key_hash`,
and a short, non-secret `prefix` to tell keys apart in listings.

Budgets (max spend per period) belong to the accounting issue: they will be columns
of `api_keys` added by its migration and checked beside the rate limits at intake
(`producer_api.access.admit_job`).
"""

from __future__ import annotations

import datetime as dt
import fnmatch
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import JSON, Float, ForeignKey, Index, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from models.tables import Base, UTCDateTime, utcnow

__all__ = [
    "MASTER_OWNER",
    "ApiKey",
    "Customer",
    "KeyGrant",
    "Team",
    "model_allowed",
]

#: The owner recorded on everything the master key creates.
MASTER_OWNER = "master"


class Team(Base):
    __tablename__ = "teams"

    id: Mapped[str] = mapped_column(String(48), primary_key=True)
    name: Mapped[str] = mapped_column(String(255), unique=True)
    #: The fair share of the jobs (models.fair_share); None: as the owner, then default.
    tier: Mapped[str | None] = mapped_column(String(16))
    weight: Mapped[float | None] = mapped_column(Float)
    meta: Mapped[dict[str, Any] | None] = mapped_column("metadata", JSON)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)


class Customer(Base):
    """A paying customer; usage of its keys is billed to its Lago subscription."""

    __tablename__ = "customers"

    id: Mapped[str] = mapped_column(String(48), primary_key=True)
    name: Mapped[str] = mapped_column(String(255), unique=True)
    external_subscription_id: Mapped[str | None] = mapped_column(String(255))
    #: The fair share of the jobs (models.fair_share); None: as the owner, then default.
    tier: Mapped[str | None] = mapped_column(String(16))
    weight: Mapped[float | None] = mapped_column(Float)
    meta: Mapped[dict[str, Any] | None] = mapped_column("metadata", JSON)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)


class ApiKey(Base):
    """A virtual key. Limits are None when unlimited."""

    __tablename__ = "api_keys"

    id: Mapped[str] = mapped_column(String(48), primary_key=True)
    #: HMAC-SHA256 of the key with the server secret, hex.
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    #: The first characters of the key, for display ("sk-fleet-AbCd1234").
    prefix: Mapped[str] = mapped_column(String(32))
    alias: Mapped[str | None] = mapped_column(String(255))
    team_id: Mapped[str | None] = mapped_column(String(48), ForeignKey("teams.id"))
    customer_id: Mapped[str | None] = mapped_column(String(48), ForeignKey("customers.id"))
    #: fnmatch patterns of the model groups the key may use; None = every group.
    models: Mapped[list[str] | None] = mapped_column(JSON)
    rpm: Mapped[int | None] = mapped_column(Integer)
    tpm: Mapped[int | None] = mapped_column(Integer)
    #: Interactive jobs queued or running at once.
    max_parallel_jobs: Mapped[int | None] = mapped_column(Integer)
    #: Interactive jobs run at most at this priority (0-9); higher asks are lowered.
    max_priority: Mapped[int | None] = mapped_column(Integer)
    #: Batch lines queued or running at once, over all the key's batches.
    max_batch_lines: Mapped[int | None] = mapped_column(Integer)
    #: Seconds a response is kept in the response cache; None = no caching by default.
    cache_ttl: Mapped[int | None] = mapped_column(Integer)
    #: The fair share of the jobs (models.fair_share); None: as the owner, then default.
    tier: Mapped[str | None] = mapped_column(String(16))
    weight: Mapped[float | None] = mapped_column(Float)
    external_subscription_id: Mapped[str | None] = mapped_column(String(255))
    meta: Mapped[dict[str, Any] | None] = mapped_column("metadata", JSON)
    expires_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    revoked_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    rotated_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)

    __table_args__ = (
        Index("ix_api_keys_team", "team_id"),
        Index("ix_api_keys_customer", "customer_id"),
    )

    def grant(self) -> KeyGrant:
        return KeyGrant(
            key_id=self.id,
            alias=self.alias,
            team_id=self.team_id,
            customer_id=self.customer_id,
            models=tuple(self.models) if self.models is not None else None,
            rpm=self.rpm,
            tpm=self.tpm,
            max_parallel_jobs=self.max_parallel_jobs,
            max_priority=self.max_priority,
            max_batch_lines=self.max_batch_lines,
            cache_ttl=self.cache_ttl,
            external_subscription_id=self.external_subscription_id,
        )


@dataclass(frozen=True, slots=True)
class KeyGrant:
    """What a virtual key allows, as read when the request authenticated."""

    key_id: str
    alias: str | None = None
    team_id: str | None = None
    customer_id: str | None = None
    models: tuple[str, ...] | None = None
    rpm: int | None = None
    tpm: int | None = None
    max_parallel_jobs: int | None = None
    max_priority: int | None = None
    max_batch_lines: int | None = None
    cache_ttl: int | None = None
    external_subscription_id: str | None = None


def model_allowed(patterns: Iterable[str] | None, *names: str) -> bool:
    """True when any of `names` (the requested model, its alias target) matches a
    pattern; `None` patterns allow every model. Case-sensitive, like group names."""
    if patterns is None:
        return True
    pats = list(patterns)
    return any(fnmatch.fnmatchcase(name, p) for name in names if name for p in pats)
