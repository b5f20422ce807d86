"""Faults injected for real in the middle of a batch: a worker killed with SIGKILL,
Redis flushed, redis-server restarted, a worker cut off from Redis for 30 s, PostgreSQL
restarted. Each time every job still ends `succeeded`, with one output line and one
spend row: nothing lost, nothing billed twice.

Recovery is quick here because the fleet is set to recover quickly: leases of 6 s
(LLMFLEET_LEASE_SECONDS) and a visibility timeout of 20 s (LLMFLEET_VISIBILITY_TIMEOUT);
the sweeper runs every 30 s as in production."""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, text

from models import migrate
from models.db import make_engine
from tests.conftest import migrated_database
from tests.support.batches import lines, submit, wait_ended
from tests.support.fleet import MiniFleet, deployment, mini_fleet
from tests.support.servers import PrivatePostgres, PrivateRedis, TcpProxy

QUICK_RECOVERY = {"LLMFLEET_LEASE_SECONDS": "6", "LLMFLEET_VISIBILITY_TIMEOUT": "20"}
#: Room for recovery (a lease, a visibility timeout, a sweep) on a busy two-core machine.
BATCH_TIMEOUT = 420


def config(urls: dict[str, str]) -> dict[str, Any]:
    return {"model_list": [deployment("mock", urls["mock"])]}


@pytest.fixture(scope="module")
def database() -> Iterator[tuple[str, Engine]]:
    with migrated_database("llmfleet_test_faults") as (url, engine):
        yield url, engine


@contextlib.contextmanager
def fleet(
    tmp_path: Path,
    database: tuple[str, Engine],
    *,
    latency: str = "0.05",
    redis_base: str | None = None,
    **kwargs: Any,
) -> Iterator[MiniFleet]:
    url, engine = database
    extra = {"redis_base": redis_base} if redis_base else {}
    with mini_fleet(
        tmp_path,
        url,
        engine,
        config,
        {"mock": ["--latency", latency]},
        extra_env={**QUICK_RECOVERY, **kwargs.pop("extra_env", {})},
        **extra,
        **kwargs,
    ) as f:
        yield f


def succeeded(engine: Engine) -> int:
    with engine.connect() as conn:
        query = text("SELECT count(*) FROM jobs WHERE status = 'succeeded'")
        return int(conn.execute(query).scalar_one())


def wait_for_progress(engine: Engine, at_least: int, timeout: float = 180) -> int:
    """Wait until `at_least` jobs succeeded, so that the fault lands mid-batch."""
    until = time.monotonic() + timeout
    while (done := succeeded(engine)) < at_least:
        assert time.monotonic() < until, f"only {done} jobs succeeded"
        time.sleep(0.05)
    return done


def assert_batch_complete(f: MiniFleet, engine: Engine, batch_id: str, n: int) -> None:
    """Every line succeeded once: one output line per custom_id, no error file, and
    exactly one spend row per job."""
    batch = wait_ended(f, batch_id, timeout=BATCH_TIMEOUT)
    assert batch.status == "completed", (batch.status, batch.request_counts)
    assert batch.request_counts is not None
    assert (batch.request_counts.completed, batch.request_counts.failed) == (n, 0)
    output = lines(f, batch.output_file_id)
    assert len(output) == n
    assert len({line["custom_id"] for line in output}) == n
    assert all(line["response"]["status_code"] == 200 for line in output)
    assert lines(f, batch.error_file_id) == []
    with engine.connect() as conn:
        statuses = dict(
            conn.execute(text("SELECT status, count(*) FROM jobs GROUP BY status")).all()
        )
        rows, jobs_billed = conn.execute(
            text("SELECT count(*), count(DISTINCT job_id) FROM spend")
        ).one()
    assert statuses == {"succeeded": n}
    assert (rows, jobs_billed) == (n, n)


def test_worker_killed_mid_batch_loses_nothing(
    tmp_path: Path, database: tuple[str, Engine]
) -> None:
    # Given a 2,000-line batch running on one worker
    n = 2000
    _, engine = database
    with fleet(tmp_path, database, latency="0.1") as f:
        batch_id = submit(f, tmp_path, n, "kill")
        done = wait_for_progress(engine, 300)
        # When the worker is killed with SIGKILL (its whole process group) mid-run
        victim = f.workers[0]
        os.killpg(victim.popen.pid, signal.SIGKILL)
        victim.popen.wait()
        # and a new one starts in its place
        f.start_worker("w-restarted")
        # Then the batch completes: every line once, every job billed once
        assert_batch_complete(f, engine, batch_id, n)
        assert done < n
        assert f.stats("mock")["calls"] >= n  # calls cut by the kill were made again


def flush(server: PrivateRedis) -> None:
    with server.client() as client:
        client.flushall()


def restart(server: PrivateRedis) -> None:
    server.stop()
    time.sleep(2)
    server.start()


@pytest.mark.parametrize("lose", [flush, restart], ids=["flushall", "restart"])
def test_redis_losing_its_data_mid_batch_loses_nothing(
    tmp_path: Path, database: tuple[str, Engine], lose: Callable[[PrivateRedis], None]
) -> None:
    # Given a batch running on a fleet whose Redis (router state and broker) is its own,
    # with nothing on disk
    # (slow enough that most lines still wait in the broker when it loses them)
    n = 600
    _, engine = database
    with (
        PrivateRedis.running(tmp_path) as server,
        fleet(tmp_path, database, latency="0.2", concurrency=10, redis_base=server.url) as f,
    ):
        batch_id = submit(f, tmp_path, n, lose.__name__)
        wait_for_progress(engine, 100)
        # When Redis loses everything (queued messages, delayed jobs, router state):
        # FLUSHALL, or a restart that also cuts every connection
        lose(server)
        # Then the jobs whose messages were lost are published again from the database,
        # every process reconnects, and the batch completes
        assert_batch_complete(f, engine, batch_id, n)
        assert "re-published" in "".join(p.output() for p in f.workers)
        assert f.wait(f.submit("afterwards"))["status"] == "succeeded"


def test_worker_cut_off_from_redis_for_30s_resumes(
    tmp_path: Path, database: tuple[str, Engine]
) -> None:
    # Given a worker that reaches Redis (its broker and router state) through a proxy
    n = 600
    _, engine = database
    with PrivateRedis.running(tmp_path) as server:
        proxy = TcpProxy(server.port)
        via_proxy = {
            "REDIS_URL": f"redis://127.0.0.1:{proxy.port}/10",
            "BROKER_URL": f"redis://127.0.0.1:{proxy.port}/11",
        }
        try:
            with fleet(tmp_path, database, redis_base=server.url, worker_env=via_proxy) as f:
                batch_id = submit(f, tmp_path, n, "cut")
                done = wait_for_progress(engine, 100)
                # When the worker loses Redis for 30 s (connections cut, new ones refused)
                proxy.cut(30)
                # Then it resumes consuming by itself and the batch completes
                assert_batch_complete(f, engine, batch_id, n)
                assert done < n
                assert all(w.popen.poll() is None for w in f.workers)
        finally:
            proxy.close()


def test_postgres_restart_mid_batch_loses_nothing(tmp_path: Path) -> None:
    # Given a fleet on a PostgreSQL cluster of its own
    n = 600
    with PrivatePostgres.running() as cluster:
        url = cluster.url("postgres")
        migrate.upgrade(url)
        engine = make_engine(url)
        try:
            with fleet(tmp_path, (url, engine), latency="0.1") as f:
                batch_id = submit(f, tmp_path, n, "pg")
                wait_for_progress(engine, 100)
                # When PostgreSQL restarts: every connection cut, open transactions lost
                cluster.restart()
                # Then workers, beat and API reconnect and the batch completes
                assert_batch_complete(f, engine, batch_id, n)
                assert f.wait(f.submit("after the restart"))["status"] == "succeeded"
        finally:
            engine.dispose()
