"""An answer in hand is stored, never asked for again: the database or Redis going
away just after the provider answered costs a wait, not a second provider call.

In-process (tests/support/core.py), with the outage made for real: the database is
reached through a proxy that cuts every connection and refuses new ones for a while,
and Redis is a server of the test's own that is stopped and started again.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx2 as httpx
import pytest
from sqlalchemy import Engine
from sqlalchemy.engine import make_url

from models.db import make_engine
from models.tables import JobStatus
from tests.conftest import migrated_database
from tests.support.core import core_factory, deployment, ok
from tests.support.servers import PrivateRedis, TcpProxy

TWO = [deployment("main", "a"), deployment("main", "b")]


@pytest.fixture(scope="module")
def database() -> Iterator[tuple[str, Engine]]:
    with migrated_database("llmfleet_test_answers_kept") as db:
        yield db


def test_a_database_outage_after_the_answer_is_waited_out(
    database: tuple[str, Engine], tmp_path: Path
) -> None:
    # Given a worker that reaches its database through a proxy
    url, _ = database
    parsed = make_url(url)
    proxy = TcpProxy(parsed.port or 5432)
    proxied_url = parsed.set(port=proxy.port).render_as_string(hide_password=False)
    engine = make_engine(proxied_url)
    cuts: list[threading.Thread] = []

    def answer_then_cut(request: httpx.Request) -> httpx.Response:
        # When the database goes away for 2 s just as the provider answers
        cut = threading.Thread(target=proxy.cut, args=(2.0,))
        cut.start()
        cuts.append(cut)
        time.sleep(0.1)
        return ok(request)

    try:
        with (
            PrivateRedis.running(tmp_path) as server,
            core_factory(proxied_url, engine, server.client()) as make,
        ):
            core = make({"a": [answer_then_cut], "b": [answer_then_cut]}, TWO)
            started = time.monotonic()
            job = core.run()
    finally:
        for cut in cuts:
            cut.join()
        engine.dispose()
        proxy.close()
    # Then the answer is stored once the database is back, and the provider was asked once
    assert job.status == JobStatus.SUCCEEDED, job.error
    assert sum(core.provider.calls.values()) == 1
    assert time.monotonic() - started >= 2
    assert len(core.attempts(job.id)) == 1


def test_a_redis_restart_after_the_answer_costs_no_second_call(
    database: tuple[str, Engine], tmp_path: Path
) -> None:
    url, engine = database
    with (
        PrivateRedis.running(tmp_path) as server,
        core_factory(url, engine, server.client()) as make,
    ):
        restarted: list[threading.Thread] = []

        def answer_then_restart(request: httpx.Request) -> httpx.Response:
            # When Redis (router state, limits, wake-ups) restarts as the provider answers
            server.stop()
            thread = threading.Thread(target=lambda: (time.sleep(1.5), server.start()))
            thread.start()
            restarted.append(thread)
            return ok(request)

        core = make({"a": [answer_then_restart], "b": [answer_then_restart]}, TWO)
        job = core.run()
        for thread in restarted:
            thread.join()
    # Then the job succeeds with the one answer it got
    assert job.status == JobStatus.SUCCEEDED, job.error
    assert sum(core.provider.calls.values()) == 1
