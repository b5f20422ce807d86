"""Migrations upgrade and downgrade on PostgreSQL and SQLite."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import inspect

from models import migrate
from models.db import make_engine
from models.tables import Base
from tests.conftest import recreate_database


def _tables(url: str) -> set[str]:
    engine = make_engine(url)
    try:
        return set(inspect(engine).get_table_names())
    finally:
        engine.dispose()


def _columns(url: str, table: str) -> set[str]:
    engine = make_engine(url)
    try:
        return {c["name"] for c in inspect(engine).get_columns(table)}
    finally:
        engine.dispose()


@pytest.fixture(params=["postgresql", "sqlite"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'fleet.db'}"
    return recreate_database("llmfleet_migrations_test")


def test_upgrade_then_downgrade_then_upgrade(database_url: str) -> None:
    migrate.upgrade(database_url)
    assert {"jobs", "alembic_version"} <= _tables(database_url)
    # The migrations create what the models describe.
    for table in ("jobs", "api_keys", "teams", "customers", "responses"):
        described = {c.name for c in Base.metadata.tables[table].columns}
        assert _columns(database_url, table) == described, table

    migrate.downgrade(database_url)
    assert "jobs" not in _tables(database_url)

    migrate.upgrade(database_url)
    assert "jobs" in _tables(database_url)
