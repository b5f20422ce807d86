"""Fixtures shared by the worker tests that start fleets of their own."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine

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
