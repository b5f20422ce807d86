"""Virtual keys: minting, hashing, finding, and the admin's create / update / rotate /
revoke.

A key is `sk-fleet-` + 43 URL-safe characters (256 random bits). Only its
HMAC-SHA256 under the server secret (`CommonSettings.key_hash_secret`) is stored, so a
database dump yields no usable key, and the lookup is by that digest (an indexed
equality), confirmed with a constant-time comparison. A key is shown once: in the
answer to create or rotate.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from models.ids import new_id
from models.schemas.keys import KeyCreate, KeyUpdate
from models.tables import utcnow
from models.tenancy import ApiKey, Customer, Team
from producer_api.context import ApiContext
from producer_api.errors import ApiError

__all__ = [
    "KEY_PREFIX",
    "create_key",
    "find_key",
    "get_key",
    "hash_key",
    "list_keys",
    "revoke_key",
    "rotate_key",
    "update_key",
]

KEY_PREFIX = "sk-fleet-"
#: Characters of the key kept for display: the prefix and 8 random characters.
DISPLAY_CHARS = len(KEY_PREFIX) + 8
#: Longer tokens are not keys of ours: refuse them without hashing.
MAX_KEY_CHARS = 256


def hash_key(secret: bytes, key: str) -> str:
    return hmac.new(secret, key.encode(), hashlib.sha256).hexdigest()


def _mint(ctx: ApiContext) -> tuple[str, str]:
    """A new key and its digest."""
    key = KEY_PREFIX + secrets.token_urlsafe(32)
    return key, hash_key(ctx.settings.key_hash_secret(), key)


def find_key(ctx: ApiContext, key: str) -> ApiKey | None:
    """The key's row whatever its status (the caller tells revoked from expired)."""
    if not key or len(key) > MAX_KEY_CHARS:
        return None
    digest = hash_key(ctx.settings.key_hash_secret(), key)
    with ctx.sessions() as session:
        row = session.scalars(select(ApiKey).where(ApiKey.key_hash == digest)).first()
    if row is None or not hmac.compare_digest(row.key_hash, digest):
        return None
    return row


def create_key(ctx: ApiContext, body: KeyCreate) -> tuple[ApiKey, str]:
    key, digest = _mint(ctx)
    now = utcnow()
    row = ApiKey(id=new_id("key"), key_hash=digest, prefix=key[:DISPLAY_CHARS])
    row.created_at = row.updated_at = now
    with ctx.sessions.begin() as session:
        _apply(session, row, body.changes())
        session.add(row)
    return row, key


def get_key(ctx: ApiContext, key_id: str) -> ApiKey:
    with ctx.sessions() as session:
        return _load(session, key_id)


def list_keys(
    ctx: ApiContext,
    *,
    team_id: str | None,
    customer_id: str | None,
    after: str | None,
    limit: int,
) -> list[ApiKey]:
    """Newest first, `limit + 1` rows (the extra one says there is more)."""
    stmt = select(ApiKey).order_by(ApiKey.id.desc()).limit(limit + 1)
    if team_id:
        stmt = stmt.where(ApiKey.team_id == team_id)
    if customer_id:
        stmt = stmt.where(ApiKey.customer_id == customer_id)
    if after:
        stmt = stmt.where(ApiKey.id < after)
    with ctx.sessions() as session:
        return list(session.scalars(stmt))


def update_key(ctx: ApiContext, key_id: str, body: KeyUpdate) -> ApiKey:
    """Limits, models and owner changes apply to the key's next request."""
    with ctx.sessions.begin() as session:
        row = _load(session, key_id, for_update=True)
        _apply(session, row, body.changes())
        row.updated_at = utcnow()
    return row


def rotate_key(ctx: ApiContext, key_id: str) -> tuple[ApiKey, str]:
    """A new secret for the same key: its id, limits and everything it owns stay; the
    old secret stops working at once."""
    key, digest = _mint(ctx)
    with ctx.sessions.begin() as session:
        row = _load(session, key_id, for_update=True)
        if row.revoked_at is not None:
            raise ApiError(409, f"the key {key_id} is revoked; create a new one", code="revoked")
        row.key_hash, row.prefix = digest, key[:DISPLAY_CHARS]
        row.rotated_at = row.updated_at = utcnow()
    return row, key


def revoke_key(ctx: ApiContext, key_id: str) -> ApiKey:
    """For good: requests with the key answer 401 from now on. Its jobs keep running."""
    with ctx.sessions.begin() as session:
        row = _load(session, key_id, for_update=True)
        if row.revoked_at is None:
            row.revoked_at = row.updated_at = utcnow()
    return row


def _load(session: Session, key_id: str, for_update: bool = False) -> ApiKey:
    stmt = select(ApiKey).where(ApiKey.id == key_id)
    if for_update:
        stmt = stmt.with_for_update()
    row = session.scalars(stmt).first()
    if row is None:
        raise ApiError(404, f"No API key with id {key_id!r}", param="key_id", code="not_found")
    return row


def _apply(session: Session, row: ApiKey, values: dict[str, Any]) -> None:
    """Set the columns; team and customer may be given by id or name."""
    if values.get("team_id") is not None:
        values["team_id"] = _resolve(session, Team, values["team_id"], "team_id")
    if values.get("customer_id") is not None:
        values["customer_id"] = _resolve(session, Customer, values["customer_id"], "customer_id")
    for name, value in values.items():
        setattr(row, name, value)
    if row.team_id is not None and row.customer_id is not None:
        raise ApiError(
            400,
            "a key belongs to a team or a customer, not both: clear one (set it to null)",
            param="team_id",
            code="invalid_owner",
        )


def _resolve(session: Session, table: type[Team] | type[Customer], ref: str, param: str) -> str:
    found = session.scalar(select(table.id).where(table.id == ref)) or session.scalar(
        select(table.id).where(table.name == ref)
    )
    if found is None:
        noun = param.removesuffix("_id")
        raise ApiError(400, f"no {noun} with id or name {ref!r}", param=param, code="not_found")
    return found
