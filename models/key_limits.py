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

__all__ = ["Headroom", "KeyLimiter", "Refusal", "refusal_headers"]


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


@dataclass(frozen=True, slots=True)
class Headroom:
    """A key's limits after a job was admitted: what is left of each, and when the
    window frees up (OpenAI's `x-ratelimit-*` headers)."""

    rpm: int | None
    rpm_used: int
    rpm_reset_s: float
    tpm: int | None
    tpm_used: int
    tpm_reset_s: float

    def headers(self) -> dict[str, str]:
        """OpenAI's rate-limit headers for the limits the key has."""
        out: dict[str, str] = {}
        if self.rpm:
            out |= _limit_headers("requests", self.rpm, self.rpm_used, self.rpm_reset_s)
        if self.tpm:
            out |= _limit_headers("tokens", self.tpm, self.tpm_used, self.tpm_reset_s)
        return out


def _limit_headers(kind: str, limit: int, used: int, reset_s: float) -> dict[str, str]:
    return {
        f"x-ratelimit-limit-{kind}": str(limit),
        f"x-ratelimit-remaining-{kind}": str(max(0, limit - used)),
        f"x-ratelimit-reset-{kind}": _duration(reset_s),
    }


def _duration(seconds: float) -> str:
    """OpenAI's reset format: "1s", "6m0s", "350ms"."""
    if seconds < 1:
        return f"{max(0, round(seconds * 1000))}ms"
    minutes, rest = divmod(round(seconds), 60)
    return f"{minutes}m{rest}s" if minutes else f"{rest}s"


def refusal_headers(refusal: Refusal) -> dict[str, str]:
    """The rate-limit headers of a refused job: the refusing limit has nothing left."""
    if refusal.limit == "rpm":
        return _limit_headers("requests", refusal.value, refusal.value, refusal.retry_after_s)
    if refusal.limit == "tpm":
        return _limit_headers("tokens", refusal.value, refusal.value, refusal.retry_after_s)
    return {}


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
        result = self.check(grant, job_id, estimate, active_until)
        return result if isinstance(result, Refusal) else None

    def check(
        self, grant: KeyGrant, job_id: str, estimate: int, active_until: dt.datetime
    ) -> Refusal | Headroom:
        """`admit`, saying what is left of the limits when the job is admitted."""
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
            now, requests, oldest, tokens, minute_end = (int(v) for v in result[1:6])
            return Headroom(
                grant.rpm,
                requests,
                (oldest + self._rpm_window_ms - now) / 1000,
                grant.tpm,
                tokens,
                (minute_end - now) / 1000,
            )
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
