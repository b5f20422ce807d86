"""`llmfleet up` with no Redis and no PostgreSQL: SQLite, a private redis-server, the
mock provider, API, worker and beat — and Ctrl-C stops all of it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import redis

from tests.support.processes import REPO, Proc, free_port, http_ok

FLEET_ENV = ("DATABASE_URL", "REDIS_URL", "BROKER_URL", "LLMFLEET_CONFIG", "LLMFLEET_MASTER_KEY")


def bare_env() -> dict[str, str]:
    """The environment of a fresh machine: nothing configured, and nothing answering
    at REDIS_URL."""
    env = {k: v for k, v in os.environ.items() if k not in FLEET_ENV}
    env["REDIS_URL"] = f"redis://127.0.0.1:{free_port()}/0"
    return env


def test_up_answers_healthz_completes_a_job_and_stops_on_ctrl_c(tmp_path: Path) -> None:
    port = free_port()
    data_dir = tmp_path / ".llmfleet"
    argv = [sys.executable, "-m", "producer_api.cli", "up", "--port", str(port)]
    up = Proc("up", [*argv, "--data-dir", str(data_dir)], bare_env(), tmp_path)
    try:
        url = f"http://127.0.0.1:{port}"
        up.wait_for("/healthz", http_ok(f"{url}/healthz"), timeout=90)
        up.wait_for("state file", (data_dir / "api.json").exists)
        state = json.loads((data_dir / "api.json").read_text())
        headers = {"Authorization": f"Bearer {state['api_key']}"}
        body = {"model": "mock-model", "messages": [{"role": "user", "content": "up works"}]}

        created = httpx.post(f"{url}/v1/jobs", json=body, headers=headers).json()
        job = httpx.get(
            f"{url}/v1/jobs/{created['id']}", params={"wait": 30}, headers=headers, timeout=40
        ).json()

        assert job["status"] == "succeeded"
        assert job["result"]["choices"][0]["message"]["content"] == "Echo: up works"
        assert (data_dir / "llmfleet.db").exists()
        assert "started a private redis-server" in up.output()
        private_redis = up.output().split("started a private redis-server at ")[1].split()[0]
    finally:
        up.popen.send_signal(signal.SIGINT)
        code = up.popen.wait(timeout=60)
    assert code == 0
    assert "stopping the fleet" in up.output()
    assert not http_ok(f"{url}/healthz")()
    try:
        redis.Redis.from_url(private_redis, socket_connect_timeout=1).ping()
        raise AssertionError("the private redis-server outlived `llmfleet up`")
    except redis.ConnectionError:
        pass


def test_up_demo_prints_results_and_exits(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "producer_api.cli", "up", "--demo", "6", "--port", str(free_port())],
        cwd=tmp_path,
        env={**bare_env(), "PYTHONPATH": str(REPO), "COLUMNS": "160"},
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "batch completed: 6/6 succeeded" in result.stderr
    assert "Echo: Tell me about queues" in result.stderr
