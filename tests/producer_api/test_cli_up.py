"""`llmfleet up` with no Redis and no PostgreSQL: SQLite, a private redis-server, the
mock provider, API, worker and beat — and Ctrl-C or SIGTERM stops all of it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import openai
import redis

from tests.support.brokers import REDIS_BASE
from tests.support.processes import REPO, Proc, free_port, http_ok, start_mock

PROXY_CONFIG = REPO / "tests" / "fixtures" / "litellm" / "proxy_config.yaml"

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


def sessions_led_by_children_of(pid: int) -> set[int]:
    """The sessions of `up`'s children (each leads its own): read from /proc."""
    return {sid for p, ppid, sid in processes() if ppid == pid and p == sid}


def processes() -> list[tuple[int, int, int]]:
    """(pid, ppid, session id) of every process."""
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # ended meanwhile
        if fields[0] != "Z":
            out.append((int(stat.parent.name), int(fields[1]), int(fields[3])))
    return out


def test_up_with_a_litellm_config_stops_every_child_on_sigterm(tmp_path: Path) -> None:
    # Given `llmfleet up` on a LiteLLM proxy config, as it is, whose master key is in
    # general_settings (LLMFLEET_MASTER_KEY unset)
    env = bare_env()
    mock, mock_url = start_mock(env, tmp_path)
    env |= {
        "MOCK_BASE": f"{mock_url}/v1",
        "OPENAI_API_KEY": "sk-provider",
        "LITELLM_MASTER_KEY": "sk-litellm-master",
    }
    port, data_dir = free_port(), tmp_path / ".llmfleet"
    argv = [sys.executable, "-m", "producer_api.cli", "up", "--port", str(port)]
    argv += ["--config", str(PROXY_CONFIG), "--data-dir", str(data_dir)]
    up = Proc("up", argv, env, tmp_path)
    try:
        up.wait_for("state file", (data_dir / "api.json").exists, timeout=90)
        # Then it lists what it does not honour, and serves with that master key
        assert "litellm_settings.success_callback" in up.output()
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="sk-litellm-master")
        reply = client.chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}]
        )
        assert reply.choices[0].message.content == "Echo: hi"
        children = sessions_led_by_children_of(up.popen.pid)
        assert len(children) >= 4  # redis-server, worker, beat, API
        # When it gets SIGTERM
        up.popen.send_signal(signal.SIGTERM)
        code = up.popen.wait(timeout=20)
    finally:
        if up.popen.poll() is None:
            up.popen.kill()
        mock.stop()
    # Then it stopped them all, their own children too, removed its state file, and
    # exited cleanly
    assert code == 0, up.output()[-3000:]
    left = [pid for pid, _, sid in processes() if sid in children]
    assert left == [], up.output()[-3000:]
    assert not (data_dir / "api.json").exists()
    assert "SIGTERM: stopping the fleet" in up.output()


def test_up_reports_every_config_mistake_before_starting_anything(tmp_path: Path) -> None:
    bad = tmp_path / "fleet.yaml"
    bad.write_text(
        "model_list:\n"
        "  - model_name: a\n"
        "    litellm_params: {model: vertexx/x, temprature: 1}\n"
        "  - model_name: b\n"
        "    litellm_params: {model: openai/x, temperature: 9}\n"
        "router_settings: {num_retries: -1}\n"
    )
    argv = [sys.executable, "-m", "producer_api.cli", "up", "--config", str(bad)]
    result = subprocess.run(
        [*argv, "--data-dir", str(tmp_path / "d")],
        env={**bare_env(), "COLUMNS": "200"},
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    for path in (
        "model_list[0].litellm_params.temprature: unknown key",
        "model_list[0].litellm_params.model: unknown provider 'vertexx'",
        "model_list[1].litellm_params.temperature",
        "router_settings.num_retries",
    ):
        assert path in result.stderr, result.stderr
    assert "redis" not in result.stderr.lower()  # nothing was started


def test_two_fleets_on_one_redis_database_keep_their_jobs_apart(tmp_path: Path) -> None:
    # Given a fleet serving, on a Redis database that a second fleet uses too
    shared = {**bare_env(), "REDIS_URL": f"{REDIS_BASE}/2"}
    redis.Redis.from_url(shared["REDIS_URL"]).flushdb()
    port, first_dir = free_port(), tmp_path / "first"
    argv = [sys.executable, "-m", "producer_api.cli", "up", "--port", str(port)]
    first = Proc("first", [*argv, "--data-dir", str(first_dir)], shared, tmp_path)
    try:
        first.wait_for("state file", (first_dir / "api.json").exists, timeout=90)
        # When a second fleet (its own database) runs a demo batch on the same Redis
        second = subprocess.run(
            [*argv[:-1], str(free_port()), "--demo", "10", "--data-dir", str(tmp_path / "second")],
            cwd=REPO,
            env={**shared, "COLUMNS": "160"},
            capture_output=True,
            text=True,
            timeout=240,
        )
        # Then its batch completes: the first fleet's workers never took its messages
        assert second.returncode == 0, second.stderr[-3000:]
        assert "batch completed: 10/10 succeeded" in second.stderr
        # and its worker said that another fleet uses this Redis
        log = (tmp_path / "second" / "logs" / "worker-0.log").read_text()
        assert "another fleet's workers use this Redis" in log
        # while the first fleet still serves its own
        state = json.loads((first_dir / "api.json").read_text())
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key=state["api_key"])
        reply = client.chat.completions.create(
            model="mock-model", messages=[{"role": "user", "content": "still mine"}]
        )
        assert reply.choices[0].message.content == "Echo: still mine"
    finally:
        first.popen.send_signal(signal.SIGTERM)
        first.popen.wait(timeout=30)
        redis.Redis.from_url(shared["REDIS_URL"]).flushdb()
