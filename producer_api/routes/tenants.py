"""/v1/teams and /v1/customers (admin): who keys belong to. A customer carries the
Lago subscription its usage is billed to."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query

from models.schemas.tenants import (
    CustomerCreate,
    CustomerPublic,
    CustomersPublic,
    CustomerUpdate,
    TeamCreate,
    TeamPublic,
    TeamsPublic,
    TeamUpdate,
)
from models.tenancy import Customer, Team
from producer_api.auth import Caller, require_admin
from producer_api.border import BorderRoute
from producer_api.context import ApiContext, get_context
from producer_api.errors import API_ERRORS, BODY_ERRORS, CONFLICT_ERRORS
from producer_api.tenants_service import create_tenant, get_tenant, list_tenants, update_tenant

__all__ = ["customers", "teams"]

teams = APIRouter(route_class=BorderRoute, prefix="/v1/teams", tags=["admin"], responses=API_ERRORS)
customers = APIRouter(
    route_class=BorderRoute, prefix="/v1/customers", tags=["admin"], responses=API_ERRORS
)

Ctx = Annotated[ApiContext, Depends(get_context)]
Admin = Annotated[Caller, Depends(require_admin)]
After = Annotated[str | None, Query(description="Cursor: the last id of a page.")]
Limit = Annotated[int, Query(ge=1, le=100)]


@teams.post(
    "", status_code=201, response_model=TeamPublic, responses={**BODY_ERRORS, **CONFLICT_ERRORS}
)
def create_team(body: TeamCreate, ctx: Ctx, _: Admin) -> TeamPublic:
    return TeamPublic.from_row(create_tenant(ctx, Team, body.model_dump()))


@teams.get("", response_model=TeamsPublic)
def list_teams(ctx: Ctx, _: Admin, after: After = None, limit: Limit = 20) -> TeamsPublic:
    rows = list_tenants(ctx, Team, after, limit)
    page = [TeamPublic.from_row(r) for r in rows[:limit]]
    first, last = (page[0].id, page[-1].id) if page else (None, None)
    return TeamsPublic(data=page, first_id=first, last_id=last, has_more=len(rows) > limit)


@teams.get("/{team_id}", response_model=TeamPublic)
def get_team(team_id: str, ctx: Ctx, _: Admin) -> TeamPublic:
    return TeamPublic.from_row(get_tenant(ctx, Team, team_id))


@teams.patch("/{team_id}", response_model=TeamPublic, responses={**BODY_ERRORS, **CONFLICT_ERRORS})
def update_team(team_id: str, body: TeamUpdate, ctx: Ctx, _: Admin) -> TeamPublic:
    values = body.model_dump(exclude_unset=True)
    return TeamPublic.from_row(update_tenant(ctx, Team, team_id, values))


@customers.post(
    "", status_code=201, response_model=CustomerPublic, responses={**BODY_ERRORS, **CONFLICT_ERRORS}
)
def create_customer(body: CustomerCreate, ctx: Ctx, _: Admin) -> CustomerPublic:
    return CustomerPublic.from_row(create_tenant(ctx, Customer, body.model_dump()))


@customers.get("", response_model=CustomersPublic)
def list_customers(ctx: Ctx, _: Admin, after: After = None, limit: Limit = 20) -> CustomersPublic:
    rows = list_tenants(ctx, Customer, after, limit)
    page = [CustomerPublic.from_row(r) for r in rows[:limit]]
    first, last = (page[0].id, page[-1].id) if page else (None, None)
    return CustomersPublic(data=page, first_id=first, last_id=last, has_more=len(rows) > limit)


@customers.get("/{customer_id}", response_model=CustomerPublic)
def get_customer(customer_id: str, ctx: Ctx, _: Admin) -> CustomerPublic:
    return CustomerPublic.from_row(get_tenant(ctx, Customer, customer_id))


@customers.patch(
    "/{customer_id}", response_model=CustomerPublic, responses={**BODY_ERRORS, **CONFLICT_ERRORS}
)
def update_customer(customer_id: str, body: CustomerUpdate, ctx: Ctx, _: Admin) -> CustomerPublic:
    values = body.model_dump(exclude_unset=True)
    return CustomerPublic.from_row(update_tenant(ctx, Customer, customer_id, values))
