"""The response cache: exact match on the normalized request, in Redis, per tenant.

A job asks for it with a `cache_ttl` (the request's `cache: {"ttl": s}`, else its
key's `cache_ttl`). The cache key is SHA-256 of the canonical JSON (sorted keys, no
spaces) of the job kind, the model group and the provider body as stored (the fleet's
own fields such as `cache` already stripped), under the job's owner: a response never
crosses tenants. A hit skips the provider; the job still ends `succeeded`, with the
response, marked `cached`, no usage and cost 0 (so no spend row).

Single flight: a job that misses takes a lock for its request and calls the provider;
identical jobs that arrive meanwhile poll for the value within the runner's inline
wait budget, then wait outside the worker like any job waiting for capacity and hit
when they come back. A holder that fails releases the lock (the next one tries); one
that dies leaves it to expire after its call timeout. Redis trouble never fails a
job: the cache is skipped.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import time
from dataclasses import dataclass
from importlib import resources
from typing import Any

import redis

from models import redis_keys as rk
from models.stream_events import without_stream
from models.tables import JobStatus
from workers.jobstore import Claim, Outcome

__all__ = ["CacheWait", "ResponseCache", "request_digest"]

log = logging.getLogger(__name__)

#: Bounds of a waiting job's next try when the budget is spent (seconds).
MIN_WAIT_S, MAX_WAIT_S = 0.5, 2.0
HIT, LOCKED, BUSY = 1, 2, 3


@functools.cache
def _lua() -> str:
    return resources.files("workers").joinpath("cache.lua").read_text()


def request_digest(kind: str, model: str, body: dict[str, Any]) -> str:
    """Streamed or not, the same request has the same answer (workers.streaming)."""
    canonical = json.dumps(
        {"kind": kind, "model": model, "body": without_stream(body)},
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
    )
    return hashlib.sha256(canonical.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class CacheWait:
    """An identical job is computing the response: try again at `due_s`."""

    due_s: float
    reason: str


class ResponseCache:
    """One job's view of the cache, for one claim."""

    def __init__(self, client: redis.Redis, claim: Claim, ttl_s: int, lock_ms: int) -> None:
        self._script = client.register_script(_lua())
        self._claim = claim
        self._keys = rk.cache_keys(
            claim.owner, request_digest(claim.kind, claim.model, claim.request)
        )
        self._token = f"{claim.job_id}:{claim.attempt}"
        self._ttl_ms = ttl_s * 1000
        self._lock_ms = lock_ms
        self.holding = False
        self.waited_s = 0.0

    @classmethod
    def open(cls, client: redis.Redis, claim: Claim, call_timeout_s: float) -> ResponseCache | None:
        """The cache for this job, or None when it does not ask for caching."""
        if not claim.cache_ttl:
            return None
        lock_ms = int(call_timeout_s * 1000) + rk.CACHE_LOCK_MARGIN_MS
        return cls(client, claim, claim.cache_ttl, lock_ms)

    def lookup(self, budget_s: float) -> Outcome | CacheWait | None:
        """A hit, a wait for an identical job in flight, or None: call the provider
        (this job then holds the lock, or the cache is unavailable)."""
        until = time.monotonic() + budget_s
        while True:
            try:
                reply = self._script(keys=self._keys, args=["claim", self._token, self._lock_ms])
            except redis.RedisError as exc:
                log.warning("job %s: cache skipped: %s", self._claim.job_id, type(exc).__name__)
                return None
            if int(reply[0]) == HIT:
                return self._hit(reply[1])
            if int(reply[0]) == LOCKED:
                self.holding = True
                return None
            if time.monotonic() + rk.CACHE_POLL_S > until:
                wait = min(MAX_WAIT_S, max(MIN_WAIT_S, int(reply[1]) / 1000))
                reason = "waiting for an identical request in flight (response cache)"
                return CacheWait(time.time() + wait, reason)
            time.sleep(rk.CACHE_POLL_S)
            self.waited_s += rk.CACHE_POLL_S

    def settle(self, result: object) -> None:
        """After the calls: keep a successful response; in any case free the lock."""
        if not self.holding:
            return
        try:
            if (
                isinstance(result, Outcome)
                and result.status is JobStatus.SUCCEEDED
                and result.response is not None
            ):
                value = json.dumps({"response": result.response, "group": result.served_group})
                self._script(keys=self._keys, args=["store", self._token, value, self._ttl_ms])
            else:
                self._script(keys=self._keys, args=["release", self._token])
        except redis.RedisError as exc:
            log.warning("job %s: response not cached: %s", self._claim.job_id, type(exc).__name__)
        self.holding = False

    def _hit(self, raw: bytes) -> Outcome:
        value = json.loads(raw)
        return Outcome(
            JobStatus.SUCCEEDED,
            served_group=value.get("group") or self._claim.model,
            response=value["response"],
            cached=True,
        )
