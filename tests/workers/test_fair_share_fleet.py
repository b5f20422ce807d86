"""Fair share under contention, on real processes: one deployment that takes N calls at
a time; a tenant that floods it slows down itself only, nobody gets a 429 for it."""

from __future__ import annotations

import statistics
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import Engine, text

from tests.conftest import migrated_database
from tests.support.batches import submit, wait_ended
from tests.support.fleet import MiniFleet, deployment, mini_fleet
from tests.support.processes import free_port
from tests.support.tenancy import Minted, chat, make_key

#: The deployment's calls in flight at most, and each call's mean length: 20 calls a
#: second. Lengths spread (0.1 to 0.9 s), as real calls' do: calls that started together
#: do not all end together.
SLOTS = 10
LATENCY_S = 0.5
SPREAD = f"uniform:{LATENCY_S - 0.4},{LATENCY_S + 0.4}"


@pytest.fixture(scope="module")
def database() -> Iterator[tuple[str, Engine]]:
    with migrated_database("llmfleet_test_fair_share") as (url, engine):
        yield url, engine


def config(urls: dict[str, str]) -> dict[str, Any]:
    return {"model_list": [deployment("mock", urls["mock"], max_parallel_requests=SLOTS)]}


@pytest.fixture
def fleet(database: tuple[str, Engine], tmp_path: Path) -> Iterator[MiniFleet]:
    url, engine = database
    mock = ["--latency", SPREAD, "--max-concurrency", str(SLOTS)]
    metrics = {"LLMFLEET_METRICS_PORT": str(free_port())}
    with mini_fleet(
        tmp_path, url, engine, config, {"mock": mock}, concurrency=50, worker_env=metrics
    ) as f:
        yield f


def waits_s(engine: Engine, job_ids: list[str]) -> list[float]:
    """From each job's submission to the start of the call that answered it."""
    with engine.connect() as conn:
        rows = conn.execute(
            text(
                "SELECT j.id, MIN(a.started_at) - j.created_at FROM jobs j"
                " JOIN job_attempts a ON a.job_id = j.id AND a.error_class IS NULL"
                " WHERE j.id = ANY(:ids) GROUP BY j.id, j.created_at"
            ),
            {"ids": job_ids},
        ).all()
    assert len(rows) == len(job_ids)
    return [r[1].total_seconds() for r in rows]


def burst(f: MiniFleet, key: str, n: int) -> list[str]:
    """Submit `n` jobs as fast as 16 connections take them."""
    with f.client(key) as client, ThreadPoolExecutor(16) as pool:

        def one(i: int) -> str:
            response = client.post("/v1/jobs", json=chat(f"flood {i}"))
            assert response.status_code == 202, response.text
            return str(response.json()["id"])

        return list(pool.map(one, range(n)))


def one_by_one(f: MiniFleet, key: str, n: int, out: list[str], **extra: Any) -> None:
    """Submit a job, wait for its end, then the next: a tenant with light traffic."""
    for i in range(n):
        job_id = f.submit(f"light {i}", key=key, **extra)
        assert f.wait(job_id)["status"] == "succeeded"
        out.append(job_id)


def in_transit(engine: Engine, batch_id: str) -> int:
    """Lines of the batch not dispatched yet, or on their way to a worker."""
    with engine.connect() as conn:
        return int(
            conn.execute(
                text(
                    "SELECT COUNT(*) FROM jobs WHERE batch_id = :b AND status = 'queued'"
                    " AND (published_at IS NULL OR not_before IS NULL)"
                ),
                {"b": batch_id},
            ).scalar_one()
        )


def uncontended(f: MiniFleet, key: str) -> float:
    """The fleet's own delay with no contention: the median wait of 5 jobs sent one by
    one to an idle deployment."""
    alone: list[str] = []
    one_by_one(f, key, 5, alone)
    return statistics.median(waits_s(f.engine, alone))


def p99(values: list[float]) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[98]


def send_light(
    f: MiniFleet, keys: tuple[Minted, ...], production: Minted | None = None, after_s: float = 0
) -> tuple[list[str], str | None]:
    """Tenants `keys` each send 20 jobs one by one; a production key one job `after_s`
    into it. Their job ids, and the production job's."""
    light: list[list[str]] = [[] for _ in keys]
    threads = [
        threading.Thread(target=one_by_one, args=(f, key.key, 20, out))
        for key, out in zip(keys, light, strict=True)
    ]
    for thread in threads:
        thread.start()
    prod_job = None
    if production is not None:
        time.sleep(after_s)
        prod_job = f.submit("urgent", key=production.key)
        assert f.wait(prod_job)["status"] == "succeeded"
    for thread in threads:
        thread.join(timeout=300)
    return [job for out in light for job in out], prod_job


def within_two_turns(f: MiniFleet, job_ids: list[str], turn: float, floor: float) -> None:
    """The jobs' wait p99 is at most two turns of their fair share, the fleet's own
    delay with no contention (`floor`) on top."""
    waits = waits_s(f.engine, job_ids)
    print(
        f"floor {floor:.3f}s; waits p50 {statistics.median(waits):.3f}s "
        f"p99 {p99(waits):.3f}s max {max(waits):.3f}s"
    )
    assert p99(waits) <= 2 * turn + floor


def test_a_flooding_tenant_slows_down_alone(fleet: MiniFleet) -> None:
    f = fleet
    heavy, b, c = (make_key(f.api_url, alias=name) for name in ("heavy", "b", "c"))
    production = make_key(f.api_url, alias="prod", tier="production")
    floor = uncontended(f, b.key)
    # Given tenant A's burst of 2,000 interactive jobs (all accepted: 202, no 429)
    t0 = time.monotonic()
    flood = burst(f, heavy.key, 2000)
    print(f"flood submitted in {time.monotonic() - t0:.1f}s")
    # which the admin sees waiting, as A's, in the deployments view and the metrics
    with f.client() as admin:
        [waiting] = admin.get("/v1/deployments").json()["waiting"]
        scraped = admin.get("/metrics").text
    assert (waiting["model_group"], waiting["tenant"], waiting["tier"]) == (
        "mock-model",
        heavy.id,
        "default",
    )
    assert waiting["jobs"] > 1000
    assert f'llmfleet_tenant_waiting_jobs{{tenant="{heavy.id}",tier="default"}}' in scraped
    # When tenants B and C each send 20 jobs one by one, and a production key one job
    light, prod_job = send_light(f, (b, c), production, after_s=1.0)
    # Then B's and C's jobs wait about a turn of their fair share, not behind A's 2,000:
    # three tenants share 20 calls a second, one call in 150 ms each; 2x = 300 ms
    turn = 3 * LATENCY_S / SLOTS
    within_two_turns(f, light, turn, floor)
    # and the production job overtook every default one
    assert prod_job is not None and waits_s(f.engine, [prod_job])[0] <= 2 * turn + floor
    # and every one of A's jobs succeeded, later
    ends = f.wait_all(flood, timeout=240)
    assert {job["status"] for job in ends} == {"succeeded"}
    # and the worker counted how long each tenant's jobs waited in the room
    port = f.worker_env["LLMFLEET_METRICS_PORT"]
    worker_metrics = httpx.get(f"http://127.0.0.1:{port}/metrics").text
    assert f'llmfleet_tenant_wait_seconds_count{{tenant="{heavy.id}",tier="default"}}' in (
        worker_metrics
    )
    flood_waits = waits_s(f.engine, flood)
    print(f"flood waits p50 {statistics.median(flood_waits):.1f}s max {max(flood_waits):.1f}s")


def started_per_tenant(engine: Engine, since: float, until: float) -> dict[str, int]:
    """Calls started in [since, until) (epoch seconds), by the job's key alias."""
    with engine.connect() as conn:
        rows = conn.execute(
            text(
                "SELECT k.alias, COUNT(*) FROM job_attempts a JOIN jobs j ON j.id = a.job_id"
                " JOIN api_keys k ON k.id = j.owner_key"
                " WHERE a.error_class IS NULL AND a.started_at >= to_timestamp(:since)"
                " AND a.started_at < to_timestamp(:until) GROUP BY k.alias"
            ),
            {"since": since, "until": until},
        ).all()
    return {alias: count for alias, count in rows}


def test_weights_3_to_1_share_a_busy_deployment_3_to_1(fleet: MiniFleet) -> None:
    f = fleet
    # Given two teams of weight 3 and 1, each with a key
    teams = {}
    with f.client() as admin:
        for name, weight in (("big", 3), ("small", 1)):
            response = admin.post("/v1/teams", json={"name": name, "weight": weight})
            assert response.status_code == 201, response.text
            teams[name] = response.json()["id"]
    big = make_key(f.api_url, alias="big", team_id=teams["big"])
    small = make_key(f.api_url, alias="small", team_id=teams["small"])
    # When both flood the deployment (20 calls a second) at once, each with more than a
    # minute of its share (1,200 and 450 jobs: 900 and 300 a minute at 3 to 1)
    with ThreadPoolExecutor(2) as pool:
        floods = list(pool.map(lambda kn: burst(f, kn[0].key, kn[1]), ((big, 1200), (small, 450))))
    # Then over a busy minute the calls went 3 to 1 (within 10%)
    start = time.time()
    time.sleep(60)
    served = started_per_tenant(f.engine, start, start + 60)
    print(f"served over 60 s: {served}")
    assert served["big"] / served["small"] == pytest.approx(3.0, rel=0.1)
    assert sum(served.values()) >= 0.7 * 60 * SLOTS / LATENCY_S  # the deployment was busy
    # and every job succeeds in the end
    ends = f.wait_all(floods[0] + floods[1], timeout=240)
    assert {job["status"] for job in ends} == {"succeeded"}


def test_a_batch_filling_the_deployment_does_not_hold_up_interactive_jobs(
    fleet: MiniFleet, tmp_path: Path
) -> None:
    f = fleet
    b, c = (make_key(f.api_url, alias=name) for name in ("b", "c"))
    floor = uncontended(f, b.key)
    # Given the master key's batch of 600 lines, 30 s of the deployment's capacity,
    # dispatched: each line running or waiting in the deployment's fair room
    batch_id = submit(f, tmp_path, 600, "bulk")
    until = time.monotonic() + 60
    while in_transit(f.engine, batch_id) and time.monotonic() < until:
        time.sleep(0.2)
    # When tenants B and C each send 20 interactive jobs one by one
    light, _ = send_light(f, (b, c))
    # Then each waits about a turn (three tenants share 20 calls a second: 150 ms; 2x 300 ms)
    within_two_turns(f, light, 3 * LATENCY_S / SLOTS, floor)
    # and the batch completes, every line answered
    batch = wait_ended(f, batch_id, timeout=240)
    assert batch.status == "completed"
    assert batch.request_counts is not None and batch.request_counts.completed == 600


#: A worker with 4 general slots and a deployment with no limit: the workers are the
#: bottleneck, 8 calls a second.
WORKER_SLOTS = 4


@pytest.fixture
def saturated(database: tuple[str, Engine], tmp_path: Path) -> Iterator[MiniFleet]:
    url, engine = database
    mock = ["--latency", SPREAD]
    with mini_fleet(
        tmp_path,
        url,
        engine,
        lambda urls: {"model_list": [deployment("mock", urls["mock"])]},
        {"mock": mock},
        concurrency=WORKER_SLOTS,
    ) as f:
        yield f


def test_a_flood_in_front_of_saturated_workers_slows_down_its_tenant_alone(
    saturated: MiniFleet,
) -> None:
    f = saturated
    heavy, b, c = (make_key(f.api_url, alias=name) for name in ("heavy", "b", "c"))
    production = make_key(f.api_url, alias="prod", tier="production")
    floor = uncontended(f, b.key)
    # Given tenant A's burst of 300 jobs, 37 s of the workers' time, all accepted
    flood = burst(f, heavy.key, 300)
    # which the admin sees waiting, as A's, for a free worker
    with f.client() as admin:
        [waiting] = admin.get("/v1/deployments").json()["waiting"]
    assert (waiting["model_group"], waiting["tenant"]) == ("@workers/llmfleet.normal", heavy.id)
    assert waiting["jobs"] > 200
    # When tenants B and C each send 20 jobs one by one, and a production key one job
    light, prod_job = send_light(f, (b, c), production, after_s=2.0)
    # Then B's and C's jobs wait about a turn of their fair share, not behind A's 300:
    # three tenants share 8 calls a second, one call in 375 ms each; 2x = 750 ms
    turn = 3 * LATENCY_S / WORKER_SLOTS
    within_two_turns(f, light, turn, floor)
    # and the production job overtook every default one
    assert prod_job is not None and waits_s(f.engine, [prod_job])[0] <= 2 * turn + floor
    # and every one of A's jobs succeeded, later
    ends = f.wait_all(flood, timeout=240)
    assert {job["status"] for job in ends} == {"succeeded"}
    flood_waits = waits_s(f.engine, flood)
    print(f"flood waits p50 {statistics.median(flood_waits):.1f}s max {max(flood_waits):.1f}s")
