"""The entitlement pre-check end to end: real API, worker, beat and mock provider, a
Lago stand-in, and signed Lago webhooks. A denied job calls no provider; an allowed
subscription is looked up once per TTL; the policy decides when Lago is down, and a
fail-open job's usage still reaches the outbox."""

from __future__ import annotations

import contextlib
import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from sqlalchemy import Engine, text

from models.entitlement import lago_signature
from tests.conftest import migrated_database
from tests.support.fleet import MiniFleet, deployment, mini_fleet
from tests.support.lago import API_KEY, LagoStandIn
from tests.support.processes import free_port

HMAC_KEY = "lago-hmac-key"


@pytest.fixture(scope="module")
def database() -> Iterator[tuple[str, Engine]]:
    with migrated_database("llmfleet_test_entitlement_fleet") as (url, engine):
        yield url, engine


@pytest.fixture(scope="module")
def private_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A redis-server of this module's own: its fleets flush db numbers freely."""
    port = free_port()
    data_dir = str(tmp_path_factory.mktemp("redis"))
    argv = ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", ""]
    argv += ["--appendonly", "no", "--dir", data_dir]
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL)
    base = f"redis://127.0.0.1:{port}"
    try:
        until = time.monotonic() + 10
        while True:
            with contextlib.suppress(redis.ConnectionError):
                if redis.Redis.from_url(base).ping():
                    break
            assert time.monotonic() < until, "redis-server did not start"
            time.sleep(0.05)
        yield base
    finally:
        proc.terminate()
        proc.wait(10)


@pytest.fixture
def lago() -> Iterator[LagoStandIn]:
    stand_in = LagoStandIn(subscriptions={"sub-acme": "active", "sub-beta": "active"})
    stand_in.subscriptions.update({"sub-new": "active", "sub-open": "active"})
    stand_in.start()
    yield stand_in
    stand_in.stop()


@contextlib.contextmanager
def fleet_with(
    tmp_path: Path, database: tuple[str, Engine], redis_base: str, lago: LagoStandIn, policy: str
) -> Iterator[MiniFleet]:
    url, engine = database
    env = {
        "LAGO_API_URL": lago.url,
        "LAGO_API_KEY": API_KEY,
        "LAGO_WEBHOOK_SECRET": HMAC_KEY,
        "LLMFLEET_ENTITLEMENT_POLICY": policy,
        "LLMFLEET_ENTITLEMENT_TTL": "600",  # no background refresh within the test
    }
    with mini_fleet(
        tmp_path,
        url,
        engine,
        lambda urls: {"model_list": [deployment("mock", urls["mock"])]},
        {"mock": []},
        redis_base=redis_base,
        dbs=(0, 1),
        extra_env=env,
    ) as fleet:
        yield fleet


def admin(fleet: MiniFleet, path: str, body: dict[str, Any]) -> dict[str, Any]:
    with fleet.client() as client:
        response = client.post(path, json=body)
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    return created


def webhook(fleet: MiniFleet, payload: dict[str, Any], key: str = HMAC_KEY) -> httpx.Response:
    body = json.dumps(payload).encode()
    headers = {
        "X-Lago-Signature": lago_signature(key, body),
        "X-Lago-Signature-Algorithm": "hmac",
        "Content-Type": "application/json",
    }
    return httpx.post(f"{fleet.api_url}/v1/lago/webhooks", content=body, headers=headers)


def terminated(subscription: str) -> dict[str, Any]:
    return {
        "webhook_type": "subscription.terminated",
        "object_type": "subscription",
        "subscription": {"external_id": subscription, "status": "terminated"},
    }


def run(fleet: MiniFleet, key: str, content: str = "hello") -> dict[str, Any]:
    return fleet.wait(fleet.submit(content, key=key), timeout=120)


def test_terminated_subscription_is_denied_before_any_provider_call(
    tmp_path: Path, database: tuple[str, Engine], private_redis: str, lago: LagoStandIn
) -> None:
    with fleet_with(tmp_path, database, private_redis, lago, "fail_closed") as fleet:
        # Given a customer billed to sub-acme, and a key with its own sub-beta
        acme = admin(
            fleet, "/v1/customers", {"name": "acme", "external_subscription_id": "sub-acme"}
        )
        acme_key = admin(fleet, "/v1/keys", {"customer_id": acme["id"]})["key"]
        beta_key = admin(fleet, "/v1/keys", {"external_subscription_id": "sub-beta"})["key"]

        # An active subscription is allowed, and looked up once for two jobs
        assert [run(fleet, beta_key)["status"] for _ in range(2)] == ["succeeded"] * 2
        assert lago.lookups == {"sub-beta": 1}

        # A termination with a bad signature is refused and changes nothing
        forged = webhook(fleet, terminated("sub-beta"), key="not-the-key")
        assert forged.status_code == 401
        assert run(fleet, beta_key)["status"] == "succeeded"

        # When Lago signals that sub-acme was terminated (it still says active)
        assert webhook(fleet, terminated("sub-acme")).status_code == 200
        calls = fleet.stats("mock")["calls"]
        job = run(fleet, acme_key)

        # Then the job fails 402-style and no provider was called
        assert job["status"] == "failed", job
        error = job["error"]
        assert (error["type"], error["code"]) == ("insufficient_quota", "entitlement_denied")
        assert "sub-acme" in error["message"] and "terminated" in error["message"]
        assert fleet.stats("mock")["calls"] == calls
        assert "sub-acme" not in lago.lookups
        with fleet.engine.connect() as conn:
            stored = conn.execute(text("SELECT error FROM jobs WHERE id = :id"), job).scalar()
        assert stored["status_code"] == 402

        # Fail closed: Lago answers 5xx and sub-new was never cached
        lago.mode = "5xx"
        new_key = admin(fleet, "/v1/keys", {"external_subscription_id": "sub-new"})["key"]
        closed = run(fleet, new_key)
        assert closed["status"] == "failed" and "can't be reached" in closed["error"]["message"]
        assert closed["error"]["code"] == "entitlement_denied"
        assert fleet.stats("mock")["calls"] == calls


def test_fail_open_runs_the_job_and_still_reports_its_usage(
    tmp_path: Path, database: tuple[str, Engine], private_redis: str, lago: LagoStandIn
) -> None:
    with fleet_with(tmp_path, database, private_redis, lago, "fail_open") as fleet:
        key = admin(fleet, "/v1/keys", {"external_subscription_id": "sub-open"})["key"]
        lago.stop()  # Lago can't be reached at all
        job = run(fleet, key)
        assert job["status"] == "succeeded", job
        assert fleet.stats("mock")["calls"] == 1
        # Its usage events reach the outbox (and wait there for Lago to come back)
        until, rows = time.monotonic() + 30, []
        while not rows and time.monotonic() < until:
            time.sleep(0.2)
            with fleet.engine.connect() as conn:
                rows = conn.execute(
                    text(
                        "SELECT external_subscription_id, status FROM usage_outbox"
                        " WHERE transaction_id LIKE :job"
                    ),
                    {"job": f"{job['id']}:%"},
                ).all()
    assert rows and {tuple(r) for r in rows} == {("sub-open", "pending")}
