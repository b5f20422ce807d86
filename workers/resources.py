"""Per-process resources, built once when a worker process starts and handed to tasks."""

from __future__ import annotations

import logging
import random
from collections.abc import Callable
from dataclasses import dataclass, field

import httpx2 as httpx
import redis
import redis.asyncio as aioredis
from redis import Redis
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from models.db import make_engine, make_sessionmaker
from models.fair_intake import FairIntake
from models.fair_room import FairRoom
from models.fair_share import ShareBook
from models.fleet_config import ConfigError, FleetConfig, load_fleet_config, warnings_text
from models.settings import WorkerSettings
from workers.accounting.billing import PayerCache
from workers.admission import Admission
from workers.calls import Calls
from workers.claimer import Claimer
from workers.delayed import DelayedJobs
from workers.event_loop import EventLoop, client_shards
from workers.hooks import Hooks, load_hooks
from workers.leases import Leases
from workers.router import Router
from workers.writer import EndWriter

__all__ = ["WorkerContext", "build_context", "load_checked_config"]

log = logging.getLogger(__name__)

KEEPALIVE_EXPIRY_S = 3.0
#: How long a worker shutting down waits for the runs in flight on its loop.
DRAIN_TIMEOUT_S = 60.0
#: Connections of the loop's Redis client (the router's scripts), shared by its calls.
LOOP_REDIS_CONNECTIONS = 32


def _no_post_call_publisher(job_id: str, claim: int) -> None:
    raise RuntimeError("no post-call publisher configured for this process")


def _no_execute_publisher(job_id: str, priority: int) -> None:
    raise RuntimeError("no execute publisher configured for this process")


@dataclass
class WorkerContext:
    settings: WorkerSettings
    config: FleetConfig
    engine: Engine
    sessions: sessionmaker[Session]
    redis: redis.Redis
    #: For webhooks and Lago.
    http: httpx.Client
    #: Provider calls and waits, on the process's event loop.
    calls: Calls
    router: Router
    delayed: DelayedJobs
    leases: Leases
    #: Each owner's billing and budgets, trusted for a few seconds.
    payers: PayerCache
    #: The lanes' slots: interactive jobs, and everything else (workers.admission).
    admission: Admission
    #: The broker's Redis when it is not `redis` (its epoch marker is checked too).
    broker_redis: Redis | None = None
    rng: random.Random = field(default_factory=random.Random)
    #: Publishes the post-call task of a finished claim (set by the Celery app).
    publish_post_call: Callable[[str, int], None] = field(default=_no_post_call_publisher)
    #: Pre- and post-call hooks of the fleet config, imported at start.
    hooks: Hooks = field(default_factory=Hooks)
    #: The model groups' fair rooms (models.fair_room); None with fair share off.
    fair: FairRoom | None = None
    #: Publishes an execute message (set by the Celery app): jobs a room lets through.
    publish_execute: Callable[[str, int], None] = field(default=_no_execute_publisher)
    #: Each key's tenant, tier and weight, trusted for a few seconds.
    shares: ShareBook = field(init=False)
    #: Batch lines of a tenant waiting in a fair room join it at dispatch.
    fair_intake: FairIntake | None = field(init=False)
    #: The threads that claim jobs for the tasks, several messages' at once: one per
    #: lane, so that an interactive claim never waits behind a wave of batch lines'.
    claimer: Claimer = field(init=False)
    interactive_claimer: Claimer = field(init=False)
    #: The thread that stores what the runs on the loop came to (workers.writer).
    writer: EndWriter = field(init=False)

    def __post_init__(self) -> None:
        from workers.run_store import store  # run_store needs this module's WorkerContext

        self.shares = ShareBook(self.sessions)
        aliases = self.config.router_settings.model_group_alias
        self.fair_intake = FairIntake(self.fair, self.shares, aliases) if self.fair else None
        self.claimer = Claimer(self.sessions, self.settings.lease_seconds)
        self.interactive_claimer = Claimer(self.sessions, self.settings.lease_seconds)
        self.writer = EndWriter(lambda runs, publish: store(self, runs, publish), self.leases)

    def epoch_clients(self) -> list[Redis]:
        """Every Redis whose loss of data loses jobs' messages or wake-ups."""
        return [self.redis] + ([self.broker_redis] if self.broker_redis is not None else [])

    def close(self) -> None:
        # The runs handed over to the loop end and are stored (a warm shutdown)
        if not self.writer.drain(DRAIN_TIMEOUT_S):
            log.warning("shutting down with runs in flight: their leases will lapse")
        self.writer.close()
        self.claimer.close()
        self.interactive_claimer.close()
        self.leases.stop()
        self.calls.close()
        self.http.close()
        self.redis.close()
        if self.broker_redis is not None:
            self.broker_redis.close()
        self.engine.dispose()


def load_checked_config(settings: WorkerSettings) -> FleetConfig:
    """The fleet config: a bad config stops the worker at start, not at the first job."""
    if settings.config_path is None:
        raise ConfigError("LLMFLEET_CONFIG is not set: the worker needs a fleet config")
    config = load_fleet_config(settings.config_path)
    if warning := warnings_text(config):
        log.warning("%s", warning)
    return config


def build_context(settings: WorkerSettings) -> WorkerContext:
    config = load_checked_config(settings)
    hooks = load_hooks(config.llmfleet_settings)
    engine = make_engine(settings.database_url, pool_size=settings.db_pool_size)
    timeout = httpx.Timeout(config.router_settings.timeout)

    def limits(connections: int) -> httpx.Limits:
        # Idle connections are dropped before the usual 5 s server-side idle timeout,
        # so a call rarely lands on a socket the server is closing.
        return httpx.Limits(
            max_connections=connections,
            max_keepalive_connections=connections,
            keepalive_expiry=KEEPALIVE_EXPIRY_S,
        )

    def async_client(connections: int) -> httpx.AsyncClient:
        return httpx.AsyncClient(limits=limits(connections), timeout=timeout)

    client = redis.Redis.from_url(
        settings.redis_url,
        socket_timeout=10,
        max_connections=2 * settings.concurrency + 8,
        health_check_interval=30,
    )
    broker = settings.broker_url
    broker_redis = None
    if broker.startswith(("redis://", "rediss://")) and broker != settings.redis_url:
        broker_redis = redis.Redis.from_url(broker, socket_timeout=10, max_connections=4)
    rng = random.Random()
    # The router's scripts are awaited on the loop, through a client of its own.
    loop_redis = aioredis.Redis(
        connection_pool=aioredis.BlockingConnectionPool.from_url(
            settings.redis_url,
            max_connections=LOOP_REDIS_CONNECTIONS,
            timeout=10,
            socket_timeout=10,
        )
    )
    # Provider calls: the general lane's (-c) and the interactive lane's (-c).
    shards = client_shards(async_client, 2 * settings.concurrency)
    calls = Calls(EventLoop(shards, loop_redis))
    router = Router(config, loop_redis, rng)
    http = httpx.Client(limits=limits(32), timeout=timeout)  # webhooks and Lago
    sessions = make_sessionmaker(engine)
    return WorkerContext(
        settings=settings,
        config=config,
        engine=engine,
        sessions=sessions,
        redis=client,
        http=http,
        calls=calls,
        router=router,
        delayed=DelayedJobs(client),
        leases=Leases(sessions, settings.lease_seconds, settings.job_timeout),
        payers=PayerCache(sessions),
        admission=Admission(settings.concurrency),
        broker_redis=broker_redis,
        rng=rng,
        hooks=hooks,
        fair=FairRoom(client, loop_redis, settings.fair_share_half_life)
        if settings.fair_share
        else None,
    )
