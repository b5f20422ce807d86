"""A whole fleet for one test: its own mock providers, fleet config, worker processes
and API process, on dedicated Redis db numbers (the broker's db becomes a RabbitMQ vhost
of its own under TEST_BROKER_URL: tests/support/brokers.py)."""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import redis
import yaml
from sqlalchemy import Engine, text

from models import fleet_name
from tests.support.brokers import REDIS_BASE, Broker, broker_for
from tests.support.processes import Proc, start_api, start_beat, start_mock, start_worker

MASTER_KEY = "sk-test-master-key"


@dataclass
class MiniFleet:
    api_url: str
    mocks: dict[str, str]
    workers: list[Proc]
    engine: Engine
    redis: redis.Redis
    procs: list[Proc] = field(default_factory=list)
    broker: Broker | None = None
    #: What the worker processes were started with, so that a test can start another.
    worker_env: dict[str, str] = field(default_factory=dict)
    log_dir: Path | None = None
    concurrency: int = 50

    def start_worker(self, name: str) -> Proc:
        assert self.log_dir is not None
        proc = start_worker(self.worker_env, self.log_dir, name, concurrency=self.concurrency)
        self.workers.append(proc)
        self.procs.append(proc)
        return proc

    def client(self, key: str = MASTER_KEY) -> httpx.Client:
        headers = {"Authorization": f"Bearer {key}"}
        return httpx.Client(base_url=self.api_url, headers=headers, timeout=60)

    def stats(self, mock: str) -> dict[str, Any]:
        return httpx.get(f"{self.mocks[mock]}/_mock/stats").json()

    def configure(self, mock: str, **config: Any) -> None:
        httpx.put(f"{self.mocks[mock]}/_mock/config", json=config).raise_for_status()

    def submit(
        self, content: str, model: str = "mock-model", key: str = MASTER_KEY, **extra: Any
    ) -> str:
        body = {"model": model, "messages": [{"role": "user", "content": content}], **extra}
        with self.client(key) as client:
            response = client.post("/v1/jobs", json=body)
        assert response.status_code == 202, response.text
        return str(response.json()["id"])

    def submit_many(self, contents: list[str], **extra: Any) -> list[str]:
        """Submit from 16 threads, so jobs arrive faster than they finish."""
        with ThreadPoolExecutor(16) as pool:
            return list(pool.map(lambda c: self.submit(c, **extra), contents))

    def wait(self, job_id: str, timeout: float = 120) -> dict[str, Any]:
        until = time.monotonic() + timeout
        with self.client() as client:
            while True:
                left = until - time.monotonic()
                job: dict[str, Any] = client.get(
                    f"/v1/jobs/{job_id}", params={"wait": max(0, min(20, left))}
                ).json()
                if job["status"] not in ("queued", "running") or left <= 0:
                    return job

    def wait_all(self, ids: list[str], timeout: float = 180) -> list[dict[str, Any]]:
        until = time.monotonic() + timeout
        return [self.wait(i, max(1.0, until - time.monotonic())) for i in ids]


@contextlib.contextmanager
def mini_fleet(
    log_dir: Path,
    db_url: str,
    engine: Engine,
    config: Callable[[dict[str, str]], dict[str, Any]] | Path,
    mocks: dict[str, list[str]],
    *,
    workers: int = 1,
    concurrency: int = 50,
    redis_base: str = REDIS_BASE,
    dbs: tuple[int, int] = (10, 11),
    extra_env: dict[str, str | None] | None = None,
    worker_env: dict[str, str] | None = None,
) -> Iterator[MiniFleet]:
    """`config` builds the fleet config from the mock URLs (name -> base URL), or is a
    config file used as it is; `worker_env` is added to the workers' environment only;
    a variable given as None in `extra_env` is unset."""
    state = redis.Redis.from_url(f"{redis_base}/{dbs[0]}")
    state.flushdb()
    broker = broker_for(dbs[1]) if redis_base == REDIS_BASE else Broker(f"{redis_base}/{dbs[1]}")
    broker.reset()
    with engine.begin() as conn:
        conn.execute(
            text(
                "TRUNCATE jobs, batches, files, webhook_deliveries, api_keys, teams, customers,"
                " spend, usage_outbox, budgets CASCADE"
            )
        )
    given: dict[str, str | None] = {
        **os.environ,
        "DATABASE_URL": db_url,
        # The name this process uses for the fleet's keys (models.fleet_name).
        "LLMFLEET_NAME": fleet_name.current(),
        "REDIS_URL": f"{redis_base}/{dbs[0]}",
        "BROKER_URL": broker.url,
        "LLMFLEET_MASTER_KEY": MASTER_KEY,
        "PYTHONUNBUFFERED": "1",
        # Several fleets share the test server's 100 connections: keep pools small.
        "LLMFLEET_WORKER_DB_POOL": "8",
        "LLMFLEET_API_DB_POOL": "5",
        "LLMFLEET_FILES_DIR": str(log_dir / "files"),
        **(extra_env or {}),
    }
    env = {name: value for name, value in given.items() if value is not None}
    procs: list[Proc] = []
    try:
        urls: dict[str, str] = {}
        for name, flags in mocks.items():
            proc, urls[name] = start_mock(env, log_dir, *flags, name=f"mock-{name}")
            procs.append(proc)
        path = log_dir / "fleet.yaml"
        if isinstance(config, Path):
            path.write_bytes(config.read_bytes())
        else:
            path.write_text(yaml.safe_dump(config(urls)))
        env["LLMFLEET_CONFIG"] = str(path)
        workers_env = {**env, **(worker_env or {})}
        worker_procs = [
            start_worker(workers_env, log_dir, f"w{i}", concurrency=concurrency)
            for i in range(workers)
        ]
        procs += worker_procs
        procs.append(start_beat(env, log_dir))
        api, api_url = start_api(env, log_dir)
        procs.append(api)
        yield MiniFleet(
            api_url,
            urls,
            worker_procs,
            engine,
            state,
            procs,
            broker,
            workers_env,
            log_dir,
            concurrency,
        )
    except BaseException:
        # What each process printed last is the evidence of a failure in its middle:
        # pytest shows it with the test's output.
        for proc in procs:
            print(f"--- {proc.name} ({proc.exit_reason() or 'running'}), last lines:")
            print(proc.output()[-4000:])
        raise
    finally:
        for proc in reversed(procs):
            proc.stop()
        broker.close()


def deployment(
    name: str, mock_url: str, group: str = "mock-model", **params: Any
) -> dict[str, Any]:
    return {
        "model_name": group,
        "litellm_params": {
            "model": "openai_compatible/mock-model",
            "api_base": f"{mock_url}/v1",
            "api_key": "k",
            **params,
        },
        "model_info": {"id": name},
    }
