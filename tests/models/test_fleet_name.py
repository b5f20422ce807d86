"""A fleet's name: LLMFLEET_NAME, else derived from the database it uses."""

from __future__ import annotations

from pathlib import Path

import pytest

from models import fleet_name


def test_the_name_is_the_databases_not_its_credentials(tmp_path: Path) -> None:
    pg = fleet_name.derive("postgresql://app:secret@DB.internal:5432/llmfleet")
    assert pg == fleet_name.derive("postgresql+psycopg://other:pw@db.internal:5432/llmfleet")
    assert pg != fleet_name.derive("postgresql://app:secret@db.internal:5432/staging")
    assert pg.startswith("fleet-") and len(pg) == len("fleet-") + 8
    one, two = tmp_path / "a" / "llmfleet.db", tmp_path / "b" / "llmfleet.db"
    assert fleet_name.derive(f"sqlite:///{one}") != fleet_name.derive(f"sqlite:///{two}")


def test_llmfleet_name_wins_and_is_checked() -> None:
    env = {"LLMFLEET_NAME": "prod-eu", "DATABASE_URL": "postgresql://h/db"}
    assert fleet_name.current(env) == "prod-eu"
    assert fleet_name.current({"DATABASE_URL": "postgresql://h/db"}) == fleet_name.derive(
        "postgresql://h/db"
    )
    with pytest.raises(ValueError, match="LLMFLEET_NAME"):
        fleet_name.current({"LLMFLEET_NAME": "has space"})
