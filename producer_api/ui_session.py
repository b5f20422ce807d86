"""The /ui login session: a signed cookie, so the key is typed once and never travels
in a URL (URLs end up in access logs, browser history and Referer headers).

The cookie holds who the caller is and until when, signed with HMAC-SHA256 under a
secret derived from the master key: rotating the master key ends every session. It
carries no key, is HttpOnly (page scripts cannot read it) and SameSite=Strict (another
site cannot make the browser send it).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time

from pydantic import SecretStr

from producer_api.auth import Caller

__all__ = ["COOKIE_NAME", "SESSION_SECONDS", "read_session", "sign_session"]

COOKIE_NAME = "llmfleet_ui"
SESSION_SECONDS = 12 * 3600
_CONTEXT = b"llmfleet /ui session v1"


def _secret(master_key: SecretStr) -> bytes:
    return hmac.new(master_key.get_secret_value().encode(), _CONTEXT, hashlib.sha256).digest()


def _mac(master_key: SecretStr, payload: str) -> str:
    digest = hmac.new(_secret(master_key), payload.encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).decode().rstrip("=")


def sign_session(master_key: SecretStr, caller: Caller, now: float | None = None) -> str:
    expires = int((now if now is not None else time.time()) + SESSION_SECONDS)
    body = json.dumps({"o": caller.owner, "a": caller.is_admin, "e": expires})
    payload = base64.urlsafe_b64encode(body.encode()).decode().rstrip("=")
    return f"{payload}.{_mac(master_key, payload)}"


def read_session(master_key: SecretStr, token: str, now: float | None = None) -> Caller | None:
    """The caller of a valid, unexpired cookie; None for anything else."""
    payload, _, mac = token.partition(".")
    if not payload or not hmac.compare_digest(mac.encode(), _mac(master_key, payload).encode()):
        return None
    try:
        data = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
        owner, admin, expires = str(data["o"]), bool(data["a"]), int(data["e"])
    except (ValueError, KeyError, TypeError):
        return None
    if expires < (now if now is not None else time.time()):
        return None
    return Caller(owner=owner, is_admin=admin)
