"""Accounting end to end: 1,000 jobs through the fleet, billed to a key's Lago
subscription, with Lago down for part of the run and a stray post-call task delivered
for a job already billed — every usage event is recorded exactly once."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from celery import Celery
from sqlalchemy import Engine, text

from models import fleet_name
from models.contract import POST_CALL_TASK, QUEUE_POST_CALL, broker_options
from tests.conftest import migrated_database
from tests.support.fleet import deployment, mini_fleet
from tests.support.lago import API_KEY, LagoStandIn

EVENTS_PER_JOB = 2  # the mock reports input and output tokens; zero figures send nothing


@pytest.fixture(scope="module")
def database() -> Iterator[tuple[str, Engine]]:
    with migrated_database("llmfleet_test_billing") as (url, engine):
        yield url, engine


@pytest.fixture
def lago() -> Iterator[LagoStandIn]:
    stand_in = LagoStandIn()
    stand_in.start()
    yield stand_in
    stand_in.stop()


def config(urls: dict[str, str]) -> dict[str, Any]:
    return {
        "model_list": [
            deployment(
                "mock",
                urls["mock"],
                input_cost_per_token="0.000001",
                output_cost_per_token="0.000002",
            )
        ]
    }


# Its own waits (the jobs, then the events backing off after the outage) may take up to
# 300 s each on a busy machine: more than the suite's default per-test timeout.
@pytest.mark.timeout(900)
def test_every_usage_event_recorded_once_through_an_outage_and_a_redelivery(
    database: tuple[str, Engine], tmp_path: Path, lago: LagoStandIn
) -> None:
    url, engine = database
    env = {"LAGO_API_URL": lago.url, "LAGO_API_KEY": API_KEY}
    lago.mode = "5xx"  # Lago is down as the run starts
    with mini_fleet(tmp_path, url, engine, config, {"mock": []}, extra_env=env) as fleet:
        with fleet.client() as admin:
            created = admin.post(
                "/v1/keys", json={"alias": "acme", "external_subscription_id": "sub-acme"}
            )
            assert created.status_code in (200, 201), created.text
        key = created.json()["key"]
        ids = fleet.submit_many([f"job {i}" for i in range(1000)], key=key)
        jobs = fleet.wait_all(ids, timeout=300)
        assert [j["status"] for j in jobs] == ["succeeded"] * 1000
        assert lago.requests > 0 and not lago.events  # tried, and failed, while down
        # A job's spend row and usage events commit with its end: no post-call task needed.
        with engine.connect() as conn:
            spent = conn.execute(text("SELECT count(DISTINCT job_id) FROM spend")).scalar()
            queued = conn.execute(text("SELECT count(*) FROM usage_outbox")).scalar()
        assert (spent, queued) == (1000, 1000 * EVENTS_PER_JOB)

        # A post-call task arrives for a job already billed (a message from before an upgrade).
        assert fleet.broker is not None
        celery = Celery("test", broker=fleet.broker.url)
        celery.conf.update(broker_options(7200, fleet_name.current()))
        celery.send_task(POST_CALL_TASK, args=[ids[0], 1], queue=QUEUE_POST_CALL)

        lago.mode = "ok"  # Lago comes back
        until = time.monotonic() + 300  # events that failed back off: a busy machine is slow
        while len(lago.events) < 1000 * EVENTS_PER_JOB and time.monotonic() < until:
            time.sleep(1)
        time.sleep(6)  # one more drain: nothing may arrive twice
        with fleet.client() as admin:
            spend = admin.get("/v1/spend", params={"group_by": "key"}).json()

    assert len(lago.events) == lago.accepted == 1000 * EVENTS_PER_JOB
    assert {sub for sub, _ in lago.events} == {"sub-acme"}
    event = next(iter(lago.events.values()))
    assert isinstance(event["timestamp"], int)
    assert all(isinstance(v, str) for v in event["properties"].values())
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT count(*), count(DISTINCT job_id) FROM spend")).one()
        outbox = dict(
            conn.execute(text("SELECT status, count(*) FROM usage_outbox GROUP BY status")).all()
        )
    assert tuple(rows) == (1000, 1000)
    assert outbox == {"sent": 1000 * EVENTS_PER_JOB}
    [group] = spend["data"]
    assert group["requests"] == 1000 and group["cost"] != "0"
