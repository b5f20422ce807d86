"""Streams through faults, on real processes: a worker killed mid-stream. What the
client sees is an error and a failed response, never a second generation mixed into
the first (docs/STREAMING.md)."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from typing import Any

import openai
import pytest
from sqlalchemy import Engine, text

from tests.conftest import MASTER_KEY, migrated_database
from tests.support.fleet import deployment
from tests.workers.conftest import Fleet


@pytest.fixture(scope="module")
def database() -> Iterator[tuple[str, Engine]]:
    with migrated_database("llmfleet_test_stream_faults") as (url, engine):
        yield url, engine


def config(urls: dict[str, str]) -> dict[str, Any]:
    return {"model_list": [deployment("mock", urls["mock"])], "router_settings": {"num_retries": 1}}


def test_a_worker_killed_mid_stream_fails_the_response_and_bills_what_was_sent(
    own_fleet: Fleet,
) -> None:
    env = {"LLMFLEET_LEASE_SECONDS": "4"}
    with own_fleet(config, {"mock": []}, extra_env=env) as f:
        client = openai.OpenAI(base_url=f"{f.api_url}/v1", api_key=MASTER_KEY, max_retries=0)
        # Given: a background response streaming 200 pieces, 0.1 s apart
        stream = client.responses.create(
            model="mock-model",
            input="go [mock:chunks=200] [mock:interval=0.1]",
            background=True,
            stream=True,
        )
        events = iter(stream)
        seen = [next(events) for _ in range(10)]
        # When: its worker is killed with SIGKILL, and another one starts
        victim = f.workers[0]
        os.killpg(victim.popen.pid, signal.SIGKILL)
        victim.popen.wait()
        killed = time.monotonic()
        f.start_worker("w-after")
        rest = list(events)  # the same connection, on the same API process
        took = time.monotonic() - killed
        response_id = seen[0].response.id  # type: ignore[union-attr]
        stored = client.responses.retrieve(response_id)
        calls = f.stats("mock")["calls"]
        with f.engine.connect() as conn:
            job_id = "job_" + response_id.removeprefix("resp_")
            billed = conn.execute(
                text("SELECT completion_tokens FROM spend WHERE job_id = :id"), {"id": job_id}
            ).scalar_one()

    # Then: the stream ends with the response failed, saying why, within about a lease
    sent = [e for e in seen + rest if e.type == "response.output_text.delta"]
    assert rest[-1].type == "response.failed"
    assert "lost midway" in rest[-1].response.error.message  # type: ignore[union-attr]
    assert stored.status == "failed"
    assert took < 4 + 30, took
    # ... nothing was generated twice, and every piece the client got is billed once
    assert calls == 1
    assert billed >= len(sent) > 0
