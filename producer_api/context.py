"""What the API process builds once at start and every request uses."""

from __future__ import annotations

from dataclasses import dataclass

import redis.asyncio as aioredis
from fastapi import Request
from redis import Redis
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from models.fleet_config import FleetConfig
from models.key_limits import KeyLimiter
from models.settings import ApiSettings
from models.storage import FileStorage
from producer_api.intake import Intake
from producer_api.publish import Publisher
from producer_api.waiters import JobWaiters

__all__ = ["ApiContext", "get_context"]


@dataclass
class ApiContext:
    settings: ApiSettings
    config: FleetConfig
    engine: Engine
    sessions: sessionmaker[Session]
    redis: aioredis.Redis
    publisher: Publisher
    #: Stores and publishes accepted jobs in groups (one writer thread).
    intake: Intake
    waiters: JobWaiters
    storage: FileStorage
    #: Virtual keys' rate limits (sync Redis: intake runs in the thread pool).
    limiter: KeyLimiter
    redis_sync: Redis


def get_context(request: Request) -> ApiContext:
    ctx: ApiContext = request.app.state.ctx
    return ctx
