"""A worker whose calls run on its event loop (LLMFLEET_WORKER_LOOP=1), end to end: real
worker, beat and API processes, jobs and a batch over HTTP, calls at the mock. The
semantics of a run on the loop are tested in-process with every `core` test (they run
with calls on threads and on the loop)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest
from sqlalchemy import Engine

from tests.conftest import MASTER_KEY, migrated_database
from tests.support.batches import lines, submit, wait_ended
from tests.support.fleet import deployment
from tests.workers.conftest import Fleet

LOOP = {"LLMFLEET_WORKER_LOOP": "1"}


@pytest.fixture(scope="module")
def database() -> Iterator[tuple[str, Engine]]:
    with migrated_database("llmfleet_test_worker_loop") as (url, engine):
        yield url, engine


def config(urls: dict[str, str]) -> dict[str, Any]:
    return {
        "model_list": [deployment("mock", urls["mock"])],
        "router_settings": {"num_retries": 1},
    }


def test_jobs_a_batch_and_a_sync_call_run_on_the_loop(own_fleet: Fleet, tmp_path: Path) -> None:
    # Given one worker at -c 20 whose calls run on its event loop
    with own_fleet(config, {"mock": ["--latency", "0.3"]}, extra_env=LOOP, concurrency=20) as f:
        # When a batch of 100 lines, ten jobs and a sync call arrive together
        batch_id = submit(f, tmp_path, 100, "loop")
        ids = f.submit_many([f"job {i}" for i in range(10)])
        refused, broken = f.submit("[mock:status=401]"), f.submit("[mock:status=500]")
        client = openai.OpenAI(base_url=f"{f.api_url}/v1", api_key=MASTER_KEY)
        reply = client.chat.completions.create(
            model="mock-model", messages=[{"role": "user", "content": "sync"}]
        )
        jobs = f.wait_all(ids)
        failed = f.wait_all([refused, broken])
        batch = wait_ended(f, batch_id, timeout=120)
        output = lines(f, batch.output_file_id)
        peak = f.stats("mock")["max_in_flight"]
        worker_log = f.workers[0].output()
    # Then every one ends as on threads, and the lines' calls overlapped on the loop
    assert "provider calls run on the event loop" in worker_log
    assert reply.choices[0].message.content
    assert [j["status"] for j in jobs] == ["succeeded"] * 10
    assert [(j["status"], j["error"]["type"]) for j in failed] == [
        ("failed", "authentication_error"),
        ("failed", "api_error"),
    ]
    assert batch.status == "completed"
    assert batch.request_counts is not None and batch.request_counts.completed == 100
    assert len({line["custom_id"] for line in output}) == 100
    assert peak >= 10, peak
