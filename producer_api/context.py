"""What the API process builds once at start and every request uses."""

from __future__ import annotations

from dataclasses import dataclass

import redis.asyncio as aioredis
from fastapi import Request
from redis import Redis
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from models.budget_reservations import Reservations
from models.fair_room import FairRoom
from models.fleet_config import FleetConfig
from models.key_limits import KeyLimiter
from models.settings import ApiSettings
from models.storage import FileStorage
from producer_api.intake import Intake
from producer_api.publish import Publisher
from producer_api.stream_hub import StreamHub
from producer_api.waiters import JobWaiters

__all__ = ["ApiContext", "get_context"]


@dataclass
class ApiContext:
    settings: ApiSettings
    config: FleetConfig
    engine: Engine
    sessions: sessionmaker[Session]
    redis: aioredis.Redis
    #: For relaying streams: the hub's XREAD and the relays' own reads, from a blocking
    #: pool of LLMFLEET_STREAM_CONNECTIONS (producer_api.stream_relay).
    streams: aioredis.Redis
    #: The one XREAD that follows every stream this process relays.
    hub: StreamHub
    publisher: Publisher
    #: Stores and publishes accepted jobs in groups (one writer thread).
    intake: Intake
    waiters: JobWaiters
    storage: FileStorage
    #: Virtual keys' rate limits (sync Redis: intake runs in the thread pool).
    limiter: KeyLimiter
    redis_sync: Redis
    #: Budget reservations of interactive jobs (models.budget_reservations).
    reservations: Reservations
    #: The model groups' fair rooms (what waits there: /v1/deployments, /ui, metrics).
    fair: FairRoom


def get_context(request: Request) -> ApiContext:
    ctx: ApiContext = request.app.state.ctx
    return ctx
