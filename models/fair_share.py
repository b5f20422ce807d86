"""Who shares capacity with whom, and how much of it: a job's place in the fair queue
(docs/ROUTING.md, "Fair share between tenants").

A key, a team or a customer may carry a `tier` and a `weight`. Tiers order strictly
(`production` before `default` before `batch`): while a job of a higher tier waits, no
job of a lower tier is let through. Within a tier, tenants share by weight: each is
let through in proportion to its weight, measured in recent usage (tokens).

The tenant a job counts against is its key's team or customer, so the keys of a team
share one place; a key that carries a tier or weight of its own is a tenant of its own.
A setting the key leaves unset comes from its team or customer, then the defaults
(tier `default`, weight 1). The master key is the tenant `master`.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Literal, Protocol

from sqlalchemy.orm import Session, sessionmaker

from models.tenancy import MASTER_OWNER, ApiKey, Customer, Team

__all__ = [
    "DEFAULT_TIER",
    "MAX_WEIGHT",
    "MIN_WEIGHT",
    "TIERS",
    "Share",
    "ShareBook",
    "Tier",
    "share_of",
    "tier_rank",
]

Tier = Literal["production", "default", "batch"]
#: Highest first: a waiting job of an earlier tier goes before any of a later one.
TIERS: tuple[Tier, ...] = ("production", "default", "batch")
DEFAULT_TIER: Tier = "default"
MIN_WEIGHT = 0.001
MAX_WEIGHT = 1000.0


def tier_rank(tier: str) -> int:
    """0 for the highest tier; an unknown name counts as the default."""
    ranks: dict[str, int] = {name: rank for rank, name in enumerate(TIERS)}
    return ranks.get(tier, ranks[DEFAULT_TIER])


@dataclass(frozen=True, slots=True)
class Share:
    """A job's tenant in the fair queue, its tier and its weight."""

    tenant: str
    tier: str = DEFAULT_TIER
    weight: float = 1.0


MASTER_SHARE = Share("master")


class _Weighted(Protocol):
    id: str
    tier: str | None
    weight: float | None


class _Key(_Weighted, Protocol):
    team_id: str | None
    customer_id: str | None


def share_of(key: _Key | None, owner: _Weighted | None) -> Share:
    """The share of a key's jobs; `owner` is the key's team or customer (None when it
    has neither), `key` None for the master key."""
    if key is None:
        return MASTER_SHARE
    own = key.tier is not None or key.weight is not None
    tenant = key.id if own or owner is None else owner.id
    tier = key.tier or (owner.tier if owner is not None else None) or DEFAULT_TIER
    weight = key.weight or (owner.weight if owner is not None else None) or 1.0
    return Share(tenant, tier, float(weight))


class ShareBook:
    """The shares of keys' jobs, read from the database and kept `ttl_s` seconds, so a
    change of tier or weight reaches the workers within that time."""

    def __init__(self, sessions: sessionmaker[Session], ttl_s: float = 10.0) -> None:
        self._sessions = sessions
        self._ttl_s = ttl_s
        self._known: dict[str, tuple[float, Share]] = {}
        self._lock = threading.Lock()

    def share(self, owner: str) -> Share:
        """The share of the jobs of `owner` (a key id, or the master key's owner)."""
        if owner == MASTER_OWNER:
            return MASTER_SHARE
        now = time.monotonic()
        with self._lock:
            known = self._known.get(owner)
        if known is not None and known[0] > now:
            return known[1]
        share = self._read(owner)
        with self._lock:
            if len(self._known) > 10_000:
                self._known.clear()
            self._known[owner] = (now + self._ttl_s, share)
        return share

    def _read(self, owner: str) -> Share:
        with self._sessions() as session:
            key = session.get(ApiKey, owner)
            if key is None:  # a key deleted since: its jobs share one place
                return Share(owner)
            found: Team | Customer | None = None
            if key.team_id:
                found = session.get(Team, key.team_id)
            elif key.customer_id:
                found = session.get(Customer, key.customer_id)
            return share_of(key, found)
