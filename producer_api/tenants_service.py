"""Teams and customers: the same four operations on two small tables."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from models.ids import new_id
from models.tables import utcnow
from models.tenancy import Customer, Team
from producer_api.context import ApiContext
from producer_api.errors import ApiError

__all__ = ["create_tenant", "get_tenant", "list_tenants", "update_tenant"]

T = TypeVar("T", Team, Customer)

ID_PREFIX = {Team: "team", Customer: "cust"}
NOUN = {Team: "team", Customer: "customer"}


def create_tenant(ctx: ApiContext, table: type[T], values: dict[str, Any]) -> T:
    now = utcnow()
    row = table(id=new_id(ID_PREFIX[table]), created_at=now, updated_at=now)
    _assign(row, values)
    with _unique_name(table, values.get("name")), ctx.sessions.begin() as session:
        session.add(row)
    return row


def get_tenant(ctx: ApiContext, table: type[T], tenant_id: str) -> T:
    with ctx.sessions() as session:
        row = session.get(table, tenant_id)
    if row is None:
        noun = NOUN[table]
        raise ApiError(
            404, f"No {noun} with id {tenant_id!r}", param=f"{noun}_id", code="not_found"
        )
    return row


def list_tenants(ctx: ApiContext, table: type[T], after: str | None, limit: int) -> list[T]:
    """Newest first, `limit + 1` rows (the extra one says there is more)."""
    stmt = select(table).order_by(table.id.desc()).limit(limit + 1)
    if after:
        stmt = stmt.where(table.id < after)
    with ctx.sessions() as session:
        return list(session.scalars(stmt))


def update_tenant(ctx: ApiContext, table: type[T], tenant_id: str, values: dict[str, Any]) -> T:
    row = get_tenant(ctx, table, tenant_id)
    _assign(row, values)
    row.updated_at = utcnow()
    with _unique_name(table, values.get("name")), ctx.sessions.begin() as session:
        session.merge(row)
    return row


def _assign(row: Team | Customer, values: dict[str, Any]) -> None:
    for name, value in values.items():
        setattr(row, "meta" if name == "metadata" else name, value)


@contextmanager
def _unique_name(table: type[Team] | type[Customer], name: str | None) -> Iterator[None]:
    """Turns the name's unique-constraint violation into a 409 naming it."""
    try:
        yield
    except IntegrityError as exc:
        noun = NOUN[table]
        raise ApiError(409, f"a {noun} named {name!r} exists already", param="name") from exc
