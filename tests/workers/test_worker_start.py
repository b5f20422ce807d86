"""What a worker decides as it starts: the Celery pool it runs on, and the consumer's
prefetch (a lane's worth of batch messages)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from models.fleet_config import ConfigError
from workers.admission import Slots
from workers.celery_app import _check_pool
from workers.lane_gate import LaneGate


def started_with(module: str) -> SimpleNamespace:
    """A worker (Celery's WorkController) whose pool class lives in `module`."""
    return SimpleNamespace(pool_cls=type("TaskPool", (), {"__module__": module}))


@pytest.mark.parametrize("pool", ["gevent", "prefork", "eventlet", "solo"])
def test_a_worker_on_another_pool_than_threads_refuses_to_start(pool: str) -> None:
    with pytest.raises(ConfigError, match=rf"threads pool \(-P threads\), not {pool}"):
        _check_pool(started_with(f"celery.concurrency.{pool}"))


def test_a_worker_on_the_threads_pool_starts() -> None:
    _check_pool(started_with("celery.concurrency.thread"))


@pytest.mark.parametrize(
    ("concurrency", "lines_per_message", "prefetch"),
    [(1000, 20, 50), (20, 5, 4), (8, 2, 4), (4, 1, 4), (2, 2, 2)],
)
def test_the_prefetch_is_a_lanes_worth_of_batch_messages(
    concurrency: int, lines_per_message: int, prefetch: int
) -> None:
    assert LaneGate(Slots(concurrency), lines_per_message).prefetch == prefetch
