"""Accepting a 50,000-line batch, and Redis memory while it runs.

Starts a small fleet (mock provider, one worker, beat, API) on a fresh database,
uploads an N-line JSONL file, times `POST /v1/batches` (whole-file validation plus
N job rows), then samples Redis while the batch runs: used memory and the depth of
the broker's batch queue. For comparison it measures what publishing all N execute
messages at once would cost Redis (into a scratch db, deleted afterwards).

    .venv/bin/python bench/batch_accept.py --lines 50000 --seconds 30
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/ is not installed

import httpx
import redis
from celery import Celery

from models import fleet_name, migrate
from models.contract import EXECUTE_TASK, QUEUE_BATCH, broker_options
from models.db import make_engine
from tests.conftest import recreate_database
from tests.support.fleet import MASTER_KEY, deployment, mini_fleet

REDIS_BASE = "redis://127.0.0.1:6379"
STATE_DB, BROKER_DB, SCRATCH_DB = 10, 11, 7


def write_batch(path: Path, lines: int) -> None:
    with path.open("w") as out:
        for i in range(lines):
            body = {
                "model": "mock-model",
                "messages": [{"role": "user", "content": f"Summarise item {i} in one line."}],
                "max_tokens": 64,
            }
            line = {"custom_id": f"item-{i}", "method": "POST", "url": "/v1/chat/completions"}
            out.write(json.dumps({**line, "body": body}) + "\n")


def naive_publish_cost(lines: int) -> int:
    """Bytes of Redis memory that N execute messages take when all published at once."""
    client = redis.Redis.from_url(f"{REDIS_BASE}/{SCRATCH_DB}")
    client.flushdb()
    before = int(client.info("memory")["used_memory"])
    app = Celery("naive", broker=f"{REDIS_BASE}/{SCRATCH_DB}")
    app.conf.update(broker_options(7200, fleet_name.current()))
    with app.producer_or_acquire() as producer:
        for i in range(lines):
            app.send_task(
                EXECUTE_TASK, args=[f"job_{i:028x}"], queue=QUEUE_BATCH, producer=producer
            )
    after = int(client.info("memory")["used_memory"])
    client.flushdb()
    return after - before


def run(lines: int, seconds: float, latency: str, concurrency: int) -> dict[str, Any]:
    url = recreate_database("llmfleet_bench_batch")
    migrate.upgrade(url)
    engine = make_engine(url)
    state = redis.Redis.from_url(f"{REDIS_BASE}/{STATE_DB}")
    broker = redis.Redis.from_url(f"{REDIS_BASE}/{BROKER_DB}")
    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        batch_file = tmp_path / "batch.jsonl"
        write_batch(batch_file, lines)
        file_bytes = batch_file.stat().st_size

        def config(urls: dict[str, str]) -> dict[str, Any]:
            return {"model_list": [deployment("mock", urls["mock"])]}

        flags = {"mock": ["--latency", latency]}
        with mini_fleet(tmp_path, url, engine, config, flags, concurrency=concurrency) as fleet:
            baseline = int(state.info("memory")["used_memory"])
            headers = {"Authorization": f"Bearer {MASTER_KEY}"}
            with httpx.Client(base_url=fleet.api_url, headers=headers, timeout=600) as http:
                t0 = time.perf_counter()
                with batch_file.open("rb") as handle:
                    file_id = http.post(
                        "/v1/files", files={"file": handle}, data={"purpose": "batch"}
                    ).json()["id"]
                upload_s = time.perf_counter() - t0
                t0 = time.perf_counter()
                created = http.post(
                    "/v1/batches",
                    json={"input_file_id": file_id, "endpoint": "/v1/chat/completions"},
                ).json()
                accept_s = time.perf_counter() - t0
                assert created["status"] == "in_progress", created.get("errors")
                peak_memory, peak_depth, done = baseline, 0, 0
                until = time.monotonic() + seconds
                while time.monotonic() < until:
                    peak_memory = max(peak_memory, int(state.info("memory")["used_memory"]))
                    peak_depth = max(
                        peak_depth, int(broker.llen(f"{fleet_name.current()}:{QUEUE_BATCH}"))
                    )
                    time.sleep(0.5)
                counts = http.get(f"/v1/batches/{created['id']}").json()["request_counts"]
                done = counts["completed"] + counts["failed"]
                http.post(f"/v1/batches/{created['id']}/cancel")
    engine.dispose()
    return {
        "lines": lines,
        "file_mb": round(file_bytes / 1e6, 1),
        "upload_s": round(upload_s, 2),
        "accept_s": round(accept_s, 2),
        "redis_baseline_mb": round(baseline / 1e6, 1),
        "redis_peak_mb": round(peak_memory / 1e6, 1),
        "redis_growth_mb": round((peak_memory - baseline) / 1e6, 1),
        "peak_batch_queue_depth": peak_depth,
        "lines_done_in_window": done,
        "window_s": seconds,
        "naive_publish_all_mb": round(naive_publish_cost(lines) / 1e6, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, default=50_000)
    parser.add_argument("--seconds", type=float, default=30)
    parser.add_argument("--latency", default="0.5")
    parser.add_argument("--concurrency", type=int, default=200)
    args = parser.parse_args()
    result = run(args.lines, args.seconds, args.latency, args.concurrency)
    print(json.dumps(result, indent=2))
    out = Path(__file__).parent / "results" / "batch_accept.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
