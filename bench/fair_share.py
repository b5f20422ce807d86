"""Fair share: how long light tenants wait beside a tenant that floods the deployment,
with fair share on and off (LLMFLEET_FAIR_SHARE=1 / 0), in the same sitting.

The scenario of tests/workers/test_fair_share_fleet.py on real processes: a mock provider
(latency uniform 0.1-0.9 s, at most 20 calls at once), one deployment with
`max_parallel_requests: 20` (about 40 calls a second), one worker (`-c 50`), its beat
and the API (tests/support/fleet.py's mini fleet), PostgreSQL a private cluster
(bench/private_pg.py) and Redis a private redis-server (bench/private_redis.py, dbs 5
and 6); LLMFLEET_NAME is passed to every process by the mini fleet, as in the other
fleet benchmarks. Per setting, a fresh database and fleet: the median wait of 5 jobs
sent one by one to the idle deployment (the floor), then tenant A (a virtual key)
bursts --flood jobs to `POST /v1/jobs` from 16 connections, then tenants B and C each
send --light jobs one by one (submit, wait for its end, the next). A job's wait is the
start of its first successful attempt (job_attempts.started_at) minus jobs.created_at.

With `--bottleneck workers` the workers are what is short, not the deployment: no
limit on the deployment or the mock, one worker of `-c 4` (four general slots: 8 calls a
second), so tenant A's flood waits for a free worker (docs/ROUTING.md, "Waiting for a
free worker"); a smaller --flood (400) keeps a run under a minute.

Reported per setting: the light tenants' (B and C together) wait p50, p99 and max; the
flood's wait p50 and max, and its total time (first job created to last job finished);
and the ratio off/on of the light tenants' p99.

    .venv/bin/python bench/fair_share.py
    .venv/bin/python bench/fair_share.py --rounds 2 --order off,on
    .venv/bin/python bench/fair_share.py --bottleneck workers --flood 400

Writes bench/results/fair_share.json; logs stay in bench/results/logs/fair_share/.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/ is not installed

import psutil
from cpu_meter import busy_pct  # bench/ is sys.path[0] when run as a script
from fleet_e2e import mark_epoch
from pools import REPO
from private_pg import private_postgres, recreate_database
from private_redis import private_redis
from sqlalchemy import Engine, text

from models import migrate
from models.db import make_engine
from tests.support.fleet import MiniFleet, deployment, mini_fleet
from tests.support.tenancy import chat, make_key

RESULTS = REPO / "bench" / "results"
BENCH_DB = "llmfleet_bench_fair_share"
#: The deployment's calls in flight at most, and the spread of a call's length (mean
#: 0.5 s): 40 calls a second, as in the test.
SLOTS = 20
SPREAD = "uniform:0.1,0.9"
DBS = (5, 6)  # Redis: state, broker


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
    return sorted(r[1].total_seconds() for r in rows)


def span_s(engine: Engine, job_ids: list[str]) -> float:
    """From the first job's creation to the last one's end."""
    with engine.connect() as conn:
        span = conn.execute(
            text("SELECT MAX(finished_at) - MIN(created_at) FROM jobs WHERE id = ANY(:ids)"),
            {"ids": job_ids},
        ).scalar_one()
    return float(span.total_seconds())


def statuses(engine: Engine, job_ids: list[str]) -> dict[str, int]:
    with engine.connect() as conn:
        rows = conn.execute(
            text("SELECT status, COUNT(*) FROM jobs WHERE id = ANY(:ids) GROUP BY status"),
            {"ids": job_ids},
        ).all()
    return {str(status): int(count) for status, count in rows}


def p99(values: list[float]) -> float:
    """As the test computes it (with 40 values: between the largest two)."""
    return statistics.quantiles(values, n=100, method="inclusive")[98]


def burst(f: MiniFleet, key: str, n: int) -> tuple[list[str], int]:
    """Submit `n` jobs as fast as 16 connections take them; (accepted ids, refused)."""
    with f.client(key) as client, ThreadPoolExecutor(16) as pool:

        def one(i: int) -> str | None:
            response = client.post("/v1/jobs", json=chat(f"flood {i}"))
            return str(response.json()["id"]) if response.status_code == 202 else None

        answers = list(pool.map(one, range(n)))
    ids = [a for a in answers if a is not None]
    return ids, n - len(ids)


def one_by_one(f: MiniFleet, key: str, n: int, timeout: float) -> list[str]:
    """Submit a job, wait for its end, then the next: a tenant with light traffic."""
    ids = []
    for i in range(n):
        job_id = f.submit(f"light {i}", key=key)
        f.wait(job_id, timeout=timeout)
        ids.append(job_id)
    return ids


@contextlib.contextmanager
def fleet_for(
    fair: bool, admin_url: str, redis_url: str, log_dir: Path, worker_c: int, workers: bool
) -> Iterator[MiniFleet]:
    """A fresh database and mini fleet with fair share on or off (API, worker, beat);
    `workers`: the workers are the bottleneck (no limit on the deployment)."""
    db_url = recreate_database(admin_url, BENCH_DB)
    migrate.upgrade(db_url)
    engine = make_engine(db_url, pool_size=4)
    limit = {} if workers else {"max_parallel_requests": SLOTS}

    def config(urls: dict[str, str]) -> dict[str, Any]:
        return {"model_list": [deployment("mock", urls["mock"], **limit)]}

    mock = ["--latency", SPREAD] + ([] if workers else ["--max-concurrency", str(SLOTS)])
    env: dict[str, str | None] = {"LLMFLEET_FAIR_SHARE": "1" if fair else "0"}
    try:
        with mini_fleet(
            log_dir,
            db_url,
            engine,
            config,
            {"mock": mock},
            concurrency=worker_c,
            redis_base=redis_url,
            dbs=DBS,
            extra_env=env,
        ) as fleet:
            mark_epoch(fleet)  # no recovery sweep re-publishing the flood mid-run
            yield fleet
    finally:
        engine.dispose()


def run_case(
    fair: bool, args: argparse.Namespace, admin_url: str, redis_url: str, n: int
) -> dict[str, Any]:
    name = f"{args.bottleneck}-{'on' if fair else 'off'}-{n}"
    log_dir = RESULTS / "logs" / "fair_share" / name
    log_dir.mkdir(parents=True, exist_ok=True)
    workers = args.bottleneck == "workers"
    worker_c = args.worker_c or (4 if workers else 50)
    with fleet_for(fair, admin_url, redis_url, log_dir, worker_c, workers) as f:
        heavy, b, c = (make_key(f.api_url, alias=alias) for alias in ("heavy", "b", "c"))
        floor_ids = one_by_one(f, b.key, 5, args.timeout)
        floor = statistics.median(waits_s(f.engine, floor_ids))
        machine0, stats0 = psutil.cpu_times(), f.stats("mock")
        t0 = time.perf_counter()
        flood, refused = burst(f, heavy.key, args.flood)
        burst_s = time.perf_counter() - t0
        print(f"[{name}] flood of {len(flood)} submitted in {burst_s:.1f}s", flush=True)
        with ThreadPoolExecutor(2) as pool:
            futures = [pool.submit(one_by_one, f, k.key, args.light, args.timeout) for k in (b, c)]
            light = [job for fut in futures for job in fut.result()]
        light_done_s = time.perf_counter() - t0
        f.wait_all(flood, timeout=args.timeout)
        wall_s = time.perf_counter() - t0
        busy = busy_pct(machine0, psutil.cpu_times())
        stats = f.stats("mock")
        light_waits, flood_waits = waits_s(f.engine, light), waits_s(f.engine, flood)
        row = {
            "bottleneck": args.bottleneck,
            "worker_c": worker_c,
            "fair_share": fair,
            "run": n,
            "floor_s": round(floor, 3),
            "light_jobs": len(light),
            "light_p50_s": round(statistics.median(light_waits), 3),
            "light_p99_s": round(p99(light_waits), 3),
            "light_max_s": round(light_waits[-1], 3),
            "light_waits_s": [round(w, 3) for w in light_waits],
            "light_done_s": round(light_done_s, 1),
            "flood_jobs": len(flood),
            "flood_refused": refused,
            "flood_burst_s": round(burst_s, 1),
            "flood_p50_s": round(statistics.median(flood_waits), 2),
            "flood_max_s": round(flood_waits[-1], 2),
            "flood_total_s": round(span_s(f.engine, flood), 1),
            "wall_s": round(wall_s, 1),
            "light_status": statuses(f.engine, light),
            "flood_status": statuses(f.engine, flood),
            "mock_calls": stats["calls"] - stats0["calls"],
            "mock_max_in_flight": stats["max_in_flight"],
            "mock_faults": stats["faults"],
            "machine_busy_pct": busy,
        }
    print(json.dumps({k: v for k, v in row.items() if k != "light_waits_s"}), flush=True)
    return row


HEADER = (
    "| fair share | run | floor s | light p50 s | light p99 s | light max s "
    "| flood p50 s | flood max s | flood total s | machine busy % |\n"
    "|---|---|---|---|---|---|---|---|---|---|"
)


def table_row(r: dict[str, Any]) -> str:
    return (
        f"| {'on' if r['fair_share'] else 'off'} | {r['run']} | {r['floor_s']:.3f} "
        f"| {r['light_p50_s']:.3f} | {r['light_p99_s']:.3f} | {r['light_max_s']:.3f} "
        f"| {r['flood_p50_s']:.1f} | {r['flood_max_s']:.1f} | {r['flood_total_s']:.1f} "
        f"| {r['machine_busy_pct']} |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--flood", type=int, default=2000, help="tenant A's burst of jobs")
    parser.add_argument("--light", type=int, default=20, help="jobs of B and of C, each")
    parser.add_argument("--rounds", type=int, default=1, help="pairs of runs (on and off)")
    parser.add_argument("--order", default="on,off", help="settings within a round")
    parser.add_argument(
        "-c", "--worker-c", type=int, default=0, help="the worker's -c (default 50; 4 for workers)"
    )
    parser.add_argument(
        "--bottleneck",
        choices=("deployment", "workers"),
        default="deployment",
        help="what is short of capacity: the deployment (20 calls at once) or the workers",
    )
    parser.add_argument("--redis-port", type=int, default=6398, help="private redis-server")
    parser.add_argument("--timeout", type=float, default=600, help="per wait, seconds")
    parser.add_argument("--out", type=Path, default=RESULTS / "fair_share.json")
    args = parser.parse_args()
    order = [{"on": True, "off": False}[x] for x in args.order.split(",")]
    rows: list[dict[str, Any]] = []
    with private_redis(args.redis_port) as redis_url, private_postgres() as (admin_url, _):
        for n in range(1, args.rounds + 1):
            rows += [run_case(fair, args, admin_url, redis_url, n) for fair in order]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(rows, indent=2) + "\n")
    print(HEADER)
    for r in rows:
        print(table_row(r))
    for n in range(1, args.rounds + 1):
        p = {r["fair_share"]: r["light_p99_s"] for r in rows if r["run"] == n}
        if len(p) == 2:
            print(f"run {n}: light p99 off/on = {p[False] / p[True]:.1f}x")
    print(f"\nJSON: {args.out}")


if __name__ == "__main__":
    main()
