"""The API's fleet-state gauges, read from a real Redis (broker and state on db 3) and
a real PostgreSQL database."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import pytest
import redis
import redis.asyncio as aioredis
from prometheus_client import CollectorRegistry, generate_latest
from sqlalchemy import Engine, create_engine, text

from models import fleet_name
from models import redis_keys as rk
from models.accounting import UsageOutbox
from models.db import make_sessionmaker
from models.fair_room import FairRoom
from models.fair_share import Share
from models.fleet_config import parse_fleet_config
from models.settings import CommonSettings
from models.tables import utcnow
from producer_api.metrics import FleetStateReader, _StateCollector
from tests.conftest import migrated_database
from tests.support.brokers import REDIS_BASE

URL = f"{REDIS_BASE}/3"
CONFIG = parse_fleet_config(
    {
        "model_list": [
            {"model_name": "g", "litellm_params": {"model": "openai/a"}, "model_info": {"id": "a"}},
            {"model_name": "g", "litellm_params": {"model": "openai/b"}, "model_info": {"id": "b"}},
        ]
    },
    {},
)


@pytest.fixture(scope="module")
def engine() -> Iterator[Engine]:
    with migrated_database("llmfleet_test_api_metrics") as (_url, engine):
        yield engine


@pytest.fixture
def state() -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(URL)
    client.flushdb()
    yield client
    client.flushdb()


def exposition(reader: FleetStateReader, engine: Engine) -> str:
    async def read() -> str:
        client = aioredis.Redis.from_url(URL)
        rooms = FairRoom(redis.Redis.from_url(URL))
        try:
            snapshot = await reader.read(client, engine, rooms)
        finally:
            await client.aclose()
        registry = CollectorRegistry(auto_describe=False)
        registry.register(_StateCollector(snapshot))
        return generate_latest(registry).decode()

    return asyncio.run(read())


def add_outbox(engine: Engine, statuses: list[str]) -> None:
    with make_sessionmaker(engine).begin() as session:
        session.execute(text("TRUNCATE usage_outbox"))
        session.add_all(
            UsageOutbox(
                transaction_id=f"t{i}",
                external_subscription_id="sub",
                code="tokens",
                timestamp=0,
                properties={},
                status=status,
                attempts=0,
                next_attempt_at=utcnow(),
                created_at=utcnow(),
            )
            for i, status in enumerate(statuses)
        )


def test_gauges_show_the_fleet_state(state: redis.Redis, engine: Engine) -> None:
    # Given two messages in the low queue, deployment b cooling, a job waiting for
    # capacity, and usage events: two to send, one sent, one dead
    state.lpush(f"{fleet_name.current()}:llmfleet.low", "m1", "m2")  # the fleet's broker keys
    state.set(rk.deployment_keys("b")[0], "1", px=30_000)
    state.zadd(rk.DELAYED_JOBS, {"job_1|5": int(time.time() * 1000) + 60_000})
    add_outbox(engine, ["pending", "pending", "sent", "dead"])
    # and three jobs of two tenants waiting for group g's capacity in its fair room
    rooms = FairRoom(state)
    for job, share in (
        ("j1", Share("team_a")),
        ("j2", Share("team_a")),
        ("j3", Share("k", "batch")),
    ):
        rooms.wait("g", share, job, 5, 10, due_ms=None, score=None)
    # When the API is scraped
    text = exposition(FleetStateReader(CommonSettings(REDIS_URL=URL), CONFIG), engine)
    # Then
    assert 'llmfleet_queue_depth{queue="llmfleet.low"} 2.0' in text
    assert 'llmfleet_queue_depth{queue="llmfleet.high"} 0.0' in text
    assert 'llmfleet_cooldowns_active{deployment="b",model_group="g"} 1.0' in text
    assert 'llmfleet_cooldowns_active{deployment="a",model_group="g"} 0.0' in text
    assert "llmfleet_jobs_waiting_for_capacity 1.0" in text
    assert 'llmfleet_tenant_waiting_jobs{tenant="team_a",tier="default"} 2.0' in text
    assert 'llmfleet_tenant_waiting_jobs{tenant="k",tier="batch"} 1.0' in text
    assert "llmfleet_outbox_backlog 2.0" in text
    assert "llmfleet_outbox_dead_events 1.0" in text
    assert 'llmfleet_fleet_state_up{source="broker"} 1.0' in text
    assert 'llmfleet_fleet_state_up{source="database"} 1.0' in text


def test_unreachable_sources_are_reported_not_raised(state: redis.Redis) -> None:
    settings = CommonSettings(REDIS_URL=URL, BROKER_URL="redis://127.0.0.1:1/0")
    no_database = create_engine("postgresql+psycopg://postgres@127.0.0.1:1/none")
    text = exposition(FleetStateReader(settings, CONFIG), no_database)
    assert 'llmfleet_fleet_state_up{source="broker"} 0.0' in text
    assert 'llmfleet_fleet_state_up{source="database"} 0.0' in text
    assert 'llmfleet_fleet_state_up{source="redis"} 1.0' in text
    assert "llmfleet_queue_depth" not in text and "llmfleet_outbox_backlog" not in text


def test_reads_are_cached_between_scrapes(state: redis.Redis, engine: Engine) -> None:
    reader = FleetStateReader(CommonSettings(REDIS_URL=URL), CONFIG)
    assert "llmfleet_jobs_waiting_for_capacity 0.0" in exposition(reader, engine)
    state.zadd(rk.DELAYED_JOBS, {"job_2|5": 1})
    assert "llmfleet_jobs_waiting_for_capacity 0.0" in exposition(reader, engine)
