"""The fleet's name: what keeps two fleets apart on one Redis (or one broker).

Every Redis key of the fleet's state starts with `llmfleet:<name>:` (models.redis_keys)
and every key of a Redis broker with `<name>:` (kombu's `global_keyprefix`), so two
fleets sharing a Redis database never take each other's messages, locks or limits.
`LLMFLEET_NAME` sets it; unset, it is derived from the database the process uses
(`DATABASE_URL`: its kind, host, port and database, not its credentials), since the
database is what makes a fleet one. Processes of one fleet that reach its database by
different addresses (a host name here, an IP there) derive different names: set
LLMFLEET_NAME on all of them. A worker warns at start when it sees another fleet's
workers on its Redis (workers.fleet_presence).

On RabbitMQ the vhost is the broker's own namespace: give each fleet its own."""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Mapping
from pathlib import Path

from sqlalchemy.engine import make_url

__all__ = ["DEFAULT_DATABASE_URL", "current", "derive"]

#: The settings' default, so a process with no DATABASE_URL derives the same name.
DEFAULT_DATABASE_URL = "sqlite:///./llmfleet.db"
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,47}")


def current(environ: Mapping[str, str] | None = None) -> str:
    """This process's fleet name: LLMFLEET_NAME, else derived from DATABASE_URL."""
    environ = os.environ if environ is None else environ
    given = environ.get("LLMFLEET_NAME")
    if given:
        if not _NAME.fullmatch(given):
            raise ValueError(
                "LLMFLEET_NAME must be 1-48 letters, digits, '.', '_' or '-', "
                "starting with a letter or digit"
            )
        return given
    return derive(environ.get("DATABASE_URL") or DEFAULT_DATABASE_URL)


def derive(database_url: str) -> str:
    """`fleet-` and 8 hex digits of the database's identity."""
    url = make_url(database_url)
    database = url.database or ""
    if url.get_backend_name() == "sqlite" and database and database != ":memory:":
        database = str(Path(database).resolve())
    identity = "|".join(
        [url.get_backend_name(), (url.host or "").lower(), str(url.port or ""), database]
    )
    return "fleet-" + hashlib.sha256(identity.encode()).hexdigest()[:8]
