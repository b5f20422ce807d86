"""Batch lines several to a message, through a real worker: the worker reserves about
as many lines as its `-c`, not `-c` messages, and runs them all."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, text

from models.contract import EXECUTE_LINES_TASK
from tests.conftest import migrated_database
from tests.support.batches import ENDED, lines, sdk, submit, wait_ended
from tests.support.fleet import MiniFleet, deployment, mini_fleet
from workers.admission import lines_per_message


@pytest.fixture(scope="module")
def database() -> Iterator[tuple[str, Engine]]:
    with migrated_database("llmfleet_test_execute_lines") as (url, engine):
        yield url, engine


def held_lines(f: MiniFleet) -> list[int]:
    """The size of each execute_lines message the worker holds, running or reserved."""
    assert f.broker is not None
    inspect = f.broker.celery.control.inspect(timeout=2)
    sizes = []
    for replies in (inspect.active(), inspect.reserved()):
        for tasks in (replies or {}).values():
            sizes += [len(t["args"][0]) for t in tasks if t["name"] == EXECUTE_LINES_TASK]
    return sizes


def test_a_worker_reserves_about_its_concurrency_in_lines(
    database: tuple[str, Engine], tmp_path: Path
) -> None:
    url, engine = database

    def config(urls: dict[str, str]) -> dict[str, Any]:
        return {"model_list": [deployment("mock", urls["mock"])]}

    env = {"LLMFLEET_BATCH_LINES_PER_MESSAGE": "5"}
    with mini_fleet(
        tmp_path,
        url,
        engine,
        config,
        {"mock": ["--latency", "0.3"]},
        concurrency=20,
        worker_env=env,
        workers=1,
    ) as f:
        # Given a batch of 300 lines, sent 5 to a message, and one worker with -c 20
        batch_id = submit(f, tmp_path, 300, "l")
        # While it runs, the worker holds messages of 5 lines, until their lines are
        # claimed, and only while it has room for them
        held: list[list[int]] = []
        while sdk(f).batches.retrieve(batch_id).status not in ENDED:
            held.append(held_lines(f))
            time.sleep(0.1)
        batch = wait_ended(f, batch_id)
        output = lines(f, batch.output_file_id)
        in_flight = f.stats("mock")["max_in_flight"]

    # Then every line ran once and succeeded
    assert batch.status == "completed" and len(output) == 300
    assert {line["response"]["status_code"] for line in output} == {200}
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*), sum(calls) FROM jobs")).one() == (300, 300)
    # its calls never exceeded -c, and it never reserved -c messages (100 lines): the
    # count is -c minus the extra lines, with a floor of 2 messages, and the consumer
    # leaves the batch queue while the worker has no room for a message's lines
    assert in_flight <= 20
    sizes = {size for sample in held for size in sample}
    assert sizes <= {5}
    assert max(sum(sample) for sample in held) <= 30, held


def test_a_message_carries_at_most_a_quarter_of_a_workers_slots() -> None:
    assert [lines_per_message(20, c) for c in (1, 4, 8, 50, 500)] == [1, 1, 2, 12, 20]
    assert lines_per_message(1, 500) == 1
