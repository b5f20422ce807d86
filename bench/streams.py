"""Streamed chat completions: time to first token, and 1,000 streams on one worker.

Part `ttft`: N streamed requests (`stream: true`, `stream_options.include_usage`) from
C aiohttp clients to one mock provider (latency 0, 20 content chunks 20 ms apart) by
three paths: directly; through the fleet (its API, one worker, its beat, a private
redis-server and a private PostgreSQL cluster, as bench/sync_chat.py starts them);
through LiteLLM's proxy (one process, its best setting here, from the bench venv:
bench/requirements-peer.txt, BENCH_PEER_BIN). Per path and C: TTFT p50/p99 (request
sent to the first chunk that carries content), the stream's total time p50, what the
path adds to the direct TTFT p50 and p99, and CPU per stream over the path's processes.

Part `hold`: S streams at once through the fleet on ONE worker process (`-c 1000`), the
mock sending 100 chunks 20 ms apart; the clients run in a process of their own
(bench/stream_load.py), their CPU measured. Reported: streams completed, content chunks
delivered vs expected, the gap between a stream's chunks p50/p99 as the clients saw it,
the private redis-server's peak memory (INFO memory used_memory_peak, and the largest
used_memory sampled every 0.5 s), CPU per stream over the fleet's processes. The same
S streams straight to the mock first, as the baseline of what mock and clients manage.

    .venv/bin/python bench/streams.py --part ttft --concurrency 1,50 --requests 100,1000
    .venv/bin/python bench/streams.py --part hold --streams 1000

Writes bench/results/streams.json (a part run alone replaces its own entry). Targets:
fleet-added TTFT p50 <= 5 ms and p99 <= 25 ms at C=50; `hold`: every chunk delivered,
gap p99 <= 2x the mock's interval (40 ms).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/ is not installed

import redis
from cpu_meter import CpuMeter  # bench/ is sys.path[0]
from pools import REPO
from private_pg import private_postgres, recreate_database
from private_redis import private_redis
from sqlalchemy import select
from stream_load import load
from sync_chat import PROXY_KEY, fleet_meters, ints, procs, proxy

from models import migrate
from models.db import make_engine

RESULTS = REPO / "bench" / "results"
BENCH_DB = "llmfleet_bench_streams"
LOAD = Path(__file__).resolve().parent / "stream_load.py"


def measure(
    url: str, key: str, meters: dict[str, CpuMeter], requests: int, concurrency: int
) -> dict[str, Any]:
    asyncio.run(load(url, key, min(requests, 100), concurrency, "warm up"))
    for meter in meters.values():
        meter.sample()
    row = asyncio.run(load(url, key, requests, concurrency, "How far is the moon?"))
    for meter in meters.values():
        meter.sample()
    return with_cpu(row, meters, requests)


def with_cpu(row: dict[str, Any], meters: dict[str, CpuMeter], n: int) -> dict[str, Any]:
    cpu = {k: m.seconds() for k, m in meters.items()}
    row["cpu_ms_per_stream"] = round(1000 * sum(cpu.values()) / n, 2)
    row["cpu_ms_by_part"] = {k: round(1000 * v / n, 2) for k, v in cpu.items()}
    return row


@contextlib.contextmanager
def fleet_with_mock(
    log_dir: Path, redis_url: str, worker_c: int, mock_flags: list[str]
) -> Iterator[tuple[Any, str, dict[str, CpuMeter], CpuMeter]]:
    """A private PostgreSQL, the mock, the fleet (one worker at -c `worker_c`) on the
    private redis-server at `redis_url`; yields (fleet, mock URL, fleet meters, mock's)."""
    # tests.support reads TEST_REDIS_BASE (the private server's) as it is imported
    from tests.support.fleet import deployment, mini_fleet
    from tests.support.processes import start_mock

    with contextlib.ExitStack() as stack:
        admin_url, postmaster = stack.enter_context(private_postgres())
        db_url = recreate_database(admin_url, BENCH_DB)
        migrate.upgrade(db_url)
        engine = make_engine(db_url, pool_size=2)
        stack.callback(engine.dispose)
        mock, mock_url = start_mock(dict(os.environ), log_dir, *mock_flags)
        stack.callback(mock.stop)

        def config(urls: dict[str, str]) -> dict[str, Any]:
            return {"model_list": [deployment("mock", mock_url)]}

        sizes = {"workers": 1, "concurrency": worker_c, "dbs": (5, 6)}
        fleet = stack.enter_context(
            mini_fleet(log_dir, db_url, engine, config, {}, redis_base=redis_url, **sizes)
        )
        meters = fleet_meters(fleet, postmaster)
        yield fleet, mock_url, meters, CpuMeter(procs(mock.popen.pid))


def run_ttft(args: argparse.Namespace, log_dir: Path) -> list[dict[str, Any]]:
    from tests.support.fleet import MASTER_KEY

    rows: list[dict[str, Any]] = []
    cases = list(zip(args.concurrency, args.requests, strict=True))
    flags = ["--latency", "0", "--stream-chunks", str(args.chunks)]
    flags += ["--stream-interval", f"{args.interval:g}"]
    with (
        private_redis(args.redis_port) as redis_url,
        fleet_with_mock(log_dir, redis_url, args.worker_c, flags) as (fleet, mock_url, meters, _),
    ):
        for concurrency, requests in cases:
            row = measure(mock_url, "k", {}, requests, concurrency)
            rows.append({"path": "direct", **row})
        for concurrency, requests in cases:
            row = measure(fleet.api_url, MASTER_KEY, meters, requests, concurrency)
            rows.append({"path": "fleet", **row})
        if not args.skip_proxy:
            with proxy(mock_url, log_dir) as (url, pid):
                for concurrency, requests in cases:
                    cpu = {"proxy": CpuMeter(procs(pid))}
                    row = measure(url, PROXY_KEY, cpu, requests, concurrency)
                    rows.append({"path": "litellm-proxy", **row})
    direct = {r["concurrency"]: r for r in rows if r["path"] == "direct"}
    for row in rows:
        base = direct[row["concurrency"]]
        row["added_ttft_p50_ms"] = round(row["ttft_p50_ms"] - base["ttft_p50_ms"], 2)
        row["added_ttft_p99_ms"] = round(row["ttft_p99_ms"] - base["ttft_p99_ms"], 2)
    return rows


class RedisMemory:
    """used_memory (and connected_clients) sampled every `every` s on a thread; the peak."""

    def __init__(self, url: str, every: float = 0.5) -> None:
        self.client = redis.Redis.from_url(url)
        self.every, self.samples = every, [int(self.client.info("memory")["used_memory"])]
        self.clients: list[int] = []  # connected_clients, sampled alike
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self.every):
            with contextlib.suppress(redis.RedisError):
                self.samples.append(int(self.client.info("memory")["used_memory"]))
                self.clients.append(int(self.client.info("clients")["connected_clients"]))

    def __enter__(self) -> RedisMemory:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()

    def report(self) -> dict[str, Any]:
        info = self.client.info("memory")
        mb = 1024 * 1024
        return {
            "redis_used_memory_before_mb": round(self.samples[0] / mb, 2),
            "redis_used_memory_max_sampled_mb": round(max(self.samples) / mb, 2),
            "redis_used_memory_peak_mb": round(int(info["used_memory_peak"]) / mb, 2),
            "redis_used_memory_peak_human": info["used_memory_peak_human"],
            "redis_used_memory_after_mb": round(int(info["used_memory"]) / mb, 2),
            "redis_samples": len(self.samples),
            "redis_connected_clients_max": max(self.clients, default=0),
        }


def load_process(url: str, key: str, streams: int, expect: int) -> dict[str, Any]:
    """`streams` clients at once from a process of their own (bench/stream_load.py)."""
    argv = [sys.executable, str(LOAD), url, key, "--requests", str(streams)]
    argv += ["--concurrency", str(streams), "--expect", str(expect)]
    done = subprocess.run(argv, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"load generator failed: {done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def hold_row(row: dict[str, Any], args: argparse.Namespace, path: str) -> dict[str, Any]:
    expected = args.streams * args.hold_chunks
    return {
        "path": path,
        "streams": args.streams,
        "mock_chunks": args.hold_chunks,
        "mock_interval_ms": round(1000 * args.interval, 2),
        "chunks_expected": expected,
        "chunks_missing": expected - row["content_chunks"],
        **row,
    }


def run_hold(args: argparse.Namespace, log_dir: Path) -> list[dict[str, Any]]:
    from tests.support.fleet import MASTER_KEY

    rows: list[dict[str, Any]] = []
    flags = ["--latency", "0", "--stream-chunks", str(args.hold_chunks)]
    flags += ["--stream-interval", f"{args.interval:g}"]
    with (
        private_redis(args.redis_port + 1) as redis_url,
        fleet_with_mock(log_dir, redis_url, args.hold_worker_c, flags) as parts,
    ):
        fleet, mock_url, meters, mock_cpu = parts
        if not args.skip_hold_direct:
            asyncio.run(load(mock_url, "k", 20, 20, "warm up"))
            mock_cpu.sample()
            row = with_cpu(
                load_process(mock_url, "k", args.streams, args.hold_chunks), {}, args.streams
            )
            mock_cpu.sample()
            row["mock_cpu_ms_per_stream"] = round(1000 * mock_cpu.seconds() / args.streams, 2)
            rows.append(hold_row(row, args, "direct"))
        asyncio.run(load(fleet.api_url, MASTER_KEY, 20, 20, "warm up"))
        mock_cpu = CpuMeter(mock_cpu.find)
        for meter in [*meters.values(), mock_cpu]:
            meter.sample()
        stop = threading.Event()
        sampler = threading.Thread(target=sample_loop, args=(meters, stop), daemon=True)
        with RedisMemory(redis_url) as memory:
            sampler.start()
            try:
                row = load_process(fleet.api_url, MASTER_KEY, args.streams, args.hold_chunks)
            finally:
                stop.set()
                sampler.join()
        for meter in [*meters.values(), mock_cpu]:
            meter.sample()
        row = with_cpu(row, meters, args.streams)
        row["mock_cpu_ms_per_stream"] = round(1000 * mock_cpu.seconds() / args.streams, 2)
        row["worker_c"] = args.hold_worker_c
        rows.append(hold_row({**row, **memory.report()}, args, "fleet"))
        rows[-1]["short_diagnosis"] = diagnose(fleet, row["short_streams"][:5])
        rows[-1]["log_warnings"] = {n: log_problems(log_dir / f"{n}.log") for n in ("w0", "api")}
    return rows


def diagnose(fleet: Any, short: list[list[Any]]) -> list[dict[str, Any]]:
    """For streams that did not carry every chunk: the job's row and Redis Stream."""
    from models.redis_keys import job_stream
    from models.stream_events import Delta, decode_entry
    from models.tables import Job

    found = []
    for ident, _, _ in short:
        job_id = str(ident).removeprefix("chatcmpl-")
        with fleet.engine.connect() as conn:
            job = conn.execute(select(Job).where(Job.id == job_id)).first()
        entries = [decode_entry(*e) for e in fleet.redis.xrange(job_stream(job_id))]
        deltas = Counter(str(e.attempt) for e in entries if isinstance(e.event, Delta))
        found.append(
            {
                "job": job_id,
                "status": job.status if job else None,
                "attempts": job.attempts if job else None,
                "calls": job.calls if job else None,
                "stream_entries": len(entries),
                "deltas_by_attempt": dict(deltas),
                "first_entry": entries[0].id if entries else None,
            }
        )
    return found


def log_problems(path: Path) -> dict[str, int]:
    """WARNING and ERROR lines of a process's JSON log, by logger and message start."""
    found: Counter[str] = Counter()
    for line in path.read_text(errors="replace").splitlines():
        with contextlib.suppress(ValueError):
            entry = json.loads(line)
            if entry.get("level") in ("WARNING", "ERROR", "CRITICAL"):
                found[f"{entry['level']} {entry.get('logger')}: {entry['message'][:80]}"] += 1
    return dict(found)


def sample_loop(meters: dict[str, CpuMeter], stop: threading.Event) -> None:
    """CPU meters sampled while the run goes on (processes' children come and go)."""
    while not stop.wait(1.0):
        for meter in meters.values():
            meter.sample()


def print_tables(results: dict[str, Any]) -> None:
    for run in results.get("ttft") or ():
        print(f"\nttft, {run['began']}")
        print("| path | C | TTFT p50 | TTFT p99 | added p50 | added p99 | total p50 | CPU/stream |")
        print("|---|---|---|---|---|---|---|---|")
        for r in run["rows"]:
            print(
                f"| {r['path']} | {r['concurrency']} | {r['ttft_p50_ms']} | {r['ttft_p99_ms']} "
                f"| {r['added_ttft_p50_ms']} | {r['added_ttft_p99_ms']} | {r['total_p50_ms']} "
                f"| {r['cpu_ms_per_stream']} |"
            )
    for run in results.get("hold") or ():
        print(f"\nhold, {run['began']}")
        for r in run["rows"]:
            print(json.dumps(r))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--part", choices=["ttft", "hold", "both"], default="both")
    parser.add_argument("--concurrency", type=ints, default=[1, 50], help="comma list")
    parser.add_argument("--requests", type=ints, default=[100, 1000], help="one per C")
    parser.add_argument("--chunks", type=int, default=20, help="the mock's, part ttft")
    parser.add_argument("--interval", type=float, default=0.02, help="between chunks, s")
    parser.add_argument("--worker-c", type=int, default=200, help="worker -c, part ttft")
    parser.add_argument("--streams", type=int, default=1000, help="at once, part hold")
    parser.add_argument("--hold-chunks", type=int, default=100, help="the mock's, part hold")
    parser.add_argument("--hold-worker-c", type=int, default=1000, help="worker -c, part hold")
    parser.add_argument("--skip-hold-direct", action="store_true", help="no direct baseline")
    parser.add_argument("--redis-port", type=int, default=6401, help="hold uses the next one")
    parser.add_argument("--skip-proxy", action="store_true", help="no LiteLLM proxy side")
    parser.add_argument("--append", action="store_true", help="keep earlier runs' rows")
    parser.add_argument("--out", type=Path, default=RESULTS / "streams.json")
    args = parser.parse_args()
    log_dir = RESULTS / "logs" / "streams"
    log_dir.mkdir(parents=True, exist_ok=True)
    results = json.loads(args.out.read_text()) if args.out.exists() else {}
    for part, run in (("ttft", run_ttft), ("hold", run_hold)):
        if args.part in (part, "both"):
            (log_dir / part).mkdir(parents=True, exist_ok=True)
            began = time.strftime("%Y-%m-%dT%H:%M:%S")
            runs = results.get(part, []) if args.append else []
            results[part] = [*runs, {"began": began, "rows": run(args, log_dir / part)}]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print_tables(results)


if __name__ == "__main__":
    main()
