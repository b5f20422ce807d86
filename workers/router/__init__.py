"""Router-aware deployment choice, with fleet-wide state in Redis.

Every call goes through `Router.choose` (one Redis round trip: skip cooled-down and
saturated deployments, apply the strategy, admit the call) and ends with
`Router.report` (one round trip: release the in-flight lease, record latency and
tokens, count failures, cool down, adapt the concurrency limit).

Adaptive concurrency (AIMD): a deployment has no concurrency limit until it pushes
back. On a 429 the limit becomes 0.7 x the calls in flight at that moment (at most
once a second, so one burst counts once); each success while the limit binds (the
deployment is at or one below it) adds 1/limit, i.e. about one slot per round of
calls. The fleet so finds a provider's real capacity and probes
above it now and then; the limit is forgotten after 10 idle minutes.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass

import redis
import redis.asyncio as aioredis

from models import redis_keys as rk
from models.fleet_config import Deployment, FleetConfig
from workers.providers.errors import (
    AuthenticationError,
    NotFoundError,
    PermissionDeniedError,
    ProviderError,
    RateLimitedError,
)
from workers.router.state import Admitted, RouterState, Saturated

__all__ = ["Admitted", "NoDeploymentError", "Router", "Saturated"]

#: Errors that make a deployment useless until fixed: cool it down at once.
COOL_AT_ONCE = (AuthenticationError, PermissionDeniedError, NotFoundError)


class NoDeploymentError(LookupError):
    """No deployment can ever serve this request (unknown group, no matching tag)."""


@dataclass(frozen=True, slots=True)
class Request:
    """What the router needs to know of a call."""

    group: str
    tags: tuple[str, ...]
    estimated_tokens: int
    timeout_s: float


class Router:
    def __init__(
        self, config: FleetConfig, client: redis.Redis | aioredis.Redis, rng: random.Random
    ) -> None:
        self.config = config
        self.state = RouterState(client)
        self._rng = rng

    def candidates(self, group: str, tags: tuple[str, ...]) -> list[Deployment]:
        """The group's deployments that may serve a job with these tags: tagged jobs go
        to deployments sharing a tag; untagged jobs to `default`-tagged deployments
        when there are any, else to all."""
        group_deps = self.config.deployments_for(group)
        if not group_deps:
            raise NoDeploymentError(f"the model {group!r} is not served by this fleet")
        if tags:
            matching = [d for d in group_deps if set(d.litellm_params.tags) & set(tags)]
            if not matching:
                raise NoDeploymentError(
                    f"no deployment of {group!r} has any of the tags {list(tags)}"
                )
            return matching
        default = [d for d in group_deps if "default" in d.litellm_params.tags]
        return default or group_deps

    async def choose(self, request: Request, avoid: set[str]) -> Admitted | Saturated:
        """Prefer deployments this job has not tried yet; fall back to all of them."""
        candidates = self.candidates(request.group, request.tags)
        fresh = [d for d in candidates if d.id not in avoid]
        result = await self._pick(request, fresh) if fresh else None
        if result is None or (isinstance(result, Saturated) and len(fresh) < len(candidates)):
            result = await self._pick(request, candidates)
        return result

    async def _pick(self, request: Request, candidates: list[Deployment]) -> Admitted | Saturated:
        settings = self.config.router_settings
        return await self.state.pick(
            candidates,
            settings.strategy_for(request.group),
            now_ms=_now_ms(),
            rand=self._rng.random(),
            estimated_tokens=request.estimated_tokens,
            lease_ms=int(request.timeout_s * 1000),
            latency_buffer=settings.routing_strategy_args.lowest_latency_buffer,
        )

    async def report_success(
        self, admitted: Admitted, latency_s: float, completion_tokens: int, total_tokens: int
    ) -> None:
        await self.state.report(
            admitted,
            now_ms=_now_ms(),
            mode="ok",
            latency_per_token=latency_s / max(1, completion_tokens),
            tokens=total_tokens,
            window_size=self.config.router_settings.routing_strategy_args.window_size,
        )

    async def release(self, admitted: Admitted) -> None:
        """The call ended with nothing to learn from (a stream cancelled midway)."""
        await self.state.report(admitted, now_ms=_now_ms(), mode="release")

    async def throttled_recently(self, group: str, tags: tuple[str, ...]) -> bool:
        """Whether a deployment of the group answered 429 within THROTTLED_RECENTLY_MS:
        the group is then short of capacity, which a job waits for, not out of order."""
        since = _now_ms() - rk.THROTTLED_RECENTLY_MS
        throttled = await self.state.last_throttled_ms(self.candidates(group, tags))
        return any(t > since for t in throttled)

    async def report_failure(self, admitted: Admitted, error: ProviderError) -> bool:
        """Cooldown policy: 429 cools for its Retry-After (else cooldown_time); 401, 403
        and 404 cool at once; other retryable errors count against allowed_fails;
        request errors (400, context window, content policy) never cool."""
        settings = self.config.router_settings
        cooldown_ms = int(settings.cooldown_time * 1000)
        if isinstance(error, RateLimitedError):
            mode = "cool"
            if error.retry_after is not None:
                cooldown_ms = int(error.retry_after * 1000)
        elif isinstance(error, COOL_AT_ONCE):
            mode = "cool"
        elif error.cools_down:
            mode = "count"
        else:
            mode = "release"
        return await self.state.report(
            admitted,
            now_ms=_now_ms(),
            mode=mode,
            cooldown_ms=cooldown_ms,
            allowed_fails=settings.allowed_fails_for(error.policy_name),
            decrease=isinstance(error, RateLimitedError),
        )


def _now_ms() -> int:
    return int(time.time() * 1000)
