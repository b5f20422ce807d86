"""/v1/spend: what the fleet's calls cost, grouped by key, customer, model,
deployment or day, from the spend rows (Decimal, NUMERIC in SQL). A tenant sees its
own spend; the admin sees everyone's."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query
from pydantic import BaseModel
from sqlalchemy import ColumnElement, func, select

from models.accounting import Spend, money
from models.wire import BoundedDatetime
from producer_api.auth import Caller, require_key
from producer_api.border import BorderRoute
from producer_api.context import ApiContext, get_context
from producer_api.errors import API_ERRORS

router = APIRouter(
    route_class=BorderRoute, prefix="/v1/spend", tags=["spend"], responses=API_ERRORS
)

GroupBy = Literal["key", "customer", "model", "deployment", "day"]


class SpendGroup(BaseModel):
    group: str | None
    requests: int
    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int
    reasoning_tokens: int
    cost: str
    unpriced_requests: int


class SpendReport(BaseModel):
    object: Literal["spend_report"] = "spend_report"
    group_by: GroupBy
    start: dt.datetime | None
    end: dt.datetime | None
    data: list[SpendGroup]
    total_cost: str


def _group_column(group_by: GroupBy) -> ColumnElement[Any]:
    columns: dict[str, Any] = {
        "key": Spend.owner_key,
        "customer": Spend.customer_id,
        "model": Spend.model_group,
        "deployment": Spend.deployment_id,
        "day": func.date(Spend.called_at),
    }
    column: ColumnElement[Any] = columns[group_by]
    return column


@router.get("", response_model=SpendReport)
def spend_report(
    ctx: Annotated[ApiContext, Depends(get_context)],
    caller: Annotated[Caller, Depends(require_key)],
    group_by: GroupBy = "model",
    start: Annotated[
        BoundedDatetime | None, Query(description="From (ISO 8601, with a timezone).")
    ] = None,
    end: Annotated[
        BoundedDatetime | None, Query(description="Until, exclusive (ISO 8601, with a timezone).")
    ] = None,
) -> SpendReport:
    column = _group_column(group_by).label("grp")
    stmt = (
        select(
            column,
            func.count(),
            func.coalesce(func.sum(Spend.prompt_tokens), 0),
            func.coalesce(func.sum(Spend.completion_tokens), 0),
            func.coalesce(func.sum(Spend.cached_tokens), 0),
            func.coalesce(func.sum(Spend.reasoning_tokens), 0),
            func.coalesce(func.sum(Spend.cost), 0),
            func.count().filter(Spend.cost.is_(None)),
        )
        .group_by(column)
        .order_by(column)
    )
    if not caller.is_admin:
        stmt = stmt.where(Spend.owner_key == caller.owner)
    if start is not None:
        stmt = stmt.where(Spend.called_at >= start)
    if end is not None:
        stmt = stmt.where(Spend.called_at < end)
    with ctx.sessions() as session:
        rows = session.execute(stmt).all()
    data = [
        SpendGroup(
            group=None if r[0] is None else str(r[0]),
            requests=r[1],
            prompt_tokens=int(r[2]),
            completion_tokens=int(r[3]),
            cached_tokens=int(r[4]),
            reasoning_tokens=int(r[5]),
            cost=money(Decimal(r[6])),
            unpriced_requests=int(r[7]),
        )
        for r in rows
    ]
    total = sum((Decimal(g.cost) for g in data), Decimal(0))
    return SpendReport(group_by=group_by, start=start, end=end, data=data, total_cost=money(total))
