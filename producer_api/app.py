"""The producer API: accept, validate, persist, enqueue, report."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator

import redis
import redis.asyncio as aioredis
from fastapi import Depends, FastAPI

from models import tracing
from models.budget_reservations import Reservations
from models.db import make_engine, make_sessionmaker
from models.fair_intake import FairIntake
from models.fair_room import FairRoom
from models.fair_share import ShareBook
from models.fleet_config import ConfigError, load_fleet_config, warnings_text
from models.key_limits import KeyLimiter
from models.logging_setup import configure_logging
from models.settings import ApiSettings
from models.storage import LocalFileStorage
from producer_api.body_limit import BodyLimit
from producer_api.context import ApiContext
from producer_api.edge import RequestEdge
from producer_api.errors import install_error_handlers, reject_nul_params
from producer_api.intake import Intake
from producer_api.metrics import install_metrics
from producer_api.publish import Publisher
from producer_api.routes import (
    batches,
    budgets,
    chat,
    deployments,
    files,
    health,
    jobs,
    keys,
    lago_webhooks,
    messages,
    messages_batches,
    models,
    responses,
    spend,
    tenants,
    ui,
)
from producer_api.routes import config as config_routes
from producer_api.stream_hub import StreamHub
from producer_api.waiters import JobWaiters

__all__ = ["create_app"]

log = logging.getLogger(__name__)

#: How long a stream waits for a relay connection when all are taken.
STREAM_CONNECTION_WAIT_S = 30.0
#: Routes whose body is a batch input, held to LLMFLEET_MAX_FILE_BYTES.
LARGE_BODY_ROUTES = (("POST", "/v1/files"), ("POST", "/v1/messages/batches"))
#: Room for an upload's multipart boundaries, part headers and `purpose` field.
MULTIPART_FRAMING = 64 * 1024


def create_app(settings: ApiSettings | None = None) -> FastAPI:
    """Build the app; configuration problems stop it here, before it serves."""
    settings = settings or ApiSettings()
    configure_logging(settings.log_format)  # every uvicorn process builds the app once
    if settings.config_path is None:
        raise ConfigError("LLMFLEET_CONFIG is not set: the API needs a fleet config")
    config = load_fleet_config(settings.config_path)
    if settings.master_key is None:
        # LiteLLM's place for it, often `os.environ/LITELLM_MASTER_KEY`.
        settings = settings.model_copy(update={"master_key": config.master_key})
    if settings.master_key is None:
        raise ConfigError(
            "LLMFLEET_MASTER_KEY is not set (nor general_settings.master_key in the fleet "
            "config): the API would accept no key"
        )
    if warning := warnings_text(config):
        log.warning("%s", warning)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        engine = make_engine(settings.database_url, pool_size=settings.db_pool_size)
        # Blocking Redis for checks made on the request's worker thread (limits, budgets).
        sync_redis = redis.Redis.from_url(settings.redis_url)
        sessions = make_sessionmaker(engine)
        publisher = Publisher(settings)
        fair = FairRoom(sync_redis, half_life_s=settings.fair_share_half_life)
        # with fair share on, a tenant's new jobs join its jobs waiting for capacity
        fair_intake = (
            FairIntake(fair, ShareBook(sessions), config.router_settings.model_group_alias)
            if settings.fair_share
            else None
        )
        streams = aioredis.Redis(
            connection_pool=aioredis.BlockingConnectionPool.from_url(
                settings.redis_url,
                max_connections=settings.stream_connections,
                timeout=STREAM_CONNECTION_WAIT_S,
            )
        )
        ctx = ApiContext(
            settings=settings,
            config=config,
            engine=engine,
            sessions=sessions,
            redis=aioredis.Redis.from_url(settings.redis_url),
            streams=streams,
            hub=StreamHub(streams),
            publisher=publisher,
            intake=Intake(sessions, publisher, fair_intake.divert if fair_intake else None),
            waiters=JobWaiters(settings.redis_url),
            storage=LocalFileStorage(settings.files_dir),
            limiter=KeyLimiter(sync_redis),
            redis_sync=sync_redis,
            reservations=Reservations(sync_redis),
            fair=fair,
        )
        ctx.waiters.start()
        ctx.hub.start()
        app.state.ctx = ctx
        try:
            yield
        finally:
            await ctx.waiters.stop()
            await ctx.hub.stop()
            await ctx.redis.aclose()
            await ctx.streams.aclose()
            ctx.limiter.close()
            ctx.intake.close()
            ctx.publisher.close()
            engine.dispose()

    app = FastAPI(
        title="llmfleet",
        version="0.1.0",
        description="Durable LLM completion jobs on a fleet of router-aware workers.",
        lifespan=lifespan,
        dependencies=[Depends(reject_nul_params)],
    )
    install_error_handlers(app)
    app.add_middleware(
        BodyLimit,
        limit=settings.max_body_bytes,
        large_limit=settings.max_file_bytes + MULTIPART_FRAMING,
        large_routes=LARGE_BODY_ROUTES,
    )
    # Added last, so it runs first: paths are rewritten before any routing.
    app.add_middleware(RequestEdge)
    app.include_router(health.router)
    app.include_router(config_routes.router)
    install_metrics(app, settings, config)
    app.include_router(jobs.router)
    app.include_router(chat.router)
    app.include_router(models.router)
    app.include_router(deployments.router)
    app.include_router(files.router)
    app.include_router(batches.router)
    app.include_router(responses.router)
    app.include_router(messages.router)
    app.include_router(messages_batches.router)
    app.include_router(spend.router)
    app.include_router(budgets.router)
    app.include_router(keys.router)
    app.include_router(tenants.teams)
    app.include_router(tenants.customers)
    app.include_router(lago_webhooks.router)
    app.include_router(ui.router)
    if tracing.setup("llmfleet-api"):
        from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor

        # The request's span; a job's intake span goes under it (producer_api.jobs_service).
        FastAPIInstrumentor.instrument_app(app, excluded_urls="healthz,readyz,metrics,health/")
    return app
