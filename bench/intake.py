"""Jobs accepted per second: a burst of `POST /v1/jobs` against one API process.

Per database (the embedded default's SQLite file, and PostgreSQL): a fresh database, a
redis-server of the bench's own (state and broker), the API process alone (no worker:
accepted jobs stay queued, their messages in the broker), a warm-up of 50 jobs, then N
jobs sent by C clients at once over kept-alive connections, as an app enqueueing a burst
would. Reported: jobs/s from the first request to the last answer, the answer's latency
(p50, p99), and CPU per job of the API process, redis-server and PostgreSQL (the
private cluster's every process; SQLite's is the API's own).

    .venv/bin/python bench/intake.py --jobs 1000 --concurrency 50 --db sqlite,postgres

`--key virtual` sends the jobs with a virtual key of the fleet (its limits checked in
Redis per job) instead of the master key. Results go to bench/results/intake.json.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/ is not installed

import aiohttp
import psutil
import yaml
from cpu_meter import CpuMeter, postgres, redis_server  # bench/ is sys.path[0]
from pools import REPO
from private_pg import private_postgres, recreate_database
from private_redis import private_redis

from models import migrate
from tests.support.fleet import MASTER_KEY, deployment
from tests.support.processes import Proc, start_api
from tests.support.tenancy import make_key

RESULTS = REPO / "bench" / "results"
BENCH_DB = "llmfleet_bench_intake"
PY_SPY = os.environ.get("BENCH_PY_SPY", str(Path(sys.executable).parent / "py-spy"))
WARM_UP = 50


def body(i: int) -> dict[str, Any]:
    return {"model": "mock-model", "messages": [{"role": "user", "content": f"intake {i}"}]}


async def burst(url: str, key: str, jobs: int, concurrency: int) -> tuple[float, list[float]]:
    """Send `jobs` jobs from `concurrency` clients; the wall time and each answer's.
    aiohttp, not httpx: at this rate httpx's async client spent 5.6 ms of CPU per
    request in this process (on the same two cores), aiohttp 0.3 ms."""
    latencies: list[float] = []
    sent = iter(range(jobs))
    headers = {"Authorization": f"Bearer {key}"}
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(url, connector=connector, headers=headers) as client:

        async def one_client() -> None:
            for i in sent:
                t = time.perf_counter()
                async with client.post("/v1/jobs", json=body(i)) as reply:
                    text = await reply.text()
                latencies.append(time.perf_counter() - t)
                if reply.status != 202:
                    raise RuntimeError(f"{reply.status}: {text[:300]}")

        t0 = time.perf_counter()
        await asyncio.gather(*(one_client() for _ in range(concurrency)))
        return time.perf_counter() - t0, latencies


@contextlib.contextmanager
def database(kind: str, admin_url: str | None, work: Path) -> Iterator[tuple[str, Any]]:
    """The database URL, and what measures its CPU (None: it runs in the API)."""
    if kind == "sqlite":
        url = f"sqlite:///{work / 'llmfleet.db'}"
        migrate.upgrade(url)
        yield url, None
        return
    with contextlib.ExitStack() as stack:
        postmaster = None
        if admin_url is None:
            admin_url, postmaster = stack.enter_context(private_postgres())
        url = recreate_database(admin_url, BENCH_DB)
        migrate.upgrade(url)
        yield url, postmaster


def start_profile(pid: int, out: Path) -> subprocess.Popen[bytes]:
    """py-spy on the API process for the burst (it slows the API: compare figures from
    runs without it): collapsed stacks for bench/profile_top.py."""
    argv = [PY_SPY, "record", "--pid", str(pid), "--format", "raw", "--rate", "100", "--gil"]
    argv += ["--nonblocking", "-o", str(out)]
    return subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def run_case(kind: str, args: argparse.Namespace, redis_base: str) -> dict[str, Any]:
    log_dir = RESULTS / "logs" / "intake" / kind
    log_dir.mkdir(parents=True, exist_ok=True)
    with (
        tempfile.TemporaryDirectory() as tmp,
        database(kind, args.pg_admin_url, Path(tmp)) as (url, postmaster),
    ):
        config = Path(tmp) / "fleet.yaml"
        config.write_text(yaml.safe_dump({"model_list": [deployment("mock", "http://mock")]}))
        env = {
            **os.environ,
            "DATABASE_URL": url,
            "REDIS_URL": f"{redis_base}/0",
            "BROKER_URL": f"{redis_base}/1",
            "LLMFLEET_MASTER_KEY": MASTER_KEY,
            "LLMFLEET_CONFIG": str(config),
            "LLMFLEET_FILES_DIR": str(Path(tmp) / "files"),
            "PYTHONUNBUFFERED": "1",
        }
        api: Proc | None = None
        try:
            api, api_url = start_api(env, log_dir)
            key = make_key(api_url).key if args.key == "virtual" else MASTER_KEY
            asyncio.run(burst(api_url, key, WARM_UP, min(args.concurrency, WARM_UP)))
            pid = api.popen.pid
            meters = {
                "api": CpuMeter(lambda: [psutil.Process(pid)]),
                "redis": CpuMeter(redis_server),
                **({"postgres": CpuMeter(postgres(postmaster))} if postmaster else {}),
            }
            for meter in meters.values():
                meter.sample()
            profiler = start_profile(pid, log_dir / "api-profile.txt") if args.profile else None
            wall, latencies = asyncio.run(burst(api_url, key, args.jobs, args.concurrency))
            if profiler is not None:
                profiler.send_signal(signal.SIGINT)  # py-spy writes its output then
                profiler.wait()
            for meter in meters.values():
                meter.sample()
        finally:
            if api is not None:
                api.stop()
    latencies.sort()
    cpu = {k: m.seconds() for k, m in meters.items()}
    return {
        "db": kind,
        "key": args.key,
        "jobs": args.jobs,
        "concurrency": args.concurrency,
        "wall_s": round(wall, 2),
        "jobs_per_s": round(args.jobs / wall, 1),
        "latency_ms_p50": round(1000 * statistics.median(latencies), 1),
        "latency_ms_p99": round(1000 * latencies[int(0.99 * (len(latencies) - 1))], 1),
        "cpu_ms_per_job": round(1000 * sum(cpu.values()) / args.jobs, 2),
        "cpu_ms_per_job_by_part": {k: round(1000 * v / args.jobs, 2) for k, v in cpu.items()},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=50, help="clients at once")
    parser.add_argument("--db", default="sqlite,postgres", help="comma list: sqlite, postgres")
    parser.add_argument("--key", choices=["master", "virtual"], default="master")
    parser.add_argument("--redis-port", type=int, default=6398)
    parser.add_argument("--pg-admin-url", help="a PostgreSQL server to use (default: private)")
    parser.add_argument("--profile", action="store_true", help="py-spy on the API")
    parser.add_argument("--out", type=Path, default=RESULTS / "intake.json")
    args = parser.parse_args()
    rows = []
    with private_redis(args.redis_port) as redis_base:
        for kind in args.db.split(","):
            row = run_case(kind, args, redis_base)
            print(json.dumps(row), flush=True)
            rows.append(row)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
