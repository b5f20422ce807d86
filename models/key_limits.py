"""A virtual key's rate limits, fleet-wide in Redis, shared by the API (which admits
interactive jobs) and the workers (which settle them when they end).

- rpm: exact sliding window of accepted interactive jobs: a job is accepted iff fewer
  than `rpm` were accepted in the last 60 s; Retry-After is when the oldest leaves.
- tpm: fixed clock minutes. A job is charged its estimate when accepted; when it ends
  the difference to its real usage (0 for a cache hit or a job that never ran) is
  added to the minute it ends in. Over the minutes every token is counted once.
- max parallel jobs: the key's queued or running interactive jobs, each held until it
  ends (or until its deadline, should its end never be reported).

Batch lines are not admitted here: they count against the key's batch allowance
(`producer_api.access.check_batch_allowance`). Every call is one Lua round trip
(`key_limits.lua`); the clock is Redis's, so every API process shares one window.
Losing Redis loses only these counters: limits are soft state, the jobs are rows.
"""

from __future__ import annotations

import datetime as dt
import functools
from dataclasses import dataclass
from importlib import resources
from typing import Any, Protocol

from models import redis_keys as rk
from models.tenancy import KeyGrant

__all__ = ["KeyLimiter", "Refusal"]


@functools.cache
def _lua() -> str:
    return resources.files("models").joinpath("key_limits.lua").read_text()


@dataclass(frozen=True, slots=True)
class Refusal:
    """Which limit refused the job, when to try again, and the figures behind it."""

    limit: str
    retry_after_s: float
    value: int
    used: int


class ScriptClient(Protocol):
    """What the limiter needs of a Redis client (redis-py's sync client): models/
    depends on no client library."""

    def register_script(self, script: str) -> Any: ...

    def close(self) -> Any: ...


class KeyLimiter:
    def __init__(
        self,
        client: ScriptClient,
        rpm_window_ms: int = rk.KEY_RPM_WINDOW_MS,
        tpm_window_ms: int = rk.KEY_TPM_WINDOW_MS,
    ) -> None:
        """The windows are the fleet's (tests shorten them)."""
        self._redis = client
        self._script = client.register_script(_lua())
        self._rpm_window_ms = rpm_window_ms
        self._tpm_window_ms = tpm_window_ms

    def admit(
        self, grant: KeyGrant, job_id: str, estimate: int, active_until: dt.datetime
    ) -> Refusal | None:
        """Count the job against the key's limits, or say which one refuses it."""
        result: list[Any] = self._script(
            keys=rk.key_limit_keys(grant.key_id),
            args=[
                "admit",
                job_id,
                grant.rpm or 0,
                grant.tpm or 0,
                grant.max_parallel_jobs or 0,
                estimate,
                int(active_until.timestamp() * 1000),
                self._rpm_window_ms,
                self._tpm_window_ms,
                rk.KEY_TPM_KEY_TTL_MS,
            ],
        )
        if int(result[0]) == 1:
            return None
        name = result[1].decode() if isinstance(result[1], bytes) else str(result[1])
        return Refusal(name, int(result[2]) / 1000, int(result[3]), int(result[4]))

    def settle(self, key_id: str, job_id: str, correction: int) -> None:
        """The job has ended: free its parallel slot and correct the tokens charged."""
        self._script(
            keys=rk.key_limit_keys(key_id),
            args=["settle", job_id, correction, self._tpm_window_ms, rk.KEY_TPM_KEY_TTL_MS],
        )

    def close(self) -> None:
        self._redis.close()
