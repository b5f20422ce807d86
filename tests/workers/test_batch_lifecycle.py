"""Batches through a small fleet: cancel mid-run, completion window ends, and fair
sharing between a huge batch and a small one."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, text

from tests.conftest import migrated_database
from tests.support.batches import lines, sdk, submit, wait_ended
from tests.support.fleet import deployment, mini_fleet


@pytest.fixture(scope="module")
def database() -> Iterator[tuple[str, Engine]]:
    with migrated_database("llmfleet_test_batches") as (url, engine):
        yield url, engine


@pytest.fixture
def fleet(database: tuple[str, Engine], tmp_path: Path) -> Callable[..., Any]:
    url, engine = database

    def config(urls: dict[str, str]) -> dict[str, Any]:
        return {"model_list": [deployment("mock", urls["mock"])]}

    def start(mock_flags: list[str], **kwargs: Any) -> Any:
        return mini_fleet(tmp_path, url, engine, config, {"mock": mock_flags}, **kwargs)

    return start


def calls_made(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(text("SELECT coalesce(sum(calls), 0) FROM jobs")).scalar_one())


def test_cancelled_batch_keeps_partial_output_and_never_sends_the_rest(
    fleet: Callable[..., Any], tmp_path: Path, database: tuple[str, Engine]
) -> None:
    with fleet(["--latency", "0.4"], concurrency=4) as f:
        batch_id = submit(f, tmp_path, 40, "c")
        client = sdk(f)
        while client.batches.retrieve(batch_id).request_counts.completed < 8:
            time.sleep(0.1)
        assert client.batches.cancel(batch_id).status in ("cancelling", "cancelled")
        batch = wait_ended(f, batch_id)
        output, errors = lines(f, batch.output_file_id), lines(f, batch.error_file_id)
        mock_calls = f.stats("mock")["calls"]
    assert batch.status == "cancelled" and batch.cancelled_at is not None
    assert len(output) >= 8 and len(output) + len(errors) == 40
    assert {e["error"]["code"] for e in errors} == {"batch_cancelled"}
    # Only lines that started reached the provider.
    assert mock_calls == calls_made(database[1]) < 40
    # Every line that was billed (it got an answer, in flight at the cancel or before)
    # has its answer in the output file.
    with database[1].connect() as conn:
        billed = {
            str(r[0])
            for r in conn.execute(
                text("SELECT custom_id FROM jobs WHERE batch_id = :b AND total_tokens > 0"),
                {"b": batch_id},
            )
        }
    assert billed and billed == {o["custom_id"] for o in output}


def test_completion_window_ends_the_batch_expired_with_partial_output(
    fleet: Callable[..., Any], tmp_path: Path
) -> None:
    with fleet(["--latency", "0.5"], concurrency=4) as f:
        batch_id = submit(f, tmp_path, 60, "e", window="4s")
        batch = wait_ended(f, batch_id, timeout=60)
        output, errors = lines(f, batch.output_file_id), lines(f, batch.error_file_id)
    assert batch.status == "expired" and batch.expired_at is not None
    assert 0 < len(output) < 60 and len(output) + len(errors) == 60
    assert {e["error"]["code"] for e in errors} == {"batch_expired"}
    assert batch.request_counts.completed == len(output)


def test_small_batch_finishes_while_a_huge_one_is_under_half_done(
    fleet: Callable[..., Any], tmp_path: Path
) -> None:
    with fleet(["--latency", "0.05"], concurrency=50) as f:
        big = submit(f, tmp_path, 20_000, "big")
        small = submit(f, tmp_path, 10, "small")
        small_batch = wait_ended(f, small, timeout=60)
        big_batch = sdk(f).batches.retrieve(big)
        sdk(f).batches.cancel(big)
        wait_ended(f, big, timeout=120)
    assert small_batch.status == "completed"
    assert small_batch.request_counts.completed == 10
    done = big_batch.request_counts.completed + big_batch.request_counts.failed
    assert done < 10_000, done


def test_interactive_job_overtakes_a_batch_backlog(
    fleet: Callable[..., Any], tmp_path: Path
) -> None:
    """On Redis the worker pops the queues in priority order; on RabbitMQ it is offered
    them in turn. Either way an interactive job waits for a slot or two, not for the
    batch lines queued before it (200 x 0.5 s / 4 slots = 25 s)."""
    with fleet(["--latency", "0.5"], concurrency=4) as f:
        # Given a batch whose lines fill the broker far beyond what the worker holds
        batch_id = submit(f, tmp_path, 200, "bulk")
        client = sdk(f)
        while client.batches.retrieve(batch_id).request_counts.completed < 4:
            time.sleep(0.1)
        # When an interactive job arrives behind them
        started = time.monotonic()
        job = f.wait(f.submit("urgent", priority=9), timeout=60)
        waited = time.monotonic() - started
        done = client.batches.retrieve(batch_id).request_counts.completed
        client.batches.cancel(batch_id)
        wait_ended(f, batch_id, timeout=30)
    # Then it ran next, while most of the batch was still waiting
    assert job["status"] == "succeeded"
    assert waited < 5, waited
    assert done < 100, done
