"""Teams and customers across the HTTP border (admin only)."""

from __future__ import annotations

import datetime as dt
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

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
]


class TeamCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=255)
    metadata: dict[str, Any] | None = None


class TeamUpdate(BaseModel):
    """Only the fields sent change."""

    model_config = ConfigDict(extra="forbid")

    name: str | None = Field(default=None, min_length=1, max_length=255)
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
    metadata: dict[str, Any] | None
    created_at: int
    updated_at: int

    @classmethod
    def from_row(cls, row: Team) -> TeamPublic:
        return cls(
            id=row.id,
            name=row.name,
            metadata=row.meta,
            created_at=_ts(row.created_at),
            updated_at=_ts(row.updated_at),
        )


class CustomerPublic(BaseModel):
    id: str
    object: Literal["customer"] = "customer"
    name: str
    external_subscription_id: str | None
    metadata: dict[str, Any] | None
    created_at: int
    updated_at: int

    @classmethod
    def from_row(cls, row: Customer) -> CustomerPublic:
        return cls(
            id=row.id,
            name=row.name,
            external_subscription_id=row.external_subscription_id,
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
