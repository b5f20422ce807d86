"""How many LLM calls one worker process holds in flight.

For each (concurrency, jobs) case: a fresh PostgreSQL database, flushed Redis
dbs, a fresh mock provider at a fixed latency and ONE worker process. N job rows are
inserted directly and N execute messages published; the clock runs from the first
publish until every row is terminal. Reported: wall time against the ideal
ceil(N / concurrency) * latency, the mock's peak calls in flight, and the worker's CPU.

    /work/venv/bin/python bench/pools.py --concurrency 200,1000 \
        --jobs 1000 --latency 2

Results are merged (by case) into bench/results/pools.json; logs stay in
bench/results/logs/ for inspection.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import os
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/ is not installed

import httpx
import psutil
import psycopg
import redis
import yaml
from celery import Celery
from sqlalchemy import Engine, func, insert, select

from models import fleet_name, migrate
from models.contract import (
    EXECUTE_LINES_TASK,
    EXECUTE_TASK,
    QUEUE_BATCH,
    QUEUE_NORMAL,
    broker_options,
)
from models.db import make_engine
from models.ids import new_id
from models.tables import TERMINAL_STATUSES, Job, JobStatus, utcnow
from tests.support.processes import Proc, start_mock

REPO = Path(__file__).resolve().parents[1]
PG_ADMIN_URL = os.environ.get("BENCH_PG_ADMIN_URL", "postgresql://postgres@127.0.0.1:5432/test")
REDIS_BASE = os.environ.get("BENCH_REDIS_BASE", "redis://127.0.0.1:6379")
STATE_DB, BROKER_DB = 12, 13
BENCH_DB = "llmfleet_bench"
RESULTS = REPO / "bench" / "results"
POLL_SECONDS = 0.2


@dataclass
class Result:
    pool: str
    concurrency: int
    jobs: int
    latency: float
    wall_s: float
    ideal_s: float
    ratio: float
    publish_s: float
    max_in_flight: int
    mock_calls: int
    cpu_s: float
    cpu_ms_per_job: float
    rss_mb: float
    threads: int
    succeeded: int
    failures: int
    log_errors: int
    mock_cpu_s: float
    failure_reasons: dict[str, int]
    machine_busy_pct: float
    http_pool_env: bool
    lines_per_message: int = 1


def recreate_database(name: str) -> str:
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')
    return PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"


def fleet_config(mock_url: str) -> dict[str, Any]:
    params = {
        "model": "openai_compatible/mock-model",
        "api_base": f"{mock_url}/v1",
        "api_key": "x",
    }
    return {
        "model_list": [
            {"model_name": "mock-model", "litellm_params": params, "model_info": {"id": "mock"}}
        ],
        "router_settings": {"num_retries": 0, "timeout": 60},
    }


def cpu_seconds(proc: psutil.Process) -> float:
    """User + system CPU of the process, its reaped children and its live children."""
    total = 0.0
    for p in [proc, *proc.children(recursive=True)]:
        try:
            t = p.cpu_times()
        except psutil.NoSuchProcess:
            continue
        total += t.user + t.system + t.children_user + t.children_system
    return total


def insert_jobs(engine: Engine, n: int) -> list[str]:
    now, ids = utcnow(), [new_id("job") for _ in range(n)]
    rows = [
        {
            "id": job_id,
            "status": JobStatus.QUEUED,
            "model": "mock-model",
            "request": {
                "model": "mock-model",
                "messages": [{"role": "user", "content": f"bench {i}"}],
            },
            "owner_key": "bench",
            "published_at": now,
        }
        for i, job_id in enumerate(ids)
    ]
    with engine.begin() as conn:
        conn.execute(insert(Job), rows)
    return ids


def failure_reasons(engine: Engine) -> dict[str, int]:
    message = Job.error["message"].as_string()
    query = select(message, func.count()).where(Job.status != JobStatus.SUCCEEDED)
    with engine.connect() as conn:
        rows = conn.execute(query.group_by(message)).all()
    return {str(text): int(count) for text, count in rows}


def status_counts(engine: Engine) -> dict[str, int]:
    with engine.connect() as conn:
        rows = conn.execute(select(Job.status, func.count()).group_by(Job.status)).all()
    return {str(status): int(count) for status, count in rows}


def run_case(
    pool: str, concurrency: int, jobs: int, args: argparse.Namespace, log_dir: Path
) -> Result:
    db_url = recreate_database(BENCH_DB)
    migrate.upgrade(db_url)
    state_url, broker_url = f"{REDIS_BASE}/{STATE_DB}", f"{REDIS_BASE}/{BROKER_DB}"
    for url in (state_url, broker_url):
        with redis.Redis.from_url(url) as r:
            r.flushdb()
    env = {
        **os.environ,
        "DATABASE_URL": db_url,
        # The name this process uses for the fleet's keys (models.fleet_name).
        "LLMFLEET_NAME": fleet_name.current(),
        "REDIS_URL": state_url,
        "BROKER_URL": broker_url,
        "LLMFLEET_WORKER_DB_POOL": str(args.db_pool),
        "PYTHONUNBUFFERED": "1",
    }
    if args.http_pool_env:
        # WorkerSettings sizes the worker's httpx pool from this, not from `-c`.
        env["LLMFLEET_WORKER_CONCURRENCY"] = str(concurrency)
    procs: list[Proc] = []
    engine = make_engine(db_url, pool_size=2)
    producer = Celery("bench-producer", broker=broker_url)
    producer.conf.update(broker_options(7200, fleet_name.current()))
    try:
        mock, mock_url = start_mock(env, log_dir, "--latency", str(args.latency))
        procs.append(mock)
        config_path = log_dir / "fleet.yaml"
        config_path.write_text(yaml.safe_dump(fleet_config(mock_url)))
        env["LLMFLEET_CONFIG"] = str(config_path)
        argv = [sys.executable, "-m", "producer_api.cli", "worker", "-c", str(concurrency)]
        argv += ["--name", "bench@%h", "--loglevel", args.loglevel]
        worker = Proc("worker", argv, env, log_dir)
        procs.append(worker)
        # " ready." is logged at INFO only; a control ping answers at any log level.
        worker.wait_for("ready", lambda: bool(producer.control.ping(timeout=0.5)), timeout=120)
        ps, mock_ps = psutil.Process(worker.popen.pid), psutil.Process(mock.popen.pid)
        ids = insert_jobs(engine, jobs)
        with producer.producer_or_acquire() as publisher:
            publisher.connection.ensure_connection()
            cpu0, mock_cpu0, machine0 = cpu_seconds(ps), cpu_seconds(mock_ps), psutil.cpu_times()
            t0 = time.perf_counter()
            per = args.lines_per_message
            for start in range(0, len(ids), per):
                if per == 1:
                    producer.send_task(
                        EXECUTE_TASK, args=[ids[start]], queue=QUEUE_NORMAL, producer=publisher
                    )
                else:  # as the batch dispatcher sends a batch's lines
                    chunk = ids[start : start + per]
                    producer.send_task(
                        EXECUTE_LINES_TASK, args=[chunk], queue=QUEUE_BATCH, producer=publisher
                    )
            publish_s = time.perf_counter() - t0
        ideal = math.ceil(jobs / concurrency) * args.latency
        deadline = t0 + max(5 * ideal, 60.0) + args.latency * 2
        done, counts = 0, {}
        while done < jobs and time.perf_counter() < deadline:
            time.sleep(POLL_SECONDS)
            counts = status_counts(engine)
            done = sum(v for k, v in counts.items() if k in TERMINAL_STATUSES)
            if worker.popen.poll() is not None:
                raise RuntimeError(f"worker exited:\n{worker.output()[-3000:]}")
        wall = time.perf_counter() - t0
        cpu, mock_cpu = cpu_seconds(ps) - cpu0, cpu_seconds(mock_ps) - mock_cpu0
        machine = psutil.cpu_times()
        idle = (machine.idle + machine.iowait) - (machine0.idle + machine0.iowait)
        busy = 1 - idle / (sum(machine) - sum(machine0))
        rss_mb, threads = ps.memory_info().rss / 2**20, ps.num_threads()
        stats = httpx.get(f"{mock_url}/_mock/stats", timeout=10).json()
        succeeded = counts.get(JobStatus.SUCCEEDED, 0)
        log = worker.output()
        return Result(
            pool=pool,
            concurrency=concurrency,
            jobs=jobs,
            latency=args.latency,
            wall_s=round(wall, 2),
            ideal_s=ideal,
            ratio=round(wall / ideal, 3),
            publish_s=round(publish_s, 2),
            max_in_flight=int(stats["max_in_flight"]),
            mock_calls=int(stats["calls"]),
            cpu_s=round(cpu, 2),
            cpu_ms_per_job=round(1000 * cpu / jobs, 2),
            rss_mb=round(rss_mb, 1),
            threads=threads,
            succeeded=succeeded,
            failures=jobs - succeeded,
            log_errors=sum(log.count(word) for word in ("ERROR/", "CRITICAL/", "Traceback")),
            mock_cpu_s=round(mock_cpu, 2),
            failure_reasons=failure_reasons(engine),
            machine_busy_pct=round(100 * busy, 1),
            http_pool_env=args.http_pool_env,
            lines_per_message=args.lines_per_message,
        )
    finally:
        for proc in reversed(procs):
            proc.stop()
        engine.dispose()
        producer.close()


HEADER = (
    "| pool | concurrency | jobs | lines/message | wall s | ideal s | wall/ideal "
    "| max in flight | worker CPU ms/job | failures |\n|---|---|---|---|---|---|---|---|---|---|"
)


def row(r: Result) -> str:
    return (
        f"| {r.pool} | {r.concurrency} | {r.jobs} | {r.lines_per_message} "
        f"| {r.wall_s:.2f} | {r.ideal_s:g} "
        f"| {r.ratio:.2f} | {r.max_in_flight} | {r.cpu_ms_per_job:.1f} | {r.failures} |"
    )


def save(results: list[Result], path: Path) -> None:
    """Merge into the file by case, so separate invocations accumulate."""
    key = ("pool", "concurrency", "jobs", "latency", "http_pool_env", "lines_per_message")
    old: list[dict[str, Any]] = json.loads(path.read_text()) if path.exists() else []
    fresh = [asdict(r) for r in results]
    seen = {tuple(d[k] for k in key) for d in fresh}
    kept = [d for d in old if tuple(d.get(k) for k in key) not in seen]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(kept + fresh, indent=2) + "\n")


def ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--concurrency", type=ints, default=[1000], help="comma list (-c)")
    parser.add_argument("--jobs", type=ints, default=[1000], help="comma list of job counts")
    parser.add_argument("--latency", type=float, default=2.0, help="mock latency, seconds")
    parser.add_argument("--loglevel", default="INFO", help="worker log level")
    parser.add_argument("--db-pool", type=int, default=20, help="LLMFLEET_WORKER_DB_POOL")
    parser.add_argument(
        "--no-http-pool-env",
        dest="http_pool_env",
        action="store_false",
        help="do not set LLMFLEET_WORKER_CONCURRENCY=-c (shows the default httpx pool cap)",
    )
    parser.add_argument(
        "--lines-per-message",
        type=int,
        default=1,
        help="jobs per message: 1 = one execute message each; more = execute_lines "
        "messages on the batch queue, as the batch dispatcher sends them",
    )
    parser.add_argument("--out", type=Path, default=RESULTS / "pools.json")
    args = parser.parse_args()
    # `pool` stays in the results: earlier ones compared Celery pools (docs/BENCHMARKS.md)
    cases = itertools.product(["threads"], args.concurrency, args.jobs)
    results: list[Result] = []
    print(HEADER, flush=True)
    for pool, concurrency, jobs in cases:
        case = f"{pool}-c{concurrency}-n{jobs}-m{args.lines_per_message}"
        log_dir = RESULTS / "logs" / args.out.stem / case
        log_dir.mkdir(parents=True, exist_ok=True)
        try:
            result = run_case(pool, concurrency, jobs, args, log_dir)
        except Exception as exc:  # one broken case must not hide the others
            print(f"| {pool} | {concurrency} | {jobs} | error: {exc!s:.300} (logs: {log_dir})")
            continue
        results.append(result)
        print(row(result), flush=True)
    save(results, args.out)
    print(f"\nJSON: {args.out}")


if __name__ == "__main__":
    main()
