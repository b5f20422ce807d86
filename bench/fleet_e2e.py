"""The fleet end to end: a batch of N jobs, its throughput and its CPU on every process.

Per latency: a fresh database, a mini fleet (tests/support/fleet.py: mock provider,
worker(s), beat, API) on its own Redis dbs, a warm-up, then an N-line batch through
the Files + Batches API. Measured: jobs/s from `POST /v1/batches` answered to the
batch `completed`; CPU-seconds per job over the API, workers, beat, redis-server and
PostgreSQL (every postgres process; the share of this database's backends plus the
server's own processes is reported beside it), from before the upload until every
post-call task has run; the mock's CPU apart. While the batch runs an interactive job
(priority 9) is submitted every --interactive-every seconds; its pickup latency is
started_at - created_at of the row (the API's timestamps are whole seconds).

    /work/venv/bin/python bench/fleet_e2e.py --jobs 5000 --latency 0,2 --workers 2 -c 500

PostgreSQL is a private cluster (bench/private_pg.py says why) unless --pg-admin-url
names a server. `--profile 20` runs py-spy on the first worker for 20 s after the batch
is accepted (it slows the worker: compare figures from runs without it).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/ is not installed

import httpx
import psutil
import redis
from batch_accept import write_batch  # bench/ is sys.path[0] when run as a script
from cpu_meter import CpuMeter, busy_pct, postgres, redis_server
from pools import REPO
from private_pg import private_postgres, recreate_database
from sqlalchemy import Engine, select, text

from models import migrate
from models.db import make_engine
from models.redis_keys import EPOCH
from models.tables import Job
from tests.support.fleet import MiniFleet, deployment, mini_fleet

RESULTS = REPO / "bench" / "results"
BENCH_DB = "llmfleet_bench_e2e"
POLL_S = 0.5
DONE = ("completed", "failed", "expired", "cancelled")
PY_SPY = os.environ.get("BENCH_PY_SPY", str(REPO / ".bench-venv" / "bin" / "py-spy"))


def meters_for(fleet: MiniFleet, postmaster: psutil.Process | None) -> dict[str, CpuMeter]:
    """Every process of the fleet by part; the mock is measured, and counted apart."""

    def named_procs(*names: str) -> Callable[[], list[psutil.Process]]:
        pids = [p.popen.pid for p in fleet.procs if p.name.startswith(names)]
        return lambda: [psutil.Process(pid) for pid in pids]

    return {
        "api": CpuMeter(named_procs("api")),
        "workers": CpuMeter(lambda: [psutil.Process(w.popen.pid) for w in fleet.workers]),
        "beat": CpuMeter(named_procs("beat")),
        "redis": CpuMeter(redis_server),
        "postgres": CpuMeter(postgres(postmaster)),
        "mock": CpuMeter(named_procs("mock")),
    }


def interactive(fleet: MiniFleet, every: float, stop: threading.Event, ids: list[str]) -> None:
    with fleet.client() as client:
        while not stop.wait(every):
            message = {"role": "user", "content": f"interactive {len(ids)}"}
            body = {"model": "mock-model", "messages": [message], "priority": 9, "max_tokens": 16}
            answer = client.post("/v1/jobs", json=body)
            if answer.status_code == 202:
                ids.append(str(answer.json()["id"]))


def pg_counters(engine: Engine) -> Counter[str]:
    """The database's transactions and rows written so far (pg_stat_database)."""
    query = text(
        "SELECT xact_commit + xact_rollback AS transactions, tup_inserted + tup_updated"
        " + tup_deleted AS rows_written FROM pg_stat_database WHERE datname = current_database()"
    )
    with engine.connect() as conn:
        conn.execute(text("SELECT pg_stat_clear_snapshot()"))
        return Counter(dict(conn.execute(query).one()._mapping))


def pickup_ms(fleet: MiniFleet, ids: list[str]) -> list[float]:
    query = select(Job.created_at, Job.started_at).where(Job.id.in_(ids))
    with fleet.engine.connect() as conn:
        rows = conn.execute(query).all()
    return sorted(1000 * (s - c).total_seconds() for c, s in rows if s is not None)


def pct(values: list[float], q: float) -> float:
    return round(values[min(len(values) - 1, int(q * len(values)))], 1) if values else -1.0


@dataclass
class BatchRun:
    batch: dict[str, Any]
    accept_s: float
    wall_s: float
    lines_done_s: float
    interactive_ids: list[str]
    accepted_at: float  # perf_counter


def run_batch(
    fleet: MiniFleet, batch_file: Path, args: argparse.Namespace, sample: Callable[[], None]
) -> BatchRun:
    """Upload, create, and poll the batch to its end while interactive jobs come in."""
    with fleet.client() as http, batch_file.open("rb") as handle:
        http.timeout = httpx.Timeout(600)
        t_upload = time.perf_counter()
        file_id = http.post("/v1/files", files={"file": handle}, data={"purpose": "batch"})
        body = {"input_file_id": file_id.json()["id"], "endpoint": "/v1/chat/completions"}
        batch = http.post("/v1/batches", json=body).json()
        t0 = time.perf_counter()
        profiler = start_profile(fleet, batch_file.parent, args.profile) if args.profile else None
        ids: list[str] = []
        stop = threading.Event()
        submitter = threading.Thread(
            target=interactive, args=(fleet, args.interactive_every, stop, ids)
        )
        submitter.start()
        lines_s, deadline = None, t0 + args.timeout
        while batch["status"] not in DONE and time.perf_counter() < deadline:
            time.sleep(POLL_S)
            sample()
            batch = http.get(f"/v1/batches/{batch['id']}").json()
            counts = batch["request_counts"]
            if lines_s is None and counts["completed"] + counts["failed"] >= args.jobs:
                lines_s = time.perf_counter() - t0
        wall = time.perf_counter() - t0
        stop.set()
        submitter.join()
    if profiler is not None:
        profiler.wait()
    return BatchRun(batch, t0 - t_upload, wall, lines_s or wall, ids, t0)


def start_profile(fleet: MiniFleet, log_dir: Path, seconds: float) -> subprocess.Popen[bytes]:
    """py-spy on the first worker, sampling the thread that holds the GIL (where its
    CPU goes: it is one core at most): collapsed stacks for bench/profile_top.py."""
    out = log_dir / "worker-profile.txt"
    argv = [PY_SPY, "record", "--pid", str(fleet.workers[0].popen.pid), "--format", "raw"]
    argv += ["--duration", f"{seconds:g}", "--rate", "100", "--gil", "-o", str(out)]
    return subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def mark_epoch(fleet: MiniFleet) -> None:
    """Measure a fleet in its steady state: on a Redis without the epoch marker, the
    first sweep (about 30 s in, mid-batch) re-publishes every queued job, as after a
    Redis data loss (workers/recovery.py). A running fleet's Redis carries the marker."""
    fleet.redis.set(EPOCH, "bench", nx=True)
    if fleet.broker is not None and fleet.broker.url.startswith("redis"):
        with redis.Redis.from_url(fleet.broker.url) as broker:
            broker.set(EPOCH, "bench", nx=True)


def run_case(
    latency: float, args: argparse.Namespace, admin_url: str, postmaster: psutil.Process | None
) -> dict[str, Any]:
    log_dir = RESULTS / "logs" / "fleet_e2e" / f"lat{latency:g}-n{args.jobs}"
    log_dir.mkdir(parents=True, exist_ok=True)
    url = recreate_database(admin_url, BENCH_DB)
    migrate.upgrade(url)
    engine = make_engine(url, pool_size=2)
    batch_file = log_dir / "batch.jsonl"
    write_batch(batch_file, args.jobs)
    env = {"LLMFLEET_WORKER_DB_POOL": str(args.db_pool)}
    flags = {"mock": ["--latency", f"{latency:g}"]}

    def config(urls: dict[str, str]) -> dict[str, Any]:
        return {"model_list": [deployment("mock", urls["mock"])]}

    sizes = {"workers": args.workers, "concurrency": args.concurrency}
    with mini_fleet(
        log_dir, url, engine, config, flags, dbs=args.dbs, extra_env=env, **sizes
    ) as fleet:
        mark_epoch(fleet)
        fleet.wait_all(fleet.submit_many([f"warm-up {i}" for i in range(32)]))
        meters = meters_for(fleet, postmaster)

        def sample() -> None:
            for meter in meters.values():
                meter.sample()

        sample()
        machine0, pg0 = psutil.cpu_times(), pg_counters(engine)
        run = run_batch(fleet, batch_file, args, sample)
        fleet.wait_all(run.interactive_ids)
        fleet.broker.wait_idle(timeout=300)  # every task the run caused is part of its cost
        drained_s = time.perf_counter() - run.accepted_at
        sample()
        busy = busy_pct(machine0, psutil.cpu_times())
        time.sleep(1)  # backends report their statistics at most once a second
        pg = pg_counters(engine) - pg0
        pickups = pickup_ms(fleet, run.interactive_ids)
        rss = [psutil.Process(w.popen.pid).memory_info().rss / 2**20 for w in fleet.workers]
        in_flight = int(fleet.stats("mock")["max_in_flight"])
    engine.dispose()
    jobs = args.jobs + len(run.interactive_ids)  # their CPU is in the window too
    cpu = {k: m.seconds() for k, m in meters.items()}
    total = sum(v for k, v in cpu.items() if k != "mock")
    counts = run.batch["request_counts"]
    return {
        "side": "fleet",
        "jobs": args.jobs,
        "latency": latency,
        "workers": args.workers,
        "concurrency": args.concurrency,
        "status": run.batch["status"],
        "accept_s": round(run.accept_s, 2),
        "lines_done_s": round(run.lines_done_s, 2),
        "wall_s": round(run.wall_s, 2),
        "ideal_s": -(-args.jobs // (args.workers * args.concurrency)) * latency,
        "per_s": round(args.jobs / run.wall_s, 1),
        "drained_s": round(drained_s, 2),  # and every post-call task run
        "completed": counts["completed"],
        "failed": counts["failed"],
        "interactive_jobs": len(run.interactive_ids),
        "cpu_s": {k: round(v, 2) for k, v in cpu.items()},
        "cpu_ms_per_job": round(1000 * total / jobs, 3),
        "cpu_ms_per_job_by_part": {k: round(1000 * v / jobs, 3) for k, v in cpu.items()},
        "pickup_ms_p50": pct(pickups, 0.5),
        "pickup_ms_p90": pct(pickups, 0.9),
        "pickups_over_50ms": sum(1 for p in pickups if p > 50),
        "pickup_ms_p99": pct(pickups, 0.99),
        "pickup_ms_max": round(pickups[-1], 1) if pickups else -1.0,
        "pickup_ms_mean": round(statistics.fmean(pickups), 1) if pickups else -1.0,
        "pg_per_job": {k: round(v / jobs, 2) for k, v in pg.items()},
        "mock_max_in_flight": in_flight,
        "worker_rss_mb": [round(r, 1) for r in rss],
        "machine_busy_pct": busy,
        "postgres": "private cluster" if postmaster else admin_url,
        "profiled": bool(args.profile),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=5000, help="N batch lines")
    parser.add_argument("--latency", default="0,2", help="comma list of mock latencies, s")
    parser.add_argument("--workers", type=int, default=2, help="worker processes")
    parser.add_argument("-c", "--concurrency", type=int, default=500, help="-c per worker")
    parser.add_argument("--db-pool", type=int, default=20, help="LLMFLEET_WORKER_DB_POOL")
    parser.add_argument("--interactive-every", type=float, default=0.5, help="seconds")
    parser.add_argument("--dbs", default="7,8", help="Redis dbs: state,broker")
    parser.add_argument(
        "--pg-admin-url",
        help="a shared server (e.g. postgresql://postgres@127.0.0.1:5432/test)"
        " instead of a private cluster (bench/private_pg.py says why)",
    )
    parser.add_argument(
        "--profile", type=float, default=0, help="py-spy the first worker for this many s"
    )
    parser.add_argument("--timeout", type=float, default=1200, help="per batch, seconds")
    parser.add_argument("--out", type=Path, default=RESULTS / "fleet_e2e.json")
    args = parser.parse_args()
    state, broker = (int(x) for x in args.dbs.split(","))
    args.dbs = (state, broker)
    with contextlib.ExitStack() as stack:
        postmaster = None
        if args.pg_admin_url is None:
            args.pg_admin_url, postmaster = stack.enter_context(private_postgres())
        latencies = [float(x) for x in args.latency.split(",")]
        results = [run_case(x, args, args.pg_admin_url, postmaster) for x in latencies]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    for result in results:
        print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
