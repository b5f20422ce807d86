"""A secret sent through every entry point reaches no log line, no Flower task field,
no error message and no metric label; a job that crashes before its provider call on
every claim ends `failed` after a bounded number of claims.

One fleet for the module (a mock provider, one worker serving its metrics, beat, the
API, Flower) on Redis dbs 12 (state) and 13 (broker) and a database of its own. The
marker may come back to its owner in a result or an output file: that is the job's
content, returned by design. It must not appear anywhere an operator looks.
"""

from __future__ import annotations

import json
import sys
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import text

from models import migrate
from models.db import make_engine
from tests.conftest import recreate_database
from tests.support import hooks as test_hooks
from tests.support.fleet import MiniFleet, deployment, mini_fleet
from tests.support.processes import Proc, free_port
from tests.support.webhooks import WEBHOOK_SECRET, Receiver
from workers.celery_app import app
from workers.crashes import MAX_CRASHED_CLAIMS, TaskCrashed

DATABASE = "llmfleet_test_marker"
STATE_DB, BROKER_DB = 12, 13
MARKER = "OKAPI-5519-SECRET"
FLOWER_AUTH = ("ops", "flower-marker-pass")
TERMINAL = ("succeeded", "failed", "expired", "cancelled", "completed", "ended")


@dataclass
class Marked:
    fleet: MiniFleet
    env: dict[str, str]
    log_dir: Path
    worker_metrics: str
    flower: Proc
    flower_url: str


def config(urls: dict[str, str]) -> dict[str, Any]:
    return {
        "model_list": [deployment("mock-a", urls["m"])],
        "router_settings": {"num_retries": 0},
        "llmfleet_settings": {
            "pre_call_hooks": ["tests.support.hooks:crash_on_trigger"],
            "post_call_hooks": ["tests.support.hooks:unstorable_on_trigger"],
        },
    }


@pytest.fixture(scope="module")
def marked(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Marked]:
    url = recreate_database(DATABASE)
    migrate.upgrade(url)
    engine = make_engine(url)
    log_dir = tmp_path_factory.mktemp("marker-fleet")
    port = free_port()
    extra = {
        "LLMFLEET_METRICS_PORT": str(port),
        "LLMFLEET_METRICS_ADDR": "127.0.0.1",
        "LLMFLEET_LOG_FORMAT": "json",
        "LLMFLEET_WEBHOOK_SECRET": WEBHOOK_SECRET,
    }
    dbs = (STATE_DB, BROKER_DB)
    with mini_fleet(
        log_dir, url, engine, config, {"m": []}, dbs=dbs, concurrency=8, extra_env=extra
    ) as fleet:
        assert fleet.broker is not None
        env = {
            **fleet.worker_env,
            "LLMFLEET_FLOWER_USER": FLOWER_AUTH[0],
            "LLMFLEET_FLOWER_PASSWORD": FLOWER_AUTH[1],
        }
        flower_port = free_port()
        argv = [sys.executable, "-m", "producer_api.cli", "flower", "--port", str(flower_port)]
        flower = Proc("flower", [*argv, "--address", "127.0.0.1"], env, log_dir)
        flower_url = f"http://127.0.0.1:{flower_port}"
        worker = fleet.workers[0]
        try:
            # Flower turns the worker's task events on: every task below is recorded
            flower.wait_for(
                "workers", lambda: "w0@" in str(flower_get(f"{flower_url}/api/workers"))
            )
            worker.wait_for("events on", lambda: "enabled by remote" in worker.output())
            yield Marked(
                fleet, env, log_dir, f"http://127.0.0.1:{port}/metrics", flower, flower_url
            )
        finally:
            flower.stop()
    engine.dispose()


def flower_get(url: str) -> Any:
    try:
        response = httpx.get(url, auth=FLOWER_AUTH, timeout=10)
    except httpx.HTTPError:
        return None
    return response.json() if response.status_code == 200 else None


def chat(content: str) -> dict[str, Any]:
    return {"model": "mock-model", "messages": [{"role": "user", "content": content}]}


def claims_of(f: MiniFleet, job_id: str) -> tuple[int, int]:
    """(claims, provider calls) of a job, as its row counts them."""
    with f.engine.connect() as conn:
        row = conn.execute(
            text("SELECT attempts, calls FROM jobs WHERE id = :id"), {"id": job_id}
        ).one()
    return int(row.attempts), int(row.calls)


def test_a_job_that_crashes_before_its_call_ends_failed_after_bounded_claims(
    marked: Marked,
) -> None:
    f = marked.fleet
    calls = f.stats("m")["calls"]
    # Given a job whose every claim crashes before its provider call (UnicodeEncodeError)
    job_id = f.submit(f"{test_hooks.CRASH} {MARKER}")
    # When it has been claimed as often as the bound allows
    job = f.wait(job_id, timeout=60)
    # Then it ended failed, with the reason, on its MAX_CRASHED_CLAIMS-th claim
    assert job["status"] == "failed", job
    error = job["error"]
    assert (error["type"], error["code"]) == ("server_error", "job_crashed")
    assert "before its provider call (UnicodeEncodeError)" in error["message"]
    assert claims_of(f, job_id) == (MAX_CRASHED_CLAIMS, 0)
    assert f.stats("m")["calls"] == calls
    # and each claim crashed in the worker, logged by class name with the job's ids
    crashed = [
        line
        for line in json_lines(f.workers[0].log)
        if line.get("job_id") == job_id and "crashed before its provider call" in line["message"]
    ]
    assert [line["attempt"] for line in crashed] == list(range(1, MAX_CRASHED_CLAIMS + 1))


def test_a_hook_that_raises_fails_the_job_by_class_name(marked: Marked) -> None:
    job = marked.fleet.wait(marked.fleet.submit(f"{test_hooks.RAISE} {MARKER}"))
    assert job["status"] == "failed"
    assert (job["error"]["code"], job["error"]["type"]) == ("hook_error", "api_error")
    assert "(RuntimeError)" in job["error"]["message"]
    assert claims_of(marked.fleet, job["id"]) == (1, 0)


def test_a_result_the_database_refuses_ends_the_job_failed_at_once(marked: Marked) -> None:
    f = marked.fleet
    job = f.wait(f.submit(f"{test_hooks.UNSTORABLE} {MARKER}"))
    assert job["status"] == "failed", job
    assert (job["error"]["code"], job["result"]) == ("job_crashed", None)
    assert "while its result was stored" in job["error"]["message"]
    assert claims_of(f, job["id"]) == (1, 1)  # its call is kept, it is not called again


def test_the_marker_reaches_no_log_flower_field_error_or_metric(
    marked: Marked, receiver: Callable[..., Receiver], tmp_path: Path
) -> None:
    f = marked.fleet
    hook = receiver(fail_first=2)
    with f.client() as client:
        # Given the marker in every entry point, failing ways included
        job_ids = [
            f.submit(f"say {MARKER}", metadata={"note": MARKER}, webhook_url=hook.url),
            f.submit(f"[mock:status=400] {MARKER}", metadata={"note": MARKER}),
            f.submit(f"{test_hooks.CRASH} {MARKER}"),
            f.submit(f"{test_hooks.RAISE} {MARKER}"),
            f.submit(f"{test_hooks.UNSTORABLE} {MARKER}"),
        ]
        sync = client.post("/v1/chat/completions", json=chat(f"sync {MARKER}"))
        assert sync.status_code == 200, sync.text
        embedded = client.post("/v1/embeddings", json={"model": "mock-model", "input": MARKER})
        assert embedded.status_code == 200, embedded.text
        batch = run_batch(client, tmp_path)
        message_batch = run_message_batch(client)
        jobs = f.wait_all(job_ids)
    assert [j["status"] for j in jobs] == ["succeeded"] + ["failed"] * 4
    assert len(hook.wait_for(3, timeout=30)) == 3  # two 500s, then delivered

    # Then no error returned by the API quotes it: jobs, batch error file, message batch
    for job in jobs:
        assert MARKER not in json.dumps(job["error"]), job["error"]
    assert batch["errors"] is None or MARKER not in json.dumps(batch["errors"])
    with f.client() as client:
        error_file = client.get(f"/v1/files/{batch['error_file_id']}/content").text
        assert error_file and MARKER not in error_file
        results = client.get(f"/v1/messages/batches/{message_batch}/results").text
    errored = [json.loads(x)["result"] for x in results.splitlines() if x.strip()]
    assert sorted(r["type"] for r in errored) == ["errored", "succeeded"]
    assert all(MARKER not in json.dumps(r.get("error")) for r in errored)

    # Nor does any task field in Flower
    def our_tasks() -> dict[str, Any]:
        return flower_get(f"{marked.flower_url}/api/tasks") or {}

    marked.flower.wait_for("tasks", lambda: any(i in json.dumps(our_tasks()) for i in job_ids))
    tasks = our_tasks()
    fields = ("args", "kwargs", "result", "exception", "traceback")
    assert all(MARKER not in str(t.get(k)) for t in tasks.values() for k in fields)
    assert MARKER not in json.dumps(tasks)

    # Nor any metric label, of the API or the worker
    for url in (f"{f.api_url}/metrics", marked.worker_metrics):
        exposition = httpx.get(url, timeout=10).text
        assert "llmfleet_" in exposition and MARKER not in exposition

    # Nor any line the worker, beat or the API wrote
    time.sleep(1)  # the last lines of the webhook and post-call tasks
    for name in ("w0", "beat", "api", "flower"):
        output = (marked.log_dir / f"{name}.log").read_text(errors="replace")
        assert output and MARKER not in output, name
    assert "Traceback" not in (marked.log_dir / "w0.log").read_text()


def run_batch(client: httpx.Client, tmp_path: Path) -> dict[str, Any]:
    """A batch of two lines (one the provider refuses) whose contents and custom ids
    carry the marker; the custom id of the failing line does not (the error file is
    the owner's, and gives each line's custom id back by design)."""
    lines = [
        {"custom_id": f"ok-{MARKER}", "body": chat(f"batch {MARKER}")},
        {"custom_id": "refused", "body": chat(f"[mock:status=400] batch {MARKER}")},
    ]
    path = tmp_path / "batch.jsonl"
    path.write_text(
        "".join(
            json.dumps({**line, "method": "POST", "url": "/v1/chat/completions"}) + "\n"
            for line in lines
        )
    )
    with path.open("rb") as handle:
        uploaded = client.post(
            "/v1/files", files={"file": ("in.jsonl", handle)}, data={"purpose": "batch"}
        )
    assert uploaded.status_code == 200, uploaded.text
    created = client.post(
        "/v1/batches",
        json={
            "input_file_id": uploaded.json()["id"],
            "endpoint": "/v1/chat/completions",
            "completion_window": "24h",
            "metadata": {"note": MARKER},
        },
    )
    assert created.status_code == 200, created.text
    batch = wait_until(lambda: client.get(f"/v1/batches/{created.json()['id']}").json())
    assert batch["status"] == "completed", batch
    assert batch["request_counts"] == {"total": 2, "completed": 1, "failed": 1}
    return batch


def run_message_batch(client: httpx.Client) -> str:
    params = [
        {"model": "mock-model", "max_tokens": 5, "messages": [{"role": "user", "content": c}]}
        for c in (f"anthropic {MARKER}", f"[mock:status=400] anthropic {MARKER}")
    ]
    requests = [{"custom_id": f"m{i}", "params": p} for i, p in enumerate(params)]
    created = client.post("/v1/messages/batches", json={"requests": requests})
    assert created.status_code == 200, created.text
    batch_id = str(created.json()["id"])
    ended = wait_until(
        lambda: client.get(f"/v1/messages/batches/{batch_id}").json(), key="processing_status"
    )
    assert ended["processing_status"] == "ended", ended
    return batch_id


def wait_until(
    read: Callable[[], dict[str, Any]], key: str = "status", timeout: float = 90
) -> dict[str, Any]:
    until = time.monotonic() + timeout
    state = read()
    while state.get(key) not in TERMINAL and time.monotonic() < until:
        time.sleep(0.3)
        state = read()
    return state


def json_lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip().startswith("{")]


def test_a_task_that_raises_leaves_only_its_class_and_ids(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """In-process, what Celery gets from any task of the app: the exception it records
    (repr, traceback, chain) names the class and the ids, never what the original held."""

    @app.task(name="tests.marker.raises", bind=True)
    def raises(self: Any, job_id: str) -> None:
        body = json.dumps(chat(f"{MARKER} \ud800"), ensure_ascii=False)
        body.encode()  # UnicodeEncodeError, whose repr is the whole body

    with pytest.raises(TaskCrashed) as raised:
        raises("job_0123456789abcdef")
    crash = raised.value
    assert str(crash) == "UnicodeEncodeError in tests.marker.raises (job_0123456789abcdef)"
    assert crash.__cause__ is None and crash.__context__ is None
    recorded = "".join(traceback.format_exception(crash)) + repr(crash) + caplog.text
    assert "UnicodeEncodeError" in caplog.text and MARKER not in recorded
    # and only ids are quoted of its arguments
    with pytest.raises(TaskCrashed, match=r"\(job_0123456789abcdef, \?\)"):
        raises("job_0123456789abcdef", MARKER)  # type: ignore[call-arg]
