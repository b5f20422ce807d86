"""Interactive jobs behind a batch backlog, with Redis and with RabbitMQ as broker.

Redis: the worker BRPOPs the queues in priority order (`queue_order_strategy`).
RabbitMQ has no order across queues: the worker consumes all of them on one channel
and RabbitMQ offers each freed prefetch slot to the queues in turn. This measures what
that means for interactive work: a small fleet (one worker, `--concurrency` slots, a
mock at a fixed latency) runs an N-line batch; once it flows, a burst of B interactive
jobs (priority 9) is submitted at once. Reported: the interactive jobs' time from
submit to end (p50, max) and how many batch lines ended while the burst ran.

    .venv/bin/python bench/broker_priority.py --lines 400 --burst 1,40
    .venv/bin/python bench/broker_priority.py --lines 400 --burst 1,40 \
        --amqp amqp://guest:guest@127.0.0.1:5672/llmfleet_bench

With `--amqp` the broker is that RabbitMQ vhost, created afresh with `rabbitmqctl` (it
must run on this machine); router state stays in Redis (`TEST_REDIS_BASE`, dbs 12/13).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/ is not installed

import httpx

DBS = (12, 13)


def start_batch(http: httpx.Client, path: Path, lines: int) -> str:
    with path.open("w") as out:
        for i in range(lines):
            body = {"model": "mock-model", "messages": [{"role": "user", "content": f"b{i}"}]}
            row = {"custom_id": f"b{i}", "method": "POST", "url": "/v1/chat/completions"}
            out.write(json.dumps({**row, "body": body}) + "\n")
    with path.open("rb") as handle:
        file_id = http.post("/v1/files", files={"file": handle}, data={"purpose": "batch"})
    batch = http.post(
        "/v1/batches",
        json={"input_file_id": file_id.json()["id"], "endpoint": "/v1/chat/completions"},
    ).json()
    return str(batch["id"])


def batch_done(http: httpx.Client, batch_id: str) -> int:
    counts = http.get(f"/v1/batches/{batch_id}").json()["request_counts"]
    return int(counts["completed"] + counts["failed"])


def burst(fleet: Any, http: httpx.Client, batch_id: str, size: int) -> dict[str, Any]:
    while batch_done(http, batch_id) < 8:
        time.sleep(0.1)
    before = batch_done(http, batch_id)
    started = time.monotonic()

    def one(i: int) -> tuple[str, float]:
        job = fleet.wait(fleet.submit(f"urgent {i}", priority=9), timeout=300)
        return str(job["status"]), time.monotonic() - started

    with ThreadPoolExecutor(min(size, 64)) as pool:
        ended = list(pool.map(one, range(size)))
    took = time.monotonic() - started
    waits = [seconds for _, seconds in ended]
    assert all(status == "succeeded" for status, _ in ended), ended
    return {
        "burst": size,
        "interactive_p50_s": round(statistics.median(waits), 1),
        "interactive_max_s": round(max(waits), 1),
        "burst_s": round(took, 1),
        "batch_lines_during_burst": batch_done(http, batch_id) - before,
    }


def run(broker: str, args: argparse.Namespace) -> list[dict[str, Any]]:
    from models import migrate
    from models.db import make_engine
    from tests.conftest import recreate_database
    from tests.support.fleet import MASTER_KEY, deployment, mini_fleet

    url = recreate_database("llmfleet_bench_priority")
    migrate.upgrade(url)
    engine = make_engine(url)
    rows = []

    def config(urls: dict[str, str]) -> dict[str, Any]:
        return {"model_list": [deployment("mock", urls["mock"])]}

    for size in args.burst:
        with (
            tempfile.TemporaryDirectory() as tmp,
            mini_fleet(
                Path(tmp),
                url,
                engine,
                config,
                {"mock": ["--latency", str(args.latency)]},
                concurrency=args.concurrency,
                dbs=DBS,
            ) as fleet,
        ):
            headers = {"Authorization": f"Bearer {MASTER_KEY}"}
            with httpx.Client(base_url=fleet.api_url, headers=headers, timeout=60) as http:
                batch_id = start_batch(http, Path(tmp) / "batch.jsonl", args.lines)
                rows.append({"broker": broker, **burst(fleet, http, batch_id, size)})
                http.post(f"/v1/batches/{batch_id}/cancel")
    engine.dispose()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lines", type=int, default=400)
    parser.add_argument("--burst", type=lambda s: [int(x) for x in s.split(",")], default=[1, 40])
    parser.add_argument("--latency", type=float, default=0.5)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--amqp", help="RabbitMQ URL with a vhost of its own (default: Redis)")
    args = parser.parse_args()
    if args.amqp:
        os.environ["TEST_BROKER_URL"] = args.amqp  # read by tests.support.brokers at import
    rows = run("rabbitmq" if args.amqp else "redis", args)
    print(
        "| broker | burst | interactive p50 s | max s | burst s | batch lines ended during burst |"
    )
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['broker']} | {r['burst']} | {r['interactive_p50_s']} | "
            f"{r['interactive_max_s']} | {r['burst_s']} | {r['batch_lines_during_burst']} |"
        )
    out = Path(__file__).parent / "results" / f"broker_priority_{rows[0]['broker']}.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps({"args": vars(args), "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
