"""Fleets sharing a Redis: each worker marks its fleet's name as present in every Redis
the fleet uses (its state, and its broker when that is Redis), at start and at every
sweep, under a key outside any fleet's namespace; and warns when another name was
there lately. Fleets apart by name never take each other's messages (models.fleet_name)
— but one fleet whose processes derived different names (its database reached by
different addresses) is split in two, and its jobs wait for workers that never see
them: the warning says how to tell and what to set."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable

import redis

__all__ = ["PRESENCE_KEY", "announce"]

log = logging.getLogger(__name__)

#: Shared by every fleet on a Redis: name -> when a worker of it last said so.
PRESENCE_KEY = "llmfleet:fleets"
#: A fleet not seen for this long is gone (sweeps run every 30 s).
SEEN_WITHIN_S = 120
_KEY_TTL_S = 3600


def announce(clients: Iterable[redis.Redis], name: str) -> list[str]:
    """Mark `name` present; the other fleets seen lately (each named once), with a
    warning logged naming them."""
    now = time.time()
    others: set[str] = set()
    for client in clients:
        try:
            pipe = client.pipeline(transaction=False)
            pipe.hgetall(PRESENCE_KEY)
            pipe.hset(PRESENCE_KEY, name, repr(now))
            pipe.expire(PRESENCE_KEY, _KEY_TTL_S)
            seen, _, _ = pipe.execute()
        except redis.RedisError as exc:  # a missing mark only delays a warning
            log.info("fleet presence not checked: %s", type(exc).__name__)
            continue
        for other, at in seen.items():
            other_name = other.decode() if isinstance(other, bytes) else str(other)
            if other_name != name and now - float(at) < SEEN_WITHIN_S:
                others.add(other_name)
    if others:
        log.warning(
            "another fleet's workers use this Redis: %s (this fleet: %s). Fleets keep their "
            "queues and keys apart by name; if they are meant to be one fleet, its processes "
            "derived different names from DATABASE_URL: set LLMFLEET_NAME the same on all",
            ", ".join(sorted(others)),
            name,
        )
    return sorted(others)
