"""The fleet against LiteLLM's Router, in one sitting: the ratios issue 9 asks for.

Per latency, the peer (bench/peer_litellm.py, in the bench venv) and then the fleet
(bench/fleet_e2e.py) run the same N at the same concurrency (C = workers x -c) against
a fresh mock; then bench/pools.py checks one worker process holding 1,000 calls in
flight at 2 s latency (on a private PostgreSQL cluster too: bench/private_pg.py).

    /work/venv/bin/python bench/compare.py --jobs 5000 --latency 0,2 --workers 2 -c 500

Redis is a private redis-server on --redis-port (bench/private_redis.py), PostgreSQL a
private cluster (bench/private_pg.py).

Targets: fleet CPU per job <= 0.5 x LiteLLM's CPU per request; fleet jobs/s >= 2 x
LiteLLM's requests/s; one process within 1.2 x of ideal time at 1,000 in flight.
Writes bench/results/compare.json (and each side's JSON beside it).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/ is not installed

from private_pg import private_postgres
from private_redis import DEFAULT_PORT, private_redis

BENCH = Path(__file__).resolve().parent
RESULTS = BENCH / "results"
PEER_PYTHON = os.environ.get("BENCH_PEER_PYTHON", str(BENCH.parent / ".bench-venv/bin/python"))
CPU_TARGET, SPEED_TARGET, IN_FLIGHT_TARGET = 0.5, 2.0, 1.2


def last_json(argv: list[str], env: dict[str, str] | None = None) -> dict[str, Any]:
    """Run a side; its last stdout line is its result."""
    print("$", " ".join(argv), file=sys.stderr, flush=True)
    done = subprocess.run(argv, capture_output=True, text=True, env=env, cwd=BENCH.parent)
    if done.returncode != 0:
        raise RuntimeError(f"{argv[1]} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def peer(args: argparse.Namespace, latency: float) -> dict[str, Any]:
    argv = [PEER_PYTHON, str(BENCH / "peer_litellm.py"), "--requests", str(args.jobs)]
    argv += ["--concurrency", str(args.workers * args.concurrency), "--latency", f"{latency:g}"]
    return last_json([*argv, "--out", str(RESULTS / f"compare_peer_lat{latency:g}.json")])


def fleet(args: argparse.Namespace, latency: float) -> dict[str, Any]:
    argv = [sys.executable, str(BENCH / "fleet_e2e.py"), "--jobs", str(args.jobs)]
    argv += ["--latency", f"{latency:g}", "--workers", str(args.workers)]
    argv += ["-c", str(args.concurrency), "--dbs", args.dbs]
    return last_json([*argv, "--out", str(RESULTS / f"compare_fleet_lat{latency:g}.json")])


def in_flight(args: argparse.Namespace) -> dict[str, Any]:
    """bench/pools.py's case: -c 1000, 4,000 jobs at 2 s (its own Redis dbs),
    sent as the batch dispatcher sends lines (--pool-lines-per-message)."""
    out = RESULTS / "compare_pools.json"
    out.unlink(missing_ok=True)
    argv = [sys.executable, str(BENCH / "pools.py"), "--concurrency"]
    argv += ["1000", "--jobs", str(args.pool_jobs), "--latency", "2", "--out", str(out)]
    argv += ["--lines-per-message", str(args.pool_lines_per_message)]
    with private_postgres() as (admin_url, _):
        print("$", " ".join(argv), file=sys.stderr, flush=True)
        env = {**os.environ, "BENCH_PG_ADMIN_URL": admin_url}
        subprocess.run(argv, check=True, env=env, cwd=BENCH.parent, stdout=sys.stderr)
    rows: list[dict[str, Any]] = json.loads(out.read_text())
    return rows[-1] if rows else {}


def table(rows: list[tuple[dict[str, Any], dict[str, Any]]]) -> str:
    lines = [
        "| latency s | side | N | C | wall s (fleet: post-calls drained) | per s "
        "| CPU ms per job/request | parts (ms) | pickup p50 / p99 ms | failed | machine busy % |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for p, f in rows:
        lines.append(
            f"| {p['latency']:g} | LiteLLM Router {p['litellm_version']} | {p['requests']} "
            f"| {p['concurrency']} | {p['wall_s']:.1f} | {p['per_s']:.0f} "
            f"| {p['cpu_ms_per_request']:.2f} | mock {1000 * p['mock_cpu_s'] / p['requests']:.2f}"
            f" (apart) | - | {p['failures']} | {p['machine_busy_pct']:.0f} |"
        )
        parts = ", ".join(f"{k} {v:.2f}" for k, v in f["cpu_ms_per_job_by_part"].items())
        lines.append(
            f"| {f['latency']:g} | fleet {f['workers']}x{f['concurrency']} | {f['jobs']} "
            f"| {f['workers'] * f['concurrency']} | {f['wall_s']:.1f} ({f['drained_s']:.0f})"
            f" | {f['per_s']:.0f} "
            f"| {f['cpu_ms_per_job']:.2f} | {parts} (mock apart) "
            f"| {f['pickup_ms_p50']:.0f} / {f['pickup_ms_p99']:.0f} | {f['failed']} "
            f"| {f['machine_busy_pct']:.0f} |"
        )
    return "\n".join(lines)


def ratios(p: dict[str, Any], f: dict[str, Any]) -> dict[str, Any]:
    cpu = f["cpu_ms_per_job"] / p["cpu_ms_per_request"]
    speed = f["per_s"] / p["per_s"]
    return {
        "latency": f["latency"],
        "cpu_ratio": round(cpu, 2),
        "cpu_target_met": cpu <= CPU_TARGET,
        "cpu_miss_factor": round(cpu / CPU_TARGET, 2),
        "speed_ratio": round(speed, 2),
        "speed_target_met": speed >= SPEED_TARGET,
        "speed_miss_factor": round(SPEED_TARGET / speed, 2),
        # with every post-call task run, not only every line answered
        "speed_ratio_drained": round(f["jobs"] / f["drained_s"] / p["per_s"], 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=5000, help="N for both sides")
    parser.add_argument("--latency", default="0,2", help="comma list of mock latencies, s")
    parser.add_argument("--workers", type=int, default=2, help="fleet worker processes")
    parser.add_argument("-c", "--concurrency", type=int, default=500, help="-c per worker")
    parser.add_argument("--dbs", default="7,8", help="Redis dbs of the fleet: state,broker")
    parser.add_argument("--pool-jobs", type=int, default=4000, help="bench/pools.py --jobs")
    parser.add_argument("--skip-pools", action="store_true", help="no in-flight check")
    parser.add_argument(
        "--pool-lines-per-message",
        type=int,
        default=20,
        help="bench/pools.py --lines-per-message (20: the batch dispatcher's default)",
    )
    parser.add_argument(
        "--redis-port", type=int, default=DEFAULT_PORT, help="port of a private redis-server"
    )
    args = parser.parse_args()
    RESULTS.mkdir(parents=True, exist_ok=True)
    with private_redis(args.redis_port):
        pairs = [(peer(args, x), fleet(args, x)) for x in map(float, args.latency.split(","))]
        found = [ratios(p, f) for p, f in pairs]
        pools = {} if args.skip_pools else in_flight(args)
    summary = {
        "pairs": [
            {"litellm": p, "fleet": f, "ratios": r} for (p, f), r in zip(pairs, found, strict=True)
        ],
        "in_flight": pools,
        "in_flight_target_met": bool(pools) and pools["ratio"] <= IN_FLIGHT_TARGET,
    }
    (RESULTS / "compare.json").write_text(json.dumps(summary, indent=2) + "\n")
    report(pairs, found, pools)


def report(
    pairs: list[tuple[dict[str, Any], dict[str, Any]]],
    found: list[dict[str, Any]],
    pools: dict[str, Any],
) -> None:
    print(table(pairs) + "\n")
    print("| latency s | fleet/LiteLLM CPU per unit (target <= 0.5) | jobs/s ratio (>= 2) |")
    print("|---|---|---|")
    verdict = {True: "met", False: "missed"}
    for r in found:
        print(
            f"| {r['latency']:g} | {r['cpu_ratio']:.2f} ({verdict[r['cpu_target_met']]})"
            f" | {r['speed_ratio']:.2f} ({verdict[r['speed_target_met']]}) |"
        )
    if pools:
        print(
            f"\none process, threads -c 1000, {pools['jobs']} jobs at 2 s:"
            f" wall {pools['wall_s']} s, ideal {pools['ideal_s']:g} s,"
            f" wall/ideal {pools['ratio']:.2f} (target <= 1.2),"
            f" max in flight {pools['max_in_flight']}, worker CPU {pools['cpu_ms_per_job']} ms/job,"
            f" failures {pools['failures']}, machine busy {pools['machine_busy_pct']}%"
        )
    print(f"\nJSON: {RESULTS / 'compare.json'}")


if __name__ == "__main__":
    main()
