"""Session-wide real parts: PostgreSQL, Redis, the mock provider, a Celery worker
process and the API process, all talking over real connections.

Redis: router state and pub/sub use one db number (flushed per test), the broker
another (flushed once per session: flushing a live broker's bindings loses messages).
`TEST_BROKER_URL=amqp://…/vhost` puts the broker on RabbitMQ instead (tests/support/brokers.py).
PostgreSQL: a database of its own, migrated once, truncated per test; `TEST_DB_SUFFIX`
renames every test database, so that two runs can share one server.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import psycopg
import pytest
import redis
import yaml
from celery import Celery
from sqlalchemy import Engine, text
from sqlalchemy.exc import OperationalError

from models import fleet_name, migrate
from models.db import make_engine
from tests.support.brokers import REDIS_BASE, Broker, broker_for
from tests.support.processes import Proc, start_api, start_beat, start_mock, start_worker
from tests.support.webhooks import WEBHOOK_SECRET, Receiver

MASTER_KEY = "sk-test-master-key"
#: Standard Webhooks' example secret: `whsec_` + base64 of 24 bytes.
PG_ADMIN_URL = os.environ.get("TEST_PG_ADMIN_URL", "postgresql://postgres@127.0.0.1:5432/test")
#: Redis db numbers of the session fleet (state, broker); TEST_STATE_DB / TEST_BROKER_DB
#: let two runs on one Redis keep apart (with TEST_DB_SUFFIX for PostgreSQL).
STATE_DB = int(os.environ.get("TEST_STATE_DB", "14"))
BROKER_DB = int(os.environ.get("TEST_BROKER_DB", "15"))
TEST_DB = "llmfleet_test"


def _pg_url(dbname: str) -> str:
    return PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{dbname}"


def recreate_database(name: str) -> str:
    name += os.environ.get("TEST_DB_SUFFIX", "")
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')
    return _pg_url(name)


@contextlib.contextmanager
def migrated_database(name: str) -> Iterator[tuple[str, Engine]]:
    """A fresh PostgreSQL database of its own for a test module, migrated to head."""
    url = recreate_database(name)
    migrate.upgrade(url)
    engine = make_engine(url)
    try:
        yield url, engine
    finally:
        engine.dispose()


@dataclass
class Fleet:
    """Handles on the running fleet of one test session."""

    api_url: str
    mock_url: str
    env: dict[str, str]
    engine: Engine
    redis: redis.Redis
    broker: Broker
    celery: Celery
    worker: Proc
    log_dir: Path

    def client(self, key: str = MASTER_KEY) -> httpx.Client:
        return httpx.Client(
            base_url=self.api_url, headers={"Authorization": f"Bearer {key}"}, timeout=60
        )

    def mock_stats(self) -> dict[str, object]:
        return httpx.get(f"{self.mock_url}/_mock/stats").json()


def fleet_config(mock_url: str) -> dict[str, object]:
    base = f"{mock_url}/v1"
    dep = {
        "model": "openai_compatible/mock-model",
        "api_base": base,
        "api_key": "os.environ/MOCK_KEY",
    }
    return {
        "model_list": [
            {"model_name": "mock-model", "litellm_params": dep, "model_info": {"id": "mock-a"}},
            {"model_name": "mock-model", "litellm_params": dep, "model_info": {"id": "mock-b"}},
        ],
        "router_settings": {"num_retries": 1, "timeout": 30},
    }


@pytest.fixture(scope="session")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    log_dir = tmp_path_factory.mktemp("fleet-logs")
    db_url = recreate_database(TEST_DB)
    migrate.upgrade(db_url)
    broker = broker_for(BROKER_DB, own_vhost=False)
    broker.reset()
    env = {
        **os.environ,
        "DATABASE_URL": db_url,
        # The name this process uses for the fleet's keys (models.fleet_name).
        "LLMFLEET_NAME": fleet_name.current(),
        "REDIS_URL": f"{REDIS_BASE}/{STATE_DB}",
        "BROKER_URL": broker.url,
        "LLMFLEET_MASTER_KEY": MASTER_KEY,
        "LLMFLEET_WEBHOOK_SECRET": WEBHOOK_SECRET,
        "MOCK_KEY": "mock-secret",
        "PYTHONUNBUFFERED": "1",
        # Several fleets share the test server's 100 connections: keep pools small.
        "LLMFLEET_WORKER_DB_POOL": "8",
        "LLMFLEET_API_DB_POOL": "5",
        "LLMFLEET_FILES_DIR": str(log_dir / "files"),
    }
    mock, mock_url = start_mock(env, log_dir, "--seed", "1")
    config_path = log_dir / "fleet.yaml"
    config_path.write_text(yaml.safe_dump(fleet_config(mock_url)))
    env["LLMFLEET_CONFIG"] = str(config_path)
    worker = start_worker(env, log_dir, "w1")
    beat = start_beat(env, log_dir)
    api, api_url = start_api(env, log_dir)
    celery = broker.celery
    engine = make_engine(db_url)
    try:
        yield Fleet(
            api_url=api_url,
            mock_url=mock_url,
            env=env,
            engine=engine,
            redis=redis.Redis.from_url(env["REDIS_URL"]),
            broker=broker,
            celery=celery,
            worker=worker,
            log_dir=log_dir,
        )
    finally:
        for proc in (api, beat, worker, mock):
            proc.stop()
        engine.dispose()
        broker.close()


@pytest.fixture
def clean_fleet(fleet: Fleet) -> Fleet:
    """The session fleet with empty tables, fresh Redis state and a fresh mock."""
    truncate = text(
        "TRUNCATE jobs, batches, files, webhook_deliveries, api_keys, teams, customers,"
        " spend, usage_outbox, budgets CASCADE"
    )
    for attempt in range(5):
        # A post-call task of the previous test may still be writing: retry its deadlock.
        try:
            with fleet.engine.begin() as conn:
                conn.execute(truncate)
            break
        except OperationalError:
            if attempt == 4:
                raise
            time.sleep(0.5)
    fleet.redis.flushdb()
    httpx.post(f"{fleet.mock_url}/_mock/reset")
    httpx.put(
        f"{fleet.mock_url}/_mock/config",
        json={"latency": "0", "error_rate": 0, "rate_429": 0, "malformed_rate": 0},
    )
    return fleet


@pytest.fixture
def receiver() -> Iterator[Callable[..., Receiver]]:
    """Start local webhook receivers; all are closed when the test ends."""
    started: list[Receiver] = []

    def start(fail_first: int = 0, delay: float = 0.0) -> Receiver:
        started.append(Receiver(fail_first, delay))
        return started[-1]

    yield start
    for r in started:
        r.close()
