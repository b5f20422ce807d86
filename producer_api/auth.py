"""Bearer-key authentication: the master key (admin) or a virtual key (a tenant).
The caller's identity is the owner recorded on every job, file and batch: the key's
id, or `master`. Virtual keys are found by their HMAC (`keys_service.find_key`)."""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Header

from models.schemas.keys import key_status
from models.tenancy import MASTER_OWNER, KeyGrant, model_allowed
from producer_api.context import ApiContext, get_context
from producer_api.errors import ApiError
from producer_api.keys_service import find_key

__all__ = ["Caller", "authenticate", "caller_for_key", "require_admin", "require_key"]


@dataclass(frozen=True)
class Caller:
    owner: str
    is_admin: bool
    #: What a virtual key allows (limits, models, team, customer); None for the master key.
    grant: KeyGrant | None = None

    @property
    def key_id(self) -> str | None:
        return self.grant.key_id if self.grant else None

    @property
    def team_id(self) -> str | None:
        return self.grant.team_id if self.grant else None

    @property
    def customer_id(self) -> str | None:
        return self.grant.customer_id if self.grant else None

    def may_use(self, model: str, alias_target: str | None = None) -> bool:
        """Model access: the master key uses every group; a virtual key its patterns."""
        if self.grant is None:
            return True
        return model_allowed(self.grant.models, model, alias_target or "")


def require_key(
    ctx: Annotated[ApiContext, Depends(get_context)],
    authorization: Annotated[str | None, Header()] = None,
    x_api_key: Annotated[str | None, Header(include_in_schema=False)] = None,
) -> Caller:
    """`Authorization: Bearer <key>` (OpenAI clients) or `x-api-key: <key>` (Anthropic
    clients)."""
    if authorization:
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise _unauthorized("malformed Authorization header: expected `Bearer <key>`")
    elif x_api_key:
        token = x_api_key
    else:
        raise _unauthorized("missing API key: send `Authorization: Bearer <key>`")
    caller = authenticate(ctx, token)
    if isinstance(caller, ApiError):
        raise caller
    return caller


def require_admin(caller: Annotated[Caller, Depends(require_key)]) -> Caller:
    """Admin endpoints: the master key only; a virtual key gets 403."""
    if not caller.is_admin:
        raise ApiError(403, "this endpoint needs the master key", code="admin_key_required")
    return caller


def caller_for_key(ctx: ApiContext, key: str) -> Caller | None:
    """Who `key` is, or None; the one check behind every way of presenting a key
    (headers here, the /ui login form)."""
    caller = authenticate(ctx, key)
    return None if isinstance(caller, ApiError) else caller


def authenticate(ctx: ApiContext, key: str) -> Caller | ApiError:
    """The caller, or the 401 that says why not (unknown, revoked or expired key)."""
    key = key.strip()
    master = ctx.settings.master_key
    if master is not None and hmac.compare_digest(key.encode(), master.get_secret_value().encode()):
        return Caller(owner=MASTER_OWNER, is_admin=True)
    row = find_key(ctx, key)
    if row is None:
        return _unauthorized("invalid API key")
    status = key_status(row)
    if status == "revoked":
        assert row.revoked_at is not None
        when = row.revoked_at.isoformat(timespec="seconds")
        return _unauthorized(f"this API key ({row.prefix}...) was revoked at {when}", status)
    if status == "expired":
        assert row.expires_at is not None
        when = row.expires_at.isoformat(timespec="seconds")
        return _unauthorized(f"this API key ({row.prefix}...) expired at {when}", status)
    return Caller(owner=row.id, is_admin=False, grant=row.grant())


def _unauthorized(message: str, status: str | None = None) -> ApiError:
    code = f"key_{status}" if status else "invalid_api_key"
    return ApiError(401, message, code=code, headers={"WWW-Authenticate": "Bearer"})
