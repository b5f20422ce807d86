"""/v1/deployments (admin): the router's fleet-wide view of every deployment, read
from the same Redis keys the workers' router scripts keep, and the work waiting in the
model groups' fair rooms per tenant and tier."""

from __future__ import annotations

import statistics
import time
from typing import Annotated

from fastapi import APIRouter, Depends
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel

from models import redis_keys as rk
from producer_api.auth import Caller, require_key
from producer_api.border import BorderRoute
from producer_api.context import ApiContext, get_context
from producer_api.errors import API_ERRORS, ApiError

router = APIRouter(
    route_class=BorderRoute, prefix="/v1/deployments", tags=["admin"], responses=API_ERRORS
)


class DeploymentPublic(BaseModel):
    id: str
    model_group: str
    model: str
    healthy: bool
    cooldown_remaining_s: float
    in_flight: int
    rpm_used: int
    rpm_limit: int | None
    tpm_used: int
    tpm_limit: int | None
    latency_per_token_p50_s: float | None
    adaptive_limit: float | None
    max_parallel_requests: int | None


class WaitingPublic(BaseModel):
    """A tenant's jobs waiting in a fair room (models.fair_room): a model group's, or
    `@workers/<queue>` for jobs waiting for a free worker."""

    model_group: str
    tenant: str
    tier: str
    jobs: int
    next_waited_s: float


class DeploymentsPublic(BaseModel):
    object: str = "list"
    data: list[DeploymentPublic]
    #: Work waiting for a model group's capacity or a free worker, per tenant and tier,
    #: longest first.
    waiting: list[WaitingPublic] = []


@router.get("", response_model=DeploymentsPublic)
async def list_deployments(
    ctx: Annotated[ApiContext, Depends(get_context)],
    caller: Annotated[Caller, Depends(require_key)],
) -> DeploymentsPublic:
    if not caller.is_admin:
        raise ApiError(403, "listing deployments needs the admin key", code="forbidden")
    now = int(time.time() * 1000)
    minute = now // rk.TPM_WINDOW_MS
    pipe = ctx.redis.pipeline(transaction=False)
    deployments = ctx.config.model_list
    for dep in deployments:
        cooldown, inflight, rpm, tpm, latency, aimd, _ = rk.deployment_keys(dep.id)
        pipe.pttl(cooldown)
        pipe.zcount(inflight, now, "+inf")
        pipe.zcount(rpm, now - rk.RPM_WINDOW_MS, "+inf")
        pipe.get(f"{tpm}:{minute}")
        pipe.lrange(latency, 0, -1)
        pipe.hget(aimd, "limit")
    values = await pipe.execute()
    data = []
    for i, dep in enumerate(deployments):
        cooldown_ms, inflight_n, rpm_n, tpm_n, samples, limit = values[i * 6 : i * 6 + 6]
        params = dep.litellm_params
        data.append(
            DeploymentPublic(
                id=dep.id,
                model_group=dep.model_name,
                model=params.model,
                healthy=cooldown_ms <= 0,
                cooldown_remaining_s=max(0, cooldown_ms) / 1000,
                in_flight=inflight_n,
                rpm_used=rpm_n,
                rpm_limit=params.rpm,
                tpm_used=int(tpm_n or 0),
                tpm_limit=params.tpm,
                latency_per_token_p50_s=statistics.median(float(s) for s in samples)
                if samples
                else None,
                adaptive_limit=float(limit) if limit else None,
                max_parallel_requests=params.max_parallel_requests,
            )
        )
    rooms = await run_in_threadpool(ctx.fair.waiting)
    waiting = [
        WaitingPublic(
            model_group=w.group,
            tenant=w.tenant,
            tier=w.tier,
            jobs=w.jobs,
            next_waited_s=round(w.next_waited_s, 3),
        )
        for w in sorted(rooms, key=lambda w: -w.next_waited_s)
    ]
    return DeploymentsPublic(data=data, waiting=waiting)
