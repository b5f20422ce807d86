"""Fixtures shared by the worker tests that start fleets of their own."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from sqlalchemy import Engine

from tests.support.brokers import REDIS_BASE
from tests.support.core import STATE_DB, CoreFactory, core_factory
from tests.support.fleet import mini_fleet

#: `own_fleet(config, mocks, **mini_fleet options)` starts a fleet on the module's database.
Fleet = Callable[..., Any]


@pytest.fixture
def own_fleet(database: tuple[str, Engine], tmp_path: Path) -> Fleet:
    """A fleet of the test's own (not the session's `fleet`). Needs a module-scoped
    `database` fixture: (URL, engine) of a migrated database."""
    url, engine = database

    def start(config: Any, mocks: dict[str, list[str]], **kwargs: Any) -> Any:
        return mini_fleet(tmp_path, url, engine, config, mocks, **kwargs)

    return start


@pytest.fixture
def core(database: tuple[str, Engine]) -> Iterator[CoreFactory]:
    """The execution core in this process (tests/support/core.py), on the module's
    `database` and a Redis db of its own, flushed per test."""
    state = redis.Redis.from_url(f"{REDIS_BASE}/{STATE_DB}")
    state.flushdb()
    url, engine = database
    try:
        with core_factory(url, engine, state) as make:
            yield make
    finally:
        state.flushdb()
        state.close()
