"""/v1/budgets (admin): max spend per period for a key or a customer."""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import delete, select

from models.accounting import Budget
from models.ids import new_id
from models.tables import utcnow
from producer_api.auth import Caller, require_key
from producer_api.border import BorderRoute
from producer_api.context import ApiContext, get_context
from producer_api.errors import API_ERRORS, BODY_ERRORS, ApiError

router = APIRouter(
    route_class=BorderRoute, prefix="/v1/budgets", tags=["admin"], responses=API_ERRORS
)

Ctx = Annotated[ApiContext, Depends(get_context)]
Auth = Annotated[Caller, Depends(require_key)]


class BudgetCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    scope: Literal["key", "customer"]
    scope_id: str = Field(min_length=1, max_length=64)
    period: Literal["day", "month", "total"] = "month"
    max_spend: Decimal = Field(gt=0, max_digits=20, decimal_places=10)
    soft_limit: Decimal | None = Field(default=None, gt=0, max_digits=20, decimal_places=10)


class BudgetPublic(BaseModel):
    id: str
    object: Literal["budget"] = "budget"
    scope: str
    scope_id: str
    period: str
    max_spend: str
    soft_limit: str | None
    created_at: int

    @classmethod
    def from_row(cls, row: Budget) -> BudgetPublic:
        return cls(
            id=row.id,
            scope=row.scope,
            scope_id=row.scope_id,
            period=row.period,
            max_spend=str(row.max_spend),
            soft_limit=None if row.soft_limit is None else str(row.soft_limit),
            created_at=int(row.created_at.timestamp()),
        )


def _admin(caller: Caller) -> None:
    if not caller.is_admin:
        raise ApiError(403, "managing budgets needs the admin key", code="forbidden")


@router.post("", response_model=BudgetPublic, responses=BODY_ERRORS)
def create_budget(body: BudgetCreate, ctx: Ctx, caller: Auth) -> BudgetPublic:
    _admin(caller)
    if body.soft_limit is not None and body.soft_limit > body.max_spend:
        raise ApiError(400, "soft_limit must not exceed max_spend", param="soft_limit")
    row = Budget(id=new_id("bud"), created_at=utcnow(), **body.model_dump())
    with ctx.sessions.begin() as session:
        session.add(row)
    return BudgetPublic.from_row(row)


@router.get("")
def list_budgets(ctx: Ctx, caller: Auth) -> dict[str, Any]:
    _admin(caller)
    with ctx.sessions() as session:
        rows = list(session.scalars(select(Budget).order_by(Budget.id)))
    return {"object": "list", "data": [BudgetPublic.from_row(r) for r in rows]}


@router.delete("/{budget_id}")
def delete_budget(budget_id: str, ctx: Ctx, caller: Auth) -> dict[str, Any]:
    _admin(caller)
    with ctx.sessions.begin() as session:
        deleted = session.scalars(
            delete(Budget).where(Budget.id == budget_id).returning(Budget.id)
        ).first()
    if deleted is None:
        raise ApiError(404, f"No budget with id {budget_id!r}", param="budget_id")
    return {"id": budget_id, "object": "budget", "deleted": True}
