"""/v1/keys (admin): virtual keys. The key itself is in the answer to create and
rotate only; no answer ever carries its hash."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query

from models.schemas.keys import KeyCreate, KeyCreated, KeyPublic, KeysPublic, KeyUpdate
from producer_api import keys_service
from producer_api.auth import Caller, require_admin
from producer_api.border import BorderRoute
from producer_api.context import ApiContext, get_context
from producer_api.errors import API_ERRORS, BODY_ERRORS, CONFLICT_ERRORS

router = APIRouter(route_class=BorderRoute, prefix="/v1/keys", tags=["admin"], responses=API_ERRORS)

Ctx = Annotated[ApiContext, Depends(get_context)]
Admin = Annotated[Caller, Depends(require_admin)]


@router.post(
    "", status_code=201, response_model=KeyCreated, responses={**BODY_ERRORS, **CONFLICT_ERRORS}
)
def create_key(body: KeyCreate, ctx: Ctx, _: Admin) -> KeyCreated:
    """Mint a key; the answer's `key` is shown this once."""
    row, key = keys_service.create_key(ctx, body)
    return KeyCreated.with_key(row, key)


@router.get("", response_model=KeysPublic)
def list_keys(
    ctx: Ctx,
    _: Admin,
    team_id: str | None = None,
    customer_id: str | None = None,
    after: Annotated[str | None, Query(description="Cursor: the last id of a page.")] = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
) -> KeysPublic:
    rows = keys_service.list_keys(
        ctx, team_id=team_id, customer_id=customer_id, after=after, limit=limit
    )
    page = [KeyPublic.from_row(r) for r in rows[:limit]]
    return KeysPublic(
        data=page,
        first_id=page[0].id if page else None,
        last_id=page[-1].id if page else None,
        has_more=len(rows) > limit,
    )


@router.get("/{key_id}", response_model=KeyPublic)
def get_key(key_id: str, ctx: Ctx, _: Admin) -> KeyPublic:
    return KeyPublic.from_row(keys_service.get_key(ctx, key_id))


@router.patch("/{key_id}", response_model=KeyPublic, responses={**BODY_ERRORS, **CONFLICT_ERRORS})
def update_key(key_id: str, body: KeyUpdate, ctx: Ctx, _: Admin) -> KeyPublic:
    """Only the fields sent change; null clears a limit (unlimited) or the expiry."""
    return KeyPublic.from_row(keys_service.update_key(ctx, key_id, body))


@router.post("/{key_id}/rotate", response_model=KeyCreated, responses=CONFLICT_ERRORS)
def rotate_key(key_id: str, ctx: Ctx, _: Admin) -> KeyCreated:
    """A new secret for the same key id; the old one stops working at once."""
    row, key = keys_service.rotate_key(ctx, key_id)
    return KeyCreated.with_key(row, key)


@router.post("/{key_id}/revoke", response_model=KeyPublic, responses=CONFLICT_ERRORS)
def revoke_key(key_id: str, ctx: Ctx, _: Admin) -> KeyPublic:
    """For good: the key answers 401 from now on; what it owns stays readable by the
    admin."""
    return KeyPublic.from_row(keys_service.revoke_key(ctx, key_id))
