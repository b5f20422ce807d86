"""A worker's event loop, lanes, gate and writer end to end: real worker, beat and API
processes, jobs and a batch over HTTP, calls at the mock. The semantics of a run on the
loop are tested in-process with every `core` test (tests/support/core.py)."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest
from sqlalchemy import Engine, select, text

from models.tables import Job
from tests.conftest import MASTER_KEY, migrated_database
from tests.support.batches import lines, sdk, submit, wait_ended
from tests.support.fleet import MiniFleet, deployment
from tests.workers.conftest import Fleet


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
    with own_fleet(config, {"mock": ["--latency", "0.3"]}, concurrency=20) as f:
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
    # Then every one ends, and the lines' calls overlapped on the loop
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


def test_interactive_jobs_have_room_beside_a_worker_full_of_batch_lines(
    own_fleet: Fleet, tmp_path: Path
) -> None:
    # Given one worker at -c 8 on the loop, its general lane full of a batch's lines
    # (160 lines at 1 s a call: 20 rounds of 8)
    with own_fleet(config, {"mock": ["--latency", "1"]}, concurrency=8) as f:
        batch_id = submit(f, tmp_path, 160, "lanes")
        until = time.monotonic() + 60
        while f.stats("mock")["in_flight"] < 8:
            assert time.monotonic() < until, f.stats("mock")
            time.sleep(0.05)
        # When eight interactive jobs arrive
        ids = f.submit_many([f"urgent {i}" for i in range(8)], priority=9)
        jobs = f.wait_all(ids)
        batch = sdk(f).batches.retrieve(batch_id)
        peak = f.stats("mock")["max_in_flight"]
        ended = wait_ended(f, batch_id, timeout=180)
    # Then they ran beside the lines, not after them: the batch was still running when
    # they had ended, and the calls in flight went past the general lane's eight
    assert [j["status"] for j in jobs] == ["succeeded"] * 8
    assert batch.status == "in_progress"
    assert batch.request_counts is not None and batch.request_counts.completed < 120
    assert peak > 8, peak
    # and the lines never took more than the lane: at most 8 + 8 calls at once
    assert peak <= 16, peak
    assert ended.status == "completed"


def test_a_worker_stopped_with_sigterm_stores_the_runs_on_its_loop(own_fleet: Fleet) -> None:
    # Given one worker on the loop with eight jobs' calls in flight (2 s each); their
    # messages were acknowledged when the jobs were claimed
    with own_fleet(config, {"mock": ["--latency", "2"]}, concurrency=8) as f:
        ids = f.submit_many([f"job {i}" for i in range(8)])
        until = time.monotonic() + 60
        while f.stats("mock")["in_flight"] < 8:
            assert time.monotonic() < until, f.stats("mock")
            time.sleep(0.05)
        # When it is stopped with SIGTERM (a warm shutdown) and no other worker runs
        code = f.workers[0].stop(signal.SIGTERM, timeout=60)
        jobs = [f.wait(i, timeout=5) for i in ids]
        calls = f.stats("mock")["calls"]
    # Then it let the calls end and stored them before it exited: nothing is left for
    # a lease to lapse on
    assert code == 0
    assert [j["status"] for j in jobs] == ["succeeded"] * 8
    assert calls == 8


def test_a_worker_full_of_lines_takes_no_batch_message_it_cannot_start(
    own_fleet: Fleet, tmp_path: Path
) -> None:
    # Given one worker at -c 8 on the loop (2 lines to a message), its general lane full
    # of a batch's lines at 3 s a call
    with own_fleet(config, {"mock": ["--latency", "3"]}, concurrency=8) as f:
        submit(f, tmp_path, 200, "gate")
        until = time.monotonic() + 60
        while f.stats("mock")["in_flight"] < 8:
            assert time.monotonic() < until, f.stats("mock")
            time.sleep(0.05)
        # When interactive jobs arrive one by one
        ids = []
        for i in range(6):
            ids.append(f.submit(f"urgent {i}", priority=9))
            time.sleep(0.4)
        jobs = f.wait_all(ids)
        with f.engine.connect() as conn:
            rows = conn.execute(select(Job.created_at, Job.started_at).where(Job.id.in_(ids))).all()
    # Then each was taken at once: the consumer had left the batch queue, so no batch
    # message waiting for room held the slots an interactive message needs (without
    # that, a pickup waits for a wave of lines to end: up to 3 s)
    assert [j["status"] for j in jobs] == ["succeeded"] * 6
    pickups = sorted((started - created).total_seconds() for created, started in rows)
    assert pickups[-1] < 1.0, pickups


def test_a_worker_killed_mid_batch_delays_it_by_a_lease_not_the_visibility_timeout(
    own_fleet: Fleet, tmp_path: Path
) -> None:
    # Given two workers at -c 20 running a 1,500-line batch (0.1 s a call), with leases
    # of 6 s and Redis' default visibility timeout of 600 s: the lines the one about to
    # die has claimed, and any message of lines it has taken but not claimed from yet
    n, lease = 1500, 6.0
    env = {"LLMFLEET_LEASE_SECONDS": str(lease), "LLMFLEET_VISIBILITY_TIMEOUT": "600"}
    mocks = {"mock": ["--latency", "0.1"]}
    with own_fleet(config, mocks, extra_env=env, workers=2, concurrency=20) as f:
        batch_id = submit(f, tmp_path, n, "kill")
        until = time.monotonic() + 120
        while _succeeded(f) < 300:
            assert time.monotonic() < until, _succeeded(f)
            time.sleep(0.05)
        # When one of them is killed with SIGKILL (its whole process group)
        victim = f.workers[0]
        os.killpg(victim.popen.pid, signal.SIGKILL)
        victim.popen.wait()
        killed = time.monotonic()
        left = n - _succeeded(f)
        batch = wait_ended(f, batch_id, timeout=900)
        took = time.monotonic() - killed
        output = lines(f, batch.output_file_id)
        calls = f.stats("mock")["calls"]
        with f.engine.connect() as conn:
            billed = conn.execute(text("SELECT count(*), count(DISTINCT job_id) FROM spend")).one()
    # Then the survivor finishes the batch, the dead worker's lines within about a lease:
    # its remaining lines' calls (0.1 s, 20 at a time) take about `left / 200` s on an
    # idle machine; the bound allows 5x that, a lease and a tick of the dispatcher
    assert batch.status == "completed", (batch.status, batch.request_counts)
    assert len({line["custom_id"] for line in output}) == n
    assert tuple(billed) == (n, n)
    assert calls >= n  # calls cut short by the kill were made again
    assert took < 5 * left / 200 + lease + 20, (took, left)


def _succeeded(f: MiniFleet) -> int:
    with f.engine.connect() as conn:
        return int(
            conn.execute(text("SELECT count(*) FROM jobs WHERE status = 'succeeded'")).scalar_one()
        )
