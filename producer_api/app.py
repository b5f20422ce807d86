"""The producer API: accept, validate, persist, enqueue, report."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import redis
import redis.asyncio as aioredis
from fastapi import Depends, FastAPI

from models.db import make_engine, make_sessionmaker
from models.fleet_config import ConfigError, load_fleet_config
from models.key_limits import KeyLimiter
from models.logging_setup import configure_logging
from models.settings import ApiSettings
from models.storage import LocalFileStorage
from producer_api.body_limit import BodyLimit
from producer_api.context import ApiContext
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
    messages_batches,
    models,
    spend,
    tenants,
    ui,
)
from producer_api.waiters import JobWaiters

__all__ = ["create_app"]

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
    if settings.master_key is None:
        raise ConfigError("LLMFLEET_MASTER_KEY is not set: the API would accept no key")
    config = load_fleet_config(settings.config_path)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        engine = make_engine(settings.database_url, pool_size=settings.db_pool_size)
        # Blocking Redis for checks made on the request's worker thread (limits, budgets).
        sync_redis = redis.Redis.from_url(settings.redis_url)
        sessions = make_sessionmaker(engine)
        publisher = Publisher(settings)
        ctx = ApiContext(
            settings=settings,
            config=config,
            engine=engine,
            sessions=sessions,
            redis=aioredis.Redis.from_url(settings.redis_url),
            publisher=publisher,
            intake=Intake(sessions, publisher),
            waiters=JobWaiters(settings.redis_url),
            storage=LocalFileStorage(settings.files_dir),
            limiter=KeyLimiter(sync_redis),
            redis_sync=sync_redis,
        )
        ctx.waiters.start()
        app.state.ctx = ctx
        try:
            yield
        finally:
            await ctx.waiters.stop()
            await ctx.redis.aclose()
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
    app.include_router(health.router)
    install_metrics(app, settings, config)
    app.include_router(jobs.router)
    app.include_router(chat.router)
    app.include_router(models.router)
    app.include_router(deployments.router)
    app.include_router(files.router)
    app.include_router(batches.router)
    app.include_router(messages_batches.router)
    app.include_router(spend.router)
    app.include_router(budgets.router)
    app.include_router(keys.router)
    app.include_router(tenants.teams)
    app.include_router(tenants.customers)
    app.include_router(lago_webhooks.router)
    app.include_router(ui.router)
    return app
