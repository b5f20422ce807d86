"""Teams and customers across the HTTP border (admin only)."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from models.fair_share import MAX_WEIGHT, MIN_WEIGHT, Tier
from models.tenancy import Customer, Team

__all__ = [
    "CustomerCreate",
    "CustomerPublic",
    "CustomerUpdate",
    "CustomersPublic",
    "TeamCreate",
    "TeamPublic",
    "TeamUpdate",
    "TeamsPublic",
    "Weight",
]

Weight = Annotated[float, Field(ge=MIN_WEIGHT, le=MAX_WEIGHT)]
TIER_HELP = (
    "Fair-share tier: production before default before batch when capacity is short. "
    "Null: as the owner (team or customer), else default."
)
WEIGHT_HELP = (
    "Fair-share weight within the tier (default 1): a tenant of weight 3 is let "
    "through three times as much as one of weight 1 when capacity is short."
)


class TeamCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=255)
    tier: Tier | None = Field(default=None, description=TIER_HELP)
    weight: Weight | None = Field(default=None, description=WEIGHT_HELP)
    metadata: dict[str, Any] | None = None


class TeamUpdate(BaseModel):
    """Only the fields sent change."""

    model_config = ConfigDict(extra="forbid")

    name: str | None = Field(default=None, min_length=1, max_length=255)
    tier: Tier | None = Field(default=None, description=TIER_HELP)
    weight: Weight | None = Field(default=None, description=WEIGHT_HELP)
    metadata: dict[str, Any] | None = None

    @field_validator("name")
    @classmethod
    def _name_kept(cls, value: str | None) -> str | None:
        if value is None:
            raise ValueError("a name cannot be cleared")
        return value


class CustomerCreate(TeamCreate):
    external_subscription_id: str | None = Field(
        default=None, max_length=255, description="The customer's Lago subscription."
    )


class CustomerUpdate(TeamUpdate):
    external_subscription_id: str | None = Field(default=None, max_length=255)


class TeamPublic(BaseModel):
    id: str
    object: Literal["team"] = "team"
    name: str
    tier: str | None
    weight: float | None
    metadata: dict[str, Any] | None
    created_at: int
    updated_at: int

    @classmethod
    def from_row(cls, row: Team) -> TeamPublic:
        return cls(
            id=row.id,
            name=row.name,
            tier=row.tier,
            weight=row.weight,
            metadata=row.meta,
            created_at=_ts(row.created_at),
            updated_at=_ts(row.updated_at),
        )


class CustomerPublic(BaseModel):
    id: str
    object: Literal["customer"] = "customer"
    name: str
    external_subscription_id: str | None
    tier: str | None
    weight: float | None
    metadata: dict[str, Any] | None
    created_at: int
    updated_at: int

    @classmethod
    def from_row(cls, row: Customer) -> CustomerPublic:
        return cls(
            id=row.id,
            name=row.name,
            external_subscription_id=row.external_subscription_id,
            tier=row.tier,
            weight=row.weight,
            metadata=row.meta,
            created_at=_ts(row.created_at),
            updated_at=_ts(row.updated_at),
        )


class TeamsPublic(BaseModel):
    object: Literal["list"] = "list"
    data: list[TeamPublic]
    first_id: str | None
    last_id: str | None
    has_more: bool


class CustomersPublic(BaseModel):
    object: Literal["list"] = "list"
    data: list[CustomerPublic]
    first_id: str | None
    last_id: str | None
    has_more: bool


def _ts(value: dt.datetime) -> int:
    return int(value.timestamp())
