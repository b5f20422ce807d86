"""Operations end to end on real processes: Prometheus metrics that match a run of
known jobs, JSON log lines with ids and no content, pre-call hooks, and Flower.

One fleet for the module (a mock provider, one worker serving its metrics, beat, the
API) on Redis dbs 1 (state) and 2 (broker) and a database of its own. Counters are
process-wide, so every assertion is on the difference a test's own jobs made.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from models import migrate
from models.db import make_engine
from tests.conftest import recreate_database
from tests.support import hooks as test_hooks
from tests.support.brokers import REDIS_BASE
from tests.support.fleet import MASTER_KEY, MiniFleet, deployment, mini_fleet
from tests.support.processes import Proc, free_port
from tests.support.webhooks import WEBHOOK_SECRET, Receiver
from workers.hooks_examples import REDACTED_EMAIL

DATABASE = "llmfleet_test_observability"
STATE_DB, BROKER_DB = 1, 2
MARKER = "ZEBRA-7731-MARKER"
FLOWER_AUTH = ("ops", "flower-test-pass")

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


@dataclass
class Ops:
    fleet: MiniFleet
    env: dict[str, str]
    log_dir: Path
    worker_metrics: str

    def api_metrics(self) -> Samples:
        return scrape(f"{self.fleet.api_url}/metrics")

    def metrics(self) -> Samples:
        return scrape(self.worker_metrics)


def scrape(url: str) -> Samples:
    response = httpx.get(url, timeout=10)
    assert response.status_code == 200, response.text
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(response.text)
        for s in family.samples
    }


def get(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def eventually(check: Callable[[], bool], timeout: float = 10) -> None:
    until = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < until, "condition not met in time"
        time.sleep(0.2)


def config(urls: dict[str, str]) -> dict[str, Any]:
    return {
        "model_list": [
            deployment(
                "mock-a", urls["m"], input_cost_per_token="0.001", output_cost_per_token="0.002"
            )
        ],
        "router_settings": {"num_retries": 0},
        "llmfleet_settings": {
            "pre_call_hooks": [
                "workers.hooks_examples:redact_emails",
                "tests.support.hooks:reject_forbidden",
            ]
        },
    }


@pytest.fixture(scope="module")
def ops(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Ops]:
    url = recreate_database(DATABASE)
    migrate.upgrade(url)
    engine = make_engine(url)
    log_dir = tmp_path_factory.mktemp("ops-fleet")
    port = free_port()
    extra = {
        "LLMFLEET_METRICS_PORT": str(port),
        "LLMFLEET_METRICS_ADDR": "127.0.0.1",
        "LLMFLEET_LOG_FORMAT": "json",
        "LLMFLEET_WEBHOOK_SECRET": WEBHOOK_SECRET,
    }
    dbs = (STATE_DB, BROKER_DB)
    with mini_fleet(
        log_dir, url, engine, config, {"m": []}, dbs=dbs, concurrency=20, extra_env=extra
    ) as fleet:
        env = {
            **os.environ,
            **extra,
            "DATABASE_URL": url,
            "REDIS_URL": f"{REDIS_BASE}/{STATE_DB}",
            "BROKER_URL": fleet.broker.url,
            "LLMFLEET_CONFIG": str(log_dir / "fleet.yaml"),
            "LLMFLEET_NAME": fleet.worker_env["LLMFLEET_NAME"],  # the fleet's keys
        }
        yield Ops(fleet, env, log_dir, f"http://127.0.0.1:{port}/metrics")
    engine.dispose()


def test_metrics_match_a_run_of_known_jobs(ops: Ops) -> None:
    f = ops.fleet
    api_before, before = ops.api_metrics(), ops.metrics()
    # When 6 jobs succeed at priority 5 and 3 fail (the provider answers 400) at priority 3
    ok = [f.submit(f"hello number {i}", priority=5) for i in range(6)]
    bad = [f.submit(f"[mock:status=400] bad {i}", priority=3) for i in range(3)]
    jobs = f.wait_all(ok + bad)
    assert [j["status"] for j in jobs] == ["succeeded"] * 6 + ["failed"] * 3

    # Then the worker counted their ends, pickups, calls and tokens
    def delta(name: str, **labels: str) -> float:
        return get(ops.metrics(), name, **labels) - get(before, name, **labels)

    m = {"model": "mock-model"}
    eventually(
        lambda: delta("llmfleet_jobs_finished_total", status="failed", priority="3", **m) == 3
    )
    assert delta("llmfleet_jobs_finished_total", status="succeeded", priority="5", **m) == 6
    assert delta("llmfleet_job_pickup_seconds_count", queue="llmfleet.normal") == 6
    assert delta("llmfleet_job_pickup_seconds_count", queue="llmfleet.low") == 3
    assert delta("llmfleet_attempt_duration_seconds_count", deployment="mock-a", result="ok") == 6
    assert (
        delta("llmfleet_attempt_duration_seconds_count", deployment="mock-a", result="error") == 3
    )
    assert delta("llmfleet_attempt_errors_total", deployment="mock-a", error="BadRequestError") == 3
    # "hello number i" is 3 prompt words; "Echo: hello number i" 4 completion words
    tokens = {"customer": "master", **m}
    assert delta("llmfleet_tokens_total", type="prompt", **tokens) == 6 * 3
    assert delta("llmfleet_tokens_total", type="completion", **tokens) == 6 * 4
    # and, once the post-call step has priced them, their cost (per token: 0.001 in, 0.002 out)
    cost = "llmfleet_cost_usd_total"
    expected_cost = 6 * (3 * 0.001 + 4 * 0.002)
    eventually(lambda: delta(cost, customer="master", **m) == pytest.approx(expected_cost))

    # And the API counted them at intake and sees an idle fleet
    api = ops.api_metrics()
    submitted = "llmfleet_jobs_submitted_total"
    for priority, count in (("5", 6), ("3", 3)):
        labels = {"priority": priority, **m}
        assert get(api, submitted, **labels) - get(api_before, submitted, **labels) == count
    assert get(api, "llmfleet_fleet_state_up", source="broker") == 1
    assert get(api, "llmfleet_fleet_state_up", source="redis") == 1
    for queue in ("llmfleet.high", "llmfleet.normal", "llmfleet.low", "llmfleet.batch"):
        assert get(api, "llmfleet_queue_depth", queue=queue) == 0
    assert get(api, "llmfleet_cooldowns_active", deployment="mock-a", model_group="mock-model") == 0
    assert get(api, "llmfleet_jobs_waiting_for_capacity") == 0
    assert get(api, "llmfleet_fleet_state_up", source="database") == 1
    assert get(api, "llmfleet_outbox_dead_events") == 0


def test_webhook_failures_are_counted(ops: Ops, receiver: Callable[..., Receiver]) -> None:
    hook = receiver(fail_first=1)
    before = get(ops.metrics(), "llmfleet_webhook_failures_total", final="false")
    job_id = ops.fleet.submit("tell me when done", webhook_url=hook.url)
    assert ops.fleet.wait(job_id)["status"] == "succeeded"
    assert len(hook.wait_for(2, timeout=30)) == 2  # one 500, then delivered
    eventually(
        lambda: get(ops.metrics(), "llmfleet_webhook_failures_total", final="false") == before + 1
    )


def test_pre_call_hook_rejection_ends_the_job_without_a_call(ops: Ops) -> None:
    calls = ops.fleet.stats("m")["calls"]
    job = ops.fleet.wait(ops.fleet.submit(f"let us talk about {test_hooks.FORBIDDEN}"))
    assert job["status"] == "failed"
    assert job["error"]["message"] == test_hooks.REJECTION
    assert (job["error"]["type"], job["error"]["code"]) == (
        "invalid_request_error",
        "rejected_by_hook",
    )
    assert ops.fleet.stats("m")["calls"] == calls


def test_redaction_hook_keeps_addresses_from_the_provider(ops: Ops) -> None:
    job = ops.fleet.wait(ops.fleet.submit("write to jane.doe@example.com soon"))
    assert job["status"] == "succeeded"
    reply = job["result"]["choices"][0]["message"]["content"]
    assert reply == f"Echo: write to {REDACTED_EMAIL} soon"  # the mock echoes what it got


def test_logs_are_json_lines_with_ids_and_no_content(ops: Ops, tmp_path: Path) -> None:
    f = ops.fleet
    # Given a job and a two-line batch whose prompts (and so replies) carry a marker
    job = f.wait(f.submit(f"please repeat {MARKER}"))
    assert MARKER in job["result"]["choices"][0]["message"]["content"]
    batch_id = run_batch(f, tmp_path)
    # Then every line of the worker's and the API's output is a JSON object without it
    worker = parse_lines(f.workers[0].log)
    api = parse_lines(ops.log_dir / "api.log")
    assert worker and api
    ended = [
        line
        for line in worker
        if line.get("job_id") == job["id"] and "succeeded via" in str(line["message"])
    ]
    assert [(e["attempt"], e["deployment"], e["level"]) for e in ended] == [(1, "mock-a", "INFO")]
    batch_lines = [line for line in worker if line.get("batch_id") == batch_id]
    assert {line["job_id"] for line in batch_lines if "succeeded via" in line["message"]}
    assert any('"GET /v1/jobs/' in str(line["message"]) for line in api)


def run_batch(f: MiniFleet, tmp_path: Path) -> str:
    client = openai.OpenAI(base_url=f"{f.api_url}/v1", api_key=MASTER_KEY)
    path = tmp_path / "batch.jsonl"
    path.write_text(
        "".join(
            json.dumps(
                {
                    "custom_id": f"r{i}",
                    "method": "POST",
                    "url": "/v1/chat/completions",
                    "body": {
                        "model": "mock-model",
                        "messages": [{"role": "user", "content": f"{MARKER} {i}"}],
                    },
                }
            )
            + "\n"
            for i in range(2)
        )
    )
    file_id = client.files.create(file=path.open("rb"), purpose="batch").id
    batch = client.batches.create(
        input_file_id=file_id, endpoint="/v1/chat/completions", completion_window="24h"
    )
    until = time.monotonic() + 60
    while batch.status not in ("completed", "failed", "expired", "cancelled"):
        assert time.monotonic() < until, batch
        time.sleep(0.3)
        batch = client.batches.retrieve(batch.id)
    assert batch.status == "completed"
    return batch.id


def parse_lines(path: Path) -> list[dict[str, Any]]:
    text = path.read_text()
    assert MARKER not in text and "jane.doe@example.com" not in text
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def test_flower_lists_the_worker_and_tasks_without_prompts(ops: Ops) -> None:
    port = free_port()
    env = {
        **ops.env,
        "LLMFLEET_FLOWER_USER": FLOWER_AUTH[0],
        "LLMFLEET_FLOWER_PASSWORD": FLOWER_AUTH[1],
    }
    argv = [sys.executable, "-m", "producer_api.cli", "flower", "--port", str(port)]
    flower = Proc("flower", [*argv, "--address", "127.0.0.1"], env, ops.log_dir)
    base = f"http://127.0.0.1:{port}"
    worker_log = ops.fleet.workers[0]
    try:
        # Given Flower is up and has turned task events on
        flower.wait_for("workers", lambda: "w0@" in str(flower_get(f"{base}/api/workers")))
        worker_log.wait_for("events on", lambda: "enabled by remote" in worker_log.output())
        assert httpx.get(f"{base}/api/workers").status_code == 401
        # When jobs run
        ids = [ops.fleet.submit(f"{MARKER} for flower {i}") for i in range(3)]
        ops.fleet.wait_all(ids)

        # Then Flower lists their execute tasks, with the job id as the only argument
        def ours(name: str | None = None) -> list[dict[str, Any]]:
            tasks = (flower_get(f"{base}/api/tasks") or {}).values()
            mine = [t for t in tasks if any(i in str(t.get("args")) for i in ids)]
            return [t for t in mine if name is None or t["name"] == name]

        executed = "llmfleet.execute"
        flower.wait_for("tasks", lambda: [t["state"] for t in ours(executed)] == ["SUCCESS"] * 3)
        assert sorted(t["args"] for t in ours(executed)) == sorted(f"['{i}']" for i in ids)
        assert {t["name"] for t in ours()} <= {executed, "llmfleet.post_call"}
        tasks = flower_get(f"{base}/api/tasks")
        assert MARKER not in json.dumps(tasks)
        assert all(t.get("kwargs") in ("{}", None) for t in tasks.values())
    finally:
        flower.stop()
    # And stopping Flower turned the events off again
    worker_log.wait_for("events off", lambda: "disabled by remote" in worker_log.output())


def flower_get(url: str) -> Any:
    try:
        response = httpx.get(url, auth=FLOWER_AUTH, timeout=10)
    except httpx.HTTPError:
        return None
    return response.json() if response.status_code == 200 else None


def test_a_bad_hook_path_stops_the_worker_at_start(ops: Ops, tmp_path: Path) -> None:
    bad = config({"m": "http://127.0.0.1:1"})
    bad["llmfleet_settings"]["pre_call_hooks"] = ["no_such_package_xyz.guards:check"]
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(bad))
    env = {**ops.env, "LLMFLEET_CONFIG": str(path), "LLMFLEET_METRICS_PORT": "0"}
    argv = [sys.executable, "-m", "producer_api.cli", "worker", "-c", "2", "--name", "bad@%h"]
    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=120)
    output = done.stdout + done.stderr
    assert done.returncode != 0
    assert "llmfleet_settings.pre_call_hooks[0]" in output
    assert "cannot import module 'no_such_package_xyz.guards'" in output
    assert " ready." not in output
