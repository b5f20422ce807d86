"""The peer: N chat completions through LiteLLM's Router against the project's mock.

Runs in the bench-only environment (LiteLLM is never a project dependency):

    python3 -m venv .bench-venv && .bench-venv/bin/pip install -r bench/requirements-peer.txt
    .bench-venv/bin/python bench/peer_litellm.py --requests 5000 --concurrency 1000 --latency 0

It starts the mock provider with the project's venv (--project-python), sends N
`Router.acompletion` calls with at most C in flight (asyncio), and reports requests/s
and this process's user+system CPU per request over the run. The mock's CPU is
measured separately and counted for neither side. LiteLLM's logging, telemetry and
callbacks stay off; its aiohttp connector limits are raised to C so that LiteLLM's
own defaults (500 per host) do not cap it below the fleet's concurrency.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import socket
import subprocess
import sys
import time
import urllib.request
from importlib.metadata import version
from pathlib import Path
from typing import Any

import psutil

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results"
PROJECT_PYTHON = os.environ.get("BENCH_PROJECT_PYTHON", "/work/venv/bin/python")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_mock(latency: float, log_dir: Path) -> tuple[subprocess.Popen[bytes], str]:
    """The project's mock provider, as tests/support/processes.py starts it."""
    port = free_port()
    argv = [PROJECT_PYTHON, "-m", "workers.mock_provider", "--port", str(port)]
    argv += ["--latency", str(latency)]
    log_dir.mkdir(parents=True, exist_ok=True)
    with (log_dir / "mock-peer.log").open("wb") as sink:
        popen = subprocess.Popen(argv, cwd=REPO, stdout=sink, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    until = time.monotonic() + 60
    while time.monotonic() < until:
        if popen.poll() is not None:
            raise RuntimeError(f"mock exited: {(log_dir / 'mock-peer.log').read_text()[-2000:]}")
        try:
            with urllib.request.urlopen(f"{url}/v1/models", timeout=1):
                return popen, url
        except OSError:
            time.sleep(0.1)
    popen.kill()
    raise RuntimeError("mock provider did not answer within 60 s")


def cpu_of(proc: psutil.Process) -> float:
    """bench/pools.py's cpu_seconds, minus its project imports (this runs in .bench-venv)."""
    t = proc.cpu_times()
    return t.user + t.system + t.children_user + t.children_system


def quiet_litellm(concurrency: int) -> Any:
    """Import LiteLLM with logging, telemetry and callbacks off, connector limits >= C."""
    os.environ.setdefault("LITELLM_LOG", "ERROR")
    for name in ("AIOHTTP_CONNECTOR_LIMIT", "AIOHTTP_CONNECTOR_LIMIT_PER_HOST"):
        os.environ[name] = str(max(concurrency, int(os.environ.get(name, "0"))))
    import litellm

    litellm.telemetry = False
    litellm.suppress_debug_info = True
    litellm.set_verbose = False
    litellm.callbacks = []
    litellm.success_callback = []
    litellm.failure_callback = []
    litellm._async_success_callback = []
    litellm._async_failure_callback = []
    return litellm


async def drive(router: Any, requests: int, concurrency: int) -> tuple[int, dict[str, int]]:
    """Send `requests` calls from `concurrency` coroutines; count the failures by type."""
    next_index, failures = 0, 0
    reasons: dict[str, int] = {}

    async def one_lane() -> None:
        nonlocal next_index, failures
        while next_index < requests:
            i = next_index
            next_index += 1
            messages = [{"role": "user", "content": f"Summarise item {i} in one line."}]
            try:
                await router.acompletion(model="mock-model", messages=messages, max_tokens=64)
            except Exception as exc:  # counted, not raised: one failure must not stop the run
                failures += 1
                reasons[type(exc).__name__] = reasons.get(type(exc).__name__, 0) + 1

    await asyncio.gather(*(one_lane() for _ in range(min(concurrency, requests))))
    return failures, reasons


def run(requests: int, concurrency: int, latency: float, mock_url: str | None) -> dict[str, Any]:
    log_dir = RESULTS / "logs" / "peer_litellm"
    mock, url = (None, mock_url) if mock_url else start_mock(latency, log_dir)
    try:
        litellm = quiet_litellm(concurrency)
        params = {"model": "openai/mock-model", "api_base": f"{url}/v1", "api_key": "x"}
        router = litellm.Router(model_list=[{"model_name": "mock-model", "litellm_params": params}])
        me = psutil.Process()
        mock_ps = psutil.Process(mock.pid) if mock else None
        loop = asyncio.new_event_loop()
        # Warm-up (client creation, lazy imports) is not counted for LiteLLM.
        loop.run_until_complete(drive(router, min(concurrency, 50), 50))
        cpu0, mock0, machine0 = cpu_of(me), cpu_of(mock_ps) if mock_ps else 0.0, psutil.cpu_times()
        t0 = time.perf_counter()
        failures, reasons = loop.run_until_complete(drive(router, requests, concurrency))
        wall = time.perf_counter() - t0
        cpu = cpu_of(me) - cpu0
        mock_cpu = (cpu_of(mock_ps) - mock0) if mock_ps else math.nan
        machine = psutil.cpu_times()
        loop.close()
    finally:
        if mock is not None:
            mock.terminate()
            mock.wait(timeout=20)
    idle = (machine.idle + machine.iowait) - (machine0.idle + machine0.iowait)
    busy = 1 - idle / (sum(machine) - sum(machine0))
    return {
        "side": "litellm",
        "litellm_version": version("litellm"),
        "requests": requests,
        "concurrency": concurrency,
        "latency": latency,
        "wall_s": round(wall, 2),
        "ideal_s": math.ceil(requests / concurrency) * latency,
        "per_s": round(requests / wall, 1),
        "cpu_s": round(cpu, 2),
        "cpu_ms_per_request": round(1000 * cpu / requests, 3),
        "mock_cpu_s": round(mock_cpu, 2),
        "failures": failures,
        "failure_reasons": reasons,
        "rss_mb": round(psutil.Process().memory_info().rss / 2**20, 1),
        "machine_busy_pct": round(100 * busy, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=5000, help="N")
    parser.add_argument("--concurrency", type=int, default=1000, help="C, calls in flight")
    parser.add_argument("--latency", type=float, default=0.0, help="mock latency, seconds")
    parser.add_argument("--mock-url", help="use this mock instead of starting one")
    parser.add_argument("--out", type=Path, default=RESULTS / "peer_litellm.json")
    args = parser.parse_args()
    result = run(args.requests, args.concurrency, args.latency, args.mock_url)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result), flush=True)  # the last line: compare.py parses it
    sys.stdout.flush()


if __name__ == "__main__":
    main()
