"""Time and Redis round trips per routing decision.

A decision is one `Router.choose` (pick + admit) and one `Router.report_success`
(release + record), against a real Redis, for each strategy, with a group of
--deployments deployments. Redis itself counts the round trips (script calls, INFO
commandstats) and the commands the scripts run inside it.

    .venv/bin/python bench/router.py --decisions 5000 --deployments 3
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import time
from pathlib import Path
from typing import Any

import redis

from models.fleet_config import parse_fleet_config
from workers.calls import drive
from workers.router import Admitted, Request, Router

STRATEGIES = (
    "simple-shuffle",
    "least-busy",
    "latency-based-routing",
    "cost-based-routing",
    "usage-based-routing",
)


def command_calls(client: redis.Redis) -> tuple[int, int]:
    """(round trips, commands executed): a script call is one round trip whose inner
    commands Redis also counts under their own names."""
    stats: dict[str, Any] = client.info("commandstats")
    calls = {k.removeprefix("cmdstat_"): int(v["calls"]) for k, v in stats.items()}
    scripts = calls.get("evalsha", 0) + calls.get("eval", 0)
    return scripts, sum(v for k, v in calls.items() if k not in ("info", "config|resetstat"))


def run(client: redis.Redis, strategy: str, decisions: int, deployments: int) -> dict[str, Any]:
    model_list = [
        {
            "model_name": "g",
            "litellm_params": {
                "model": "openai/m",
                "rpm": 10_000_000,
                "tpm": 10**12,
                "input_cost_per_token": f"0.00000{i + 1}",
            },
            "model_info": {"id": f"d{i}"},
        }
        for i in range(deployments)
    ]
    config = parse_fleet_config(
        {"model_list": model_list, "router_settings": {"routing_strategy": strategy}}, {}
    )
    router = Router(config, client, random.Random(1))
    request = Request("g", (), estimated_tokens=50, timeout_s=60)
    client.flushdb()
    client.config_resetstat()
    scripts_before, commands_before = command_calls(client)
    latencies = []
    started = time.perf_counter()
    for _ in range(decisions):
        t0 = time.perf_counter()
        admitted = drive(router.choose(request, set()))
        assert isinstance(admitted, Admitted)
        drive(router.report_success(admitted, 0.5, 20, 70))
        latencies.append(time.perf_counter() - t0)
    elapsed = time.perf_counter() - started
    scripts_after, commands_after = command_calls(client)
    latencies.sort()
    return {
        "strategy": strategy,
        "decisions": decisions,
        "deployments": deployments,
        "us_per_decision_mean": round(1e6 * elapsed / decisions, 1),
        "us_p50": round(1e6 * statistics.median(latencies), 1),
        "us_p99": round(1e6 * latencies[int(0.99 * len(latencies))], 1),
        "round_trips_per_decision": round((scripts_after - scripts_before) / decisions, 2),
        "commands_in_redis_per_decision": round((commands_after - commands_before) / decisions, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/8")
    parser.add_argument("--decisions", type=int, default=5000)
    parser.add_argument("--deployments", type=int, default=3)
    args = parser.parse_args()
    client = redis.Redis.from_url(args.redis)
    rows = [run(client, s, args.decisions, args.deployments) for s in STRATEGIES]
    client.flushdb()
    print(
        "| strategy | deployments | µs/decision (mean) | p50 µs | p99 µs "
        "| round trips | commands run in Redis |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for r in rows:
        print(
            f"| {r['strategy']} | {r['deployments']} | {r['us_per_decision_mean']} | "
            f"{r['us_p50']} | {r['us_p99']} | {r['round_trips_per_decision']} | "
            f"{r['commands_in_redis_per_decision']} |"
        )
    out = Path(__file__).parent / "results" / "router.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
