"""Virtual keys across the HTTP border (admin only): `KeyCreate` / `KeyUpdate` in,
`KeyPublic` out, and `KeyCreated` — the one answer that carries the key itself."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from models.fair_share import Tier
from models.schemas.tenants import TIER_HELP, WEIGHT_HELP, Weight
from models.tables import utcnow
from models.tenancy import ApiKey
from models.wire import MAX_KEY_DURATION, BoundedDatetime, parse_duration

__all__ = ["KeyCreate", "KeyCreated", "KeyPublic", "KeyUpdate", "KeysPublic", "key_status"]

#: Stored in 32-bit INTEGER columns: a larger value is a 422 naming the field.
INT32_MAX = 2_147_483_647
Limit = Annotated[int, Field(ge=1, le=INT32_MAX)]
Pattern = Annotated[str, Field(min_length=1, max_length=255)]


class KeyUpdate(BaseModel):
    """Every field optional; a field sent as null is cleared (unlimited, no expiry). An
    unknown field is an error: a typo (`expires` for `duration`) must not make a key
    that never expires."""

    model_config = ConfigDict(extra="forbid")

    alias: str | None = Field(default=None, max_length=255)
    team_id: str | None = Field(default=None, description="A team's id or name.")
    customer_id: str | None = Field(default=None, description="A customer's id or name.")
    models: list[Pattern] | None = Field(
        default=None,
        max_length=256,
        description="Model groups the key may use; fnmatch wildcards ('gpt-4o*'). "
        "Null: every group.",
    )
    rpm: Limit | None = Field(default=None, description="Interactive jobs per minute.")
    tpm: Limit | None = Field(default=None, description="Tokens per minute (interactive).")
    max_parallel_jobs: Limit | None = Field(
        default=None, description="Interactive jobs queued or running at once."
    )
    max_priority: int | None = Field(
        default=None, ge=0, le=9, description="Interactive jobs run at most at this priority."
    )
    max_batch_lines: int | None = Field(
        default=None, ge=0, le=INT32_MAX, description="Batch lines queued or running at once."
    )
    cache_ttl: int | None = Field(
        default=None, ge=0, le=30 * 86400, description="Cache every response this long (s)."
    )
    expires_at: BoundedDatetime | None = None
    duration: str | None = Field(
        default=None,
        max_length=16,
        description="Expiry relative to now, e.g. '30d' (instead of expires_at).",
    )
    external_subscription_id: str | None = Field(
        default=None, max_length=255, description="Lago subscription billed for this key."
    )
    tier: Tier | None = Field(default=None, description=TIER_HELP)
    weight: Weight | None = Field(default=None, description=WEIGHT_HELP)
    metadata: dict[str, Any] | None = None

    @field_validator("duration")
    @classmethod
    def _duration(cls, value: str | None) -> str | None:
        if value is not None:
            parse_duration(value, MAX_KEY_DURATION)
        return value

    @model_validator(mode="after")
    def _one_owner_one_expiry(self) -> KeyUpdate:
        if self.team_id is not None and self.customer_id is not None:
            raise ValueError("a key belongs to a team or a customer, not both")
        if self.expires_at is not None and self.duration is not None:
            raise ValueError("give either `expires_at` or `duration`, not both")
        return self

    def changes(self) -> dict[str, Any]:
        """The columns to write: only the fields sent, `duration` as `expires_at`."""
        values = self.model_dump(exclude_unset=True, exclude={"duration", "metadata"})
        if "metadata" in self.model_fields_set:
            values["meta"] = self.metadata
        if self.duration is not None:
            values["expires_at"] = utcnow() + parse_duration(self.duration, MAX_KEY_DURATION)
        return values


class KeyCreate(KeyUpdate):
    pass


KeyStatus = Literal["active", "revoked", "expired"]


class KeyPublic(BaseModel):
    id: str
    object: Literal["api_key"] = "api_key"
    alias: str | None
    key_prefix: str = Field(description="The key's first characters; not a secret.")
    status: KeyStatus
    team_id: str | None
    customer_id: str | None
    models: list[str] | None
    rpm: int | None
    tpm: int | None
    max_parallel_jobs: int | None
    max_priority: int | None
    max_batch_lines: int | None
    cache_ttl: int | None
    external_subscription_id: str | None
    tier: str | None
    weight: float | None
    metadata: dict[str, Any] | None
    expires_at: int | None
    revoked_at: int | None
    rotated_at: int | None
    created_at: int
    updated_at: int

    @classmethod
    def from_row(cls, row: ApiKey) -> KeyPublic:
        return cls(**_public_fields(row))


class KeyCreated(KeyPublic):
    key: str = Field(description="The key. Shown once, at create and rotate: store it now.")

    @classmethod
    def with_key(cls, row: ApiKey, key: str) -> KeyCreated:
        return cls(**_public_fields(row), key=key)


class KeysPublic(BaseModel):
    object: Literal["list"] = "list"
    data: list[KeyPublic]
    first_id: str | None
    last_id: str | None
    has_more: bool


def key_status(row: ApiKey, now: dt.datetime | None = None) -> KeyStatus:
    if row.revoked_at is not None:
        return "revoked"
    if row.expires_at is not None and row.expires_at <= (now or utcnow()):
        return "expired"
    return "active"


def _public_fields(row: ApiKey) -> dict[str, Any]:
    return {
        "id": row.id,
        "alias": row.alias,
        "key_prefix": row.prefix,
        "status": key_status(row),
        "team_id": row.team_id,
        "customer_id": row.customer_id,
        "models": row.models,
        "rpm": row.rpm,
        "tpm": row.tpm,
        "max_parallel_jobs": row.max_parallel_jobs,
        "max_priority": row.max_priority,
        "max_batch_lines": row.max_batch_lines,
        "cache_ttl": row.cache_ttl,
        "external_subscription_id": row.external_subscription_id,
        "tier": row.tier,
        "weight": row.weight,
        "metadata": row.meta,
        "expires_at": _ts(row.expires_at),
        "revoked_at": _ts(row.revoked_at),
        "rotated_at": _ts(row.rotated_at),
        "created_at": _ts(row.created_at) or 0,
        "updated_at": _ts(row.updated_at) or 0,
    }


def _ts(value: dt.datetime | None) -> int | None:
    return int(value.timestamp()) if value is not None else None
