"""One holder at a time across the fleet (the batch tick, the Lago drain, the
entitlement refresh), with a short lock that its holder keeps alive.

Why short and renewed: a lock with a TTL long enough for the longest run stalls the
fleet for that whole TTL when its holder dies mid-run (kill -9, a lost machine). The
lock here lives `ttl_ms` and a thread of the holder extends it every third of that
while the block runs, so a dead holder frees it within `ttl_ms`. redis-py's `Lock`
(token-checked release and extend) does the Redis side.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Iterator

import redis
from redis.exceptions import LockError

__all__ = ["fleet_lock"]

log = logging.getLogger(__name__)


@contextlib.contextmanager
def fleet_lock(client: redis.Redis, key: str, ttl_ms: int) -> Iterator[bool]:
    """True inside the block when this process holds `key`; False when another does."""
    lock = client.lock(key, timeout=ttl_ms / 1000, blocking=False, thread_local=False)
    if not lock.acquire():
        yield False
        return
    done = threading.Event()
    keeper = threading.Thread(
        target=_keep_alive, args=(lock, ttl_ms / 3000, done), name=f"lock:{key}", daemon=True
    )
    keeper.start()
    try:
        yield True
    finally:
        done.set()
        keeper.join()
        with contextlib.suppress(LockError, redis.RedisError):
            lock.release()


def _keep_alive(lock: redis.lock.Lock, every_s: float, done: threading.Event) -> None:
    while not done.wait(every_s):
        try:
            lock.reacquire()
        except (LockError, redis.RedisError) as exc:  # lost it: the block ends by itself
            log.warning("lock %s not renewed: %s", lock.name, type(exc).__name__)
            return
