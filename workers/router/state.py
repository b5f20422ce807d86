"""The router's fleet-wide state in Redis, read and written only through two Lua
scripts, so that every decision and every report is one atomic round trip.

The same coroutines serve a blocking client and a `redis.asyncio` one: with a blocking
client a script's result comes back in place and the coroutine never suspends (a script
or a test drives it in one step, `workers.calls.drive`); with an asyncio client, as on
a worker's event loop, it is awaited and the loop runs other calls meanwhile."""

from __future__ import annotations

import inspect
import secrets
from dataclasses import dataclass
from decimal import Decimal
from importlib import resources
from typing import Any

import redis
import redis.asyncio as aioredis

from models import redis_keys as rk
from models.fleet_config import Deployment, Strategy

__all__ = ["Admitted", "RouterState", "Saturated"]

LEASE_MARGIN_MS = 30_000


@dataclass(frozen=True, slots=True)
class Admitted:
    deployment: Deployment
    lease_token: str


@dataclass(frozen=True, slots=True)
class Saturated:
    """No candidate can take a call now; `wait_ms` is when the earliest might."""

    wait_ms: int
    reasons: dict[str, str]


def _script(name: str) -> str:
    return resources.files("workers.router").joinpath(name).read_text()


async def _resolved(value: Any) -> Any:
    """A blocking client's result as it is; an asyncio client's, awaited."""
    return await value if inspect.isawaitable(value) else value


class RouterState:
    def __init__(self, client: redis.Redis | aioredis.Redis) -> None:
        self._redis = client
        self._pick = client.register_script(_script("pick.lua"))
        self._report = client.register_script(_script("report.lua"))

    async def pick(
        self,
        candidates: list[Deployment],
        strategy: Strategy,
        *,
        now_ms: int,
        rand: float,
        estimated_tokens: int,
        lease_ms: int,
        latency_buffer: float,
    ) -> Admitted | Saturated:
        token = secrets.token_hex(8)
        keys: list[str] = []
        args: list[str | int | float] = [
            now_ms,
            strategy,
            rand,
            estimated_tokens,
            lease_ms + LEASE_MARGIN_MS,
            token,
            latency_buffer,
            len(candidates),
            rk.RPM_WINDOW_MS + rk.RPM_GUARD_MS,
            rk.TPM_WINDOW_MS,
        ]
        for dep in candidates:
            params = dep.litellm_params
            keys += rk.deployment_keys(dep.id)
            args += [
                params.rpm or 0,
                params.tpm or 0,
                params.max_parallel_requests or 0,
                params.weight or params.rpm or params.tpm or 1,
                _unit_cost(dep),
            ]
        result = await _resolved(self._pick(keys=keys, args=args))
        if int(result[0]) == 1:
            return Admitted(candidates[int(result[1]) - 1], token)
        reasons = [r.decode() if isinstance(r, bytes) else str(r) for r in result[2:]]
        # Reasons come back in candidate order, one per candidate.
        return Saturated(
            wait_ms=int(result[1]),
            reasons={d.id: r for d, r in zip(candidates, reasons, strict=False)},
        )

    async def report(
        self,
        admitted: Admitted,
        *,
        now_ms: int,
        mode: str,
        latency_per_token: float = 0.0,
        tokens: int = 0,
        cooldown_ms: int = 0,
        allowed_fails: int = 0,
        decrease: bool = False,
        window_size: int = 20,
    ) -> bool:
        """Returns True when this report put the deployment into cooldown."""
        params = admitted.deployment.litellm_params
        cooled = await _resolved(
            self._report(
                keys=rk.deployment_keys(admitted.deployment.id),
                args=[
                    now_ms,
                    admitted.lease_token,
                    mode,
                    repr(latency_per_token),
                    tokens,
                    cooldown_ms,
                    allowed_fails,
                    "1" if decrease else "0",
                    params.max_parallel_requests or 0,
                    window_size,
                    rk.LATENCY_TTL_MS,
                    rk.AIMD_TTL_MS,
                    rk.FAILS_WINDOW_MS,
                    rk.TPM_KEY_TTL_MS,
                    rk.TPM_WINDOW_MS,
                ],
            )
        )
        return bool(int(cooled))

    async def last_throttled_ms(self, deployments: list[Deployment]) -> list[int]:
        """When each deployment last answered 429 (epoch ms; 0: not in AIMD_TTL_MS)."""
        aimd = rk.DEPLOYMENT_KEY_NAMES.index("aimd")
        pipe = self._redis.pipeline(transaction=False)
        for dep in deployments:
            pipe.hget(rk.deployment_keys(dep.id)[aimd], "last_decrease")
        values = await _resolved(pipe.execute())
        return [int(float(v)) if v is not None else 0 for v in values]


def _unit_cost(dep: Deployment) -> str:
    """A comparable price: input plus output cost per token; -1 when unknown."""
    params = dep.litellm_params
    if params.input_cost_per_token is None and params.output_cost_per_token is None:
        return "-1"
    total = (params.input_cost_per_token or Decimal(0)) + (
        params.output_cost_per_token or Decimal(0)
    )
    return str(total)
