"""Sync chat completions through the fleet and through LiteLLM's proxy, on one mock.

Three ways to the same mock provider (`--latency`, default 0): directly; through the
fleet (`POST /v1/chat/completions` to its API, one worker, its beat, a private
redis-server and a private PostgreSQL cluster); through LiteLLM's proxy (`litellm
--config`, one process, from the bench venv: bench/requirements-peer.txt). Per
concurrency C: N requests from C clients (aiohttp, kept-alive connections) after a
warm-up. Reported per path: requests/s, latency p50 and p99, what the path adds to the
direct call's p50, and CPU per request over the path's processes (the fleet: API,
worker, beat, redis-server, PostgreSQL; the proxy: its process; the mock's apart).

    .venv/bin/python bench/sync_chat.py --concurrency 1,50 --requests 300,2000

Writes bench/results/sync_chat.json. The targets: added p50 <= 3 ms, CPU per request
<= 0.5x the proxy's, p99 <= the proxy's.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
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
from models.db import make_engine

RESULTS = REPO / "bench" / "results"
BENCH_DB = "llmfleet_bench_sync"
PEER_BIN = os.environ.get("BENCH_PEER_BIN", str(REPO / ".bench-venv" / "bin"))
PROXY_KEY = "sk-" + "5f0e3c9a7b2d4e6f8a1c3b5d7e9f0a2b" * 2
BODY = {"model": "mock-model", "messages": [{"role": "user", "content": "How far is the moon?"}]}


async def load(url: str, key: str, requests: int, concurrency: int) -> dict[str, Any]:
    """`requests` chat completions from `concurrency` clients at once."""
    latencies: list[float] = []
    sent = iter(range(requests))
    connector = aiohttp.TCPConnector(limit=concurrency)
    headers = {"Authorization": f"Bearer {key}"}
    async with aiohttp.ClientSession(connector=connector, headers=headers) as client:

        async def one_client() -> None:
            for _ in sent:
                t = time.perf_counter()
                async with client.post(f"{url}/v1/chat/completions", json=BODY) as reply:
                    text = await reply.text()
                latencies.append(time.perf_counter() - t)
                if reply.status != 200:
                    raise RuntimeError(f"{url}: {reply.status}: {text[:300]}")

        t0 = time.perf_counter()
        await asyncio.gather(*(one_client() for _ in range(concurrency)))
        wall = time.perf_counter() - t0
    latencies.sort()
    return {
        "per_s": round(requests / wall, 1),
        "p50_ms": round(1000 * statistics.median(latencies), 2),
        "p99_ms": round(1000 * latencies[int(0.99 * (len(latencies) - 1))], 2),
    }


def measure(
    url: str, key: str, meters: dict[str, CpuMeter], requests: int, concurrency: int
) -> dict[str, Any]:
    asyncio.run(load(url, key, min(requests, 100), concurrency))  # warm-up
    for meter in meters.values():
        meter.sample()
    row = asyncio.run(load(url, key, requests, concurrency))
    for meter in meters.values():
        meter.sample()
    cpu = {k: m.seconds() for k, m in meters.items()}
    row["cpu_ms_per_request"] = round(1000 * sum(cpu.values()) / requests, 2)
    row["cpu_ms_by_part"] = {k: round(1000 * v / requests, 2) for k, v in cpu.items()}
    return row


def procs(*pids: int) -> Callable[[], list[psutil.Process]]:
    return lambda: [psutil.Process(pid) for pid in pids]


def fleet_meters(fleet: Any, postmaster: psutil.Process | None) -> dict[str, CpuMeter]:
    """CPU meters of a mini fleet's parts: API, workers, beat, Redis, PostgreSQL."""
    named = {p.name: p.popen.pid for p in fleet.procs}
    return {
        "api": CpuMeter(procs(named["api"])),
        "worker": CpuMeter(procs(*(w.popen.pid for w in fleet.workers))),
        "beat": CpuMeter(procs(named["beat"])),
        "redis": CpuMeter(redis_server),
        "postgres": CpuMeter(postgres(postmaster)),
    }


@contextlib.contextmanager
def proxy(mock_url: str, log_dir: Path) -> Iterator[tuple[str, int]]:
    """LiteLLM's proxy, one process, routing `mock-model` to the mock; no database, a
    master key (it refuses to start without one), its logging and telemetry off (its
    best setting for this)."""
    from tests.support.processes import free_port, http_ok

    config = log_dir / "litellm.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "model_list": [
                    {
                        "model_name": "mock-model",
                        "litellm_params": {
                            "model": "openai/mock-model",
                            "api_base": f"{mock_url}/v1",
                            "api_key": "k",
                        },
                    }
                ],
                "litellm_settings": {"telemetry": False, "set_verbose": False},
                "general_settings": {"master_key": PROXY_KEY},
            }
        )
    )
    port = free_port()
    argv = [f"{PEER_BIN}/litellm", "--config", str(config), "--port", str(port)]
    argv += ["--num_workers", "1"]
    env = {**os.environ, "LITELLM_LOG": "ERROR", "LITELLM_TELEMETRY": "False"}
    env["LITELLM_MASTER_KEY"] = PROXY_KEY
    with (log_dir / "litellm.log").open("wb") as sink:
        popen = subprocess.Popen(argv, env=env, stdout=sink, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        ready, until = http_ok(f"{url}/health/liveliness"), time.monotonic() + 180
        while not ready():
            if popen.poll() is not None or time.monotonic() > until:
                raise RuntimeError((log_dir / "litellm.log").read_text()[-3000:])
            time.sleep(0.5)
        yield url, popen.pid
    finally:
        popen.terminate()
        popen.wait(30)


def run(args: argparse.Namespace, log_dir: Path) -> list[dict[str, Any]]:
    # tests.support reads TEST_REDIS_BASE (the private server's) as it is imported
    from tests.support.fleet import MASTER_KEY, deployment, mini_fleet
    from tests.support.processes import start_mock

    rows: list[dict[str, Any]] = []
    cases = list(zip(args.concurrency, args.requests, strict=True))
    with contextlib.ExitStack() as stack:
        admin_url, postmaster = stack.enter_context(private_postgres())
        db_url = recreate_database(admin_url, BENCH_DB)
        migrate.upgrade(db_url)
        engine = make_engine(db_url, pool_size=2)
        mock, mock_url = start_mock(dict(os.environ), log_dir, "--latency", f"{args.latency:g}")
        stack.callback(mock.stop)

        for concurrency, requests in cases:
            row = measure(mock_url, "k", {}, requests, concurrency)
            rows.append({"path": "direct", "concurrency": concurrency, **row})

        def config(urls: dict[str, str]) -> dict[str, Any]:
            return {"model_list": [deployment("mock", mock_url)]}

        sizes = {"workers": 1, "concurrency": args.worker_c, "dbs": (5, 6)}
        with mini_fleet(log_dir, db_url, engine, config, {}, **sizes) as fleet:
            meters = fleet_meters(fleet, postmaster)
            for concurrency, requests in cases:
                row = measure(fleet.api_url, MASTER_KEY, meters, requests, concurrency)
                rows.append({"path": "fleet", "concurrency": concurrency, **row})
        if not args.skip_proxy:
            with proxy(mock_url, log_dir) as (url, pid):
                for concurrency, requests in cases:
                    meters = {"proxy": CpuMeter(procs(pid))}
                    row = measure(url, PROXY_KEY, meters, requests, concurrency)
                    rows.append({"path": "litellm-proxy", "concurrency": concurrency, **row})
        engine.dispose()
    direct = {r["concurrency"]: r["p50_ms"] for r in rows if r["path"] == "direct"}
    for row in rows:
        row["added_p50_ms"] = round(row["p50_ms"] - direct[row["concurrency"]], 2)
    return rows


def ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--concurrency", type=ints, default=[1, 50], help="comma list")
    parser.add_argument("--requests", type=ints, default=[300, 2000], help="one per C")
    parser.add_argument("--latency", type=float, default=0.0, help="the mock's, seconds")
    parser.add_argument("--worker-c", type=int, default=200, help="the fleet worker's -c")
    parser.add_argument("--redis-port", type=int, default=6399)
    parser.add_argument("--skip-proxy", action="store_true", help="no LiteLLM proxy side")
    parser.add_argument("--out", type=Path, default=RESULTS / "sync_chat.json")
    args = parser.parse_args()
    log_dir = RESULTS / "logs" / "sync_chat"
    log_dir.mkdir(parents=True, exist_ok=True)
    with private_redis(args.redis_port), tempfile.TemporaryDirectory():
        rows = run(args, log_dir)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(rows, indent=2) + "\n")
    print("| path | C | req/s | p50 ms | added p50 ms | p99 ms | CPU ms/request |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['path']} | {r['concurrency']} | {r['per_s']} | {r['p50_ms']} "
            f"| {r['added_p50_ms']} | {r['p99_ms']} | {r['cpu_ms_per_request']} |"
        )


if __name__ == "__main__":
    main()
