"""`/metrics` on the API (Prometheus text format).

- `llmfleet_jobs_submitted_total{model, priority}` (counter): jobs accepted at intake
  (jobs, synchronous calls, batch lines);
- `llmfleet_queue_depth{queue}`: messages waiting in each priority queue of the broker;
- `llmfleet_cooldowns_active{deployment, model_group}`: 1 while the deployment cools down;
- `llmfleet_jobs_waiting_for_capacity`: jobs in the delayed set;
- `llmfleet_tenant_waiting_jobs{tenant, tier}`: jobs waiting in the model groups' fair
  rooms (models.fair_room), the 100 tenants with the most, the rest as `_other`;
- `llmfleet_outbox_backlog`, `llmfleet_outbox_dead_events`: usage events for Lago
  waiting to be sent, and given up on (`usage_outbox`);
- `llmfleet_fleet_state_up{source}`: 0 when the broker, Redis or the database could
  not be read.

The gauges describe the whole fleet, so they are read here, once per scrape, rather
than by every worker: one passive queue declaration per priority queue on a short-lived
broker connection (works for Redis and AMQP brokers alike), one Redis pipeline of PTTLs
and a ZCARD, one indexed count of the outbox. Reads are cached for `STATE_MAX_AGE_S`,
so any number of scrapers costs the same. The per-job series of the workers are on
each worker (`workers/metrics.py`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis
from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import Response
from kombu import Connection
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy import Engine, func, select
from starlette.concurrency import run_in_threadpool

from models import fleet_name
from models import redis_keys as rk
from models.accounting import OutboxStatus, UsageOutbox
from models.contract import QUEUES, broker_options
from models.fair_room import FairRoom
from models.fleet_config import FleetConfig
from models.metrics import LabelCap, exposition_registry
from models.settings import CommonSettings
from producer_api.context import get_context

__all__ = ["FleetState", "FleetStateReader", "install_metrics", "job_submitted"]

log = logging.getLogger(__name__)

STATE_MAX_AGE_S = 2.0
READ_TIMEOUT_S = 2.0
#: Tenants named in `llmfleet_tenant_waiting_jobs` (as the workers' tenant labels).
TENANT_LABELS = 100

SUBMITTED = Counter(
    "llmfleet_jobs_submitted",
    "Jobs accepted at intake (jobs, synchronous calls, batch lines).",
    ["model", "priority"],
)
_models = LabelCap(200)


def job_submitted(model: str, priority: int, count: int = 1) -> None:
    SUBMITTED.labels(_models(model), str(priority)).inc(count)


@dataclass(frozen=True, slots=True)
class FleetState:
    """One read of the fleet's state; None where the source could not be read."""

    queue_depth: dict[str, int] | None
    #: (deployment id, model group, cooling down now)
    cooldowns: list[tuple[str, str, bool]] | None
    waiting_for_capacity: int | None
    #: usage_outbox rows by status (pending, dead)
    outbox: dict[str, int] | None = None
    #: jobs waiting in fair rooms by (tenant, tier)
    tenants_waiting: dict[tuple[str, str], int] | None = None


class FleetStateReader:
    def __init__(self, settings: CommonSettings, config: FleetConfig) -> None:
        self._broker_url = settings.broker_url
        self._transport_options: dict[str, Any] = dict(
            broker_options(settings.visibility_timeout, fleet_name.current())[
                "broker_transport_options"
            ]
        )
        if self._broker_url.startswith(("redis://", "rediss://")):
            self._transport_options |= {
                "socket_timeout": READ_TIMEOUT_S,
                "socket_connect_timeout": READ_TIMEOUT_S,
            }
        self._deployments = [
            (d.id, d.model_name, rk.deployment_keys(d.id)[0]) for d in config.model_list
        ]
        self._lock = asyncio.Lock()
        self._state: FleetState | None = None
        self._read_at = 0.0

    async def read(self, client: aioredis.Redis, engine: Engine, fair: FairRoom) -> FleetState:
        async with self._lock:
            if self._state is None or time.monotonic() - self._read_at >= STATE_MAX_AGE_S:
                depths = await run_in_threadpool(self.queue_depths)
                cooldowns, waiting = await self._redis_state(client)
                outbox = await run_in_threadpool(outbox_counts, engine)
                tenants = await run_in_threadpool(tenants_waiting, fair)
                self._state = FleetState(depths, cooldowns, waiting, outbox, tenants)
                self._read_at = time.monotonic()
            return self._state

    def queue_depths(self) -> dict[str, int] | None:
        try:
            with Connection(
                self._broker_url,
                connect_timeout=READ_TIMEOUT_S,
                transport_options=self._transport_options,
            ) as conn:
                conn.ensure_connection(max_retries=1)
                return {queue: _depth(conn, queue) for queue in QUEUES}
        except Exception as exc:
            log.warning("metrics: the broker could not be read (%s)", type(exc).__name__)
            return None

    async def _redis_state(
        self, client: aioredis.Redis
    ) -> tuple[list[tuple[str, str, bool]] | None, int | None]:
        pipe = client.pipeline(transaction=False)
        for _, _, cooldown_key in self._deployments:
            pipe.pttl(cooldown_key)
        pipe.zcard(rk.DELAYED_JOBS)
        try:
            values = await asyncio.wait_for(pipe.execute(), READ_TIMEOUT_S)
        except Exception as exc:
            log.warning("metrics: Redis could not be read (%s)", type(exc).__name__)
            return None, None
        cooldowns = [
            (dep_id, group, int(ttl) > 0)
            for (dep_id, group, _), ttl in zip(self._deployments, values, strict=False)
        ]
        return cooldowns, int(values[-1])


def tenants_waiting(fair: FairRoom) -> dict[tuple[str, str], int] | None:
    """Jobs waiting in the fair rooms by (tenant, tier), over every model group; the
    TENANT_LABELS tenants with the most keep their name, the others count as `_other`."""
    try:
        rooms = fair.waiting()
    except Exception as exc:
        log.warning("metrics: the fair rooms could not be read (%s)", type(exc).__name__)
        return None
    totals: dict[tuple[str, str], int] = {}
    for w in rooms:
        totals[(w.tenant, w.tier)] = totals.get((w.tenant, w.tier), 0) + w.jobs
    named = {t for t, _ in sorted(totals.items(), key=lambda kv: -kv[1])[:TENANT_LABELS]}
    out: dict[tuple[str, str], int] = {}
    for (tenant, tier), jobs in totals.items():
        label = (tenant if (tenant, tier) in named else "_other", tier)
        out[label] = out.get(label, 0) + jobs
    return out


def outbox_counts(engine: Engine) -> dict[str, int] | None:
    """Pending and dead usage events (an index range on `status`)."""
    wanted = [OutboxStatus.PENDING.value, OutboxStatus.DEAD.value]
    stmt = (
        select(UsageOutbox.status, func.count())
        .where(UsageOutbox.status.in_(wanted))
        .group_by(UsageOutbox.status)
    )
    try:
        with engine.connect() as conn:
            counts = {str(status): int(n) for status, n in conn.execute(stmt).all()}
    except Exception as exc:
        log.warning("metrics: the outbox could not be read (%s)", type(exc).__name__)
        return None
    return {status: counts.get(status, 0) for status in wanted}


def _depth(conn: Connection, queue: str) -> int:
    """Messages ready in `queue`; a queue not declared yet holds none. On Redis, the
    length of its lists (kombu's passive declaration asks EXISTS, which it does not
    prefix with the fleet's `global_keyprefix`, so it would find no queue); on AMQP a
    passive declaration, which never creates a queue nor conflicts with its arguments."""
    channel = conn.channel()
    try:
        if conn.transport.driver_type == "redis":
            return int(channel._size(queue))
        return int(channel.queue_declare(queue, passive=True).message_count)
    except conn.channel_errors:
        return 0
    finally:
        with contextlib.suppress(Exception):
            channel.close()


class _StateCollector(Collector):
    def __init__(self, state: FleetState) -> None:
        self._state = state

    def collect(self) -> Iterator[Metric]:
        state = self._state
        up = GaugeMetricFamily(
            "llmfleet_fleet_state_up", "1 when the fleet state could be read.", labels=["source"]
        )
        up.add_metric(["broker"], 0.0 if state.queue_depth is None else 1.0)
        up.add_metric(["redis"], 0.0 if state.cooldowns is None else 1.0)
        up.add_metric(["database"], 0.0 if state.outbox is None else 1.0)
        yield up
        if state.outbox is not None:
            yield GaugeMetricFamily(
                "llmfleet_outbox_backlog",
                "Usage events waiting to be sent to Lago.",
                value=float(state.outbox[OutboxStatus.PENDING.value]),
            )
            yield GaugeMetricFamily(
                "llmfleet_outbox_dead_events",
                "Usage events Lago will not take (given up on; need a look).",
                value=float(state.outbox[OutboxStatus.DEAD.value]),
            )
        if state.queue_depth is not None:
            depth = GaugeMetricFamily(
                "llmfleet_queue_depth", "Messages waiting per priority queue.", labels=["queue"]
            )
            for queue, count in state.queue_depth.items():
                depth.add_metric([queue], float(count))
            yield depth
        if state.cooldowns is not None:
            cooling = GaugeMetricFamily(
                "llmfleet_cooldowns_active",
                "1 while the deployment is cooling down.",
                labels=["deployment", "model_group"],
            )
            for dep_id, group, active in state.cooldowns:
                cooling.add_metric([dep_id, group], 1.0 if active else 0.0)
            yield cooling
        if state.tenants_waiting is not None:
            tenants = GaugeMetricFamily(
                "llmfleet_tenant_waiting_jobs",
                "Jobs waiting for a model group's capacity (fair rooms), by tenant and tier.",
                labels=["tenant", "tier"],
            )
            for (tenant, tier), jobs in sorted(state.tenants_waiting.items()):
                tenants.add_metric([tenant, tier], float(jobs))
            yield tenants
        if state.waiting_for_capacity is not None:
            yield GaugeMetricFamily(
                "llmfleet_jobs_waiting_for_capacity",
                "Jobs waiting for a deployment to have capacity (the delayed set).",
                value=float(state.waiting_for_capacity),
            )


router = APIRouter(tags=["health"])


@router.get("/metrics", include_in_schema=False)
async def metrics(request: Request) -> Response:
    """This process's series (all processes' in multiprocess mode) and the fleet state."""
    reader: FleetStateReader = request.app.state.fleet_state
    ctx = get_context(request)
    state = await reader.read(ctx.redis, ctx.engine, ctx.fair)
    fleet = CollectorRegistry(auto_describe=False)
    fleet.register(_StateCollector(state))
    body = generate_latest(exposition_registry()) + generate_latest(fleet)
    return Response(body, media_type=CONTENT_TYPE_LATEST)


def install_metrics(app: FastAPI, settings: CommonSettings, config: FleetConfig) -> None:
    app.state.fleet_state = FleetStateReader(settings, config)
    app.include_router(router)
