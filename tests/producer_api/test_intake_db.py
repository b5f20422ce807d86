"""A database connection lost at intake: the write is tried once more on a fresh
connection; a database that stays away answers 503 with Retry-After, never 500, and
nothing is counted against the key."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session

from models.db import make_engine, make_sessionmaker
from producer_api import transactions
from tests.conftest import MASTER_KEY, Fleet
from tests.support.processes import Proc, start_api
from tests.support.servers import TcpProxy
from tests.support.tenancy import make_key

MASTER = {"Authorization": f"Bearer {MASTER_KEY}"}
BODY = {"model": "mock-model", "messages": [{"role": "user", "content": "hi"}]}


def test_a_write_whose_connection_is_killed_is_done_once_on_a_fresh_one(
    clean_fleet: Fleet,
) -> None:
    engine = make_engine(str(clean_fleet.engine.url.render_as_string(hide_password=False)))
    sessions = make_sessionmaker(engine)
    tries: list[bool] = []

    def work(session: Session, retried: bool) -> int:
        tries.append(retried)
        pid = session.execute(text("SELECT pg_backend_pid()")).scalar_one()
        if not retried:
            # The connection dies mid-transaction, after its checkout was pinged.
            with clean_fleet.engine.begin() as other:
                other.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
        session.execute(
            text(
                "INSERT INTO teams (id, name, created_at, updated_at) "
                "VALUES ('team_retry', 'retry', now(), now())"
            )
        )
        return int(pid)

    try:
        transactions.write(sessions, work)
    finally:
        engine.dispose()
    assert tries == [False, True]
    with clean_fleet.engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM teams")).scalar_one() == 1


@pytest.fixture
def api_via_proxy(clean_fleet: Fleet, tmp_path: Path) -> Iterator[tuple[str, TcpProxy]]:
    """An API process of its own whose database is reached through a proxy."""
    url = make_url(clean_fleet.env["DATABASE_URL"])
    proxy = TcpProxy(url.port or 5432)
    env = {
        **clean_fleet.env,
        "DATABASE_URL": url.set(port=proxy.port).render_as_string(hide_password=False),
    }
    api: Proc | None = None
    try:
        api, api_url = start_api(env, tmp_path, "api-proxied")
        yield api_url, proxy
    finally:
        if api is not None:
            api.stop()
        proxy.close()


def test_an_unreachable_database_answers_503_and_counts_nothing(
    clean_fleet: Fleet, api_via_proxy: tuple[str, TcpProxy]
) -> None:
    api_url, proxy = api_via_proxy
    key = make_key(clean_fleet.api_url, rpm=1)
    with httpx.Client(base_url=api_url, timeout=60) as client:
        auth = {"Authorization": f"Bearer {key.key}"}
        # Given the API's connections are open (a read pools them)
        assert client.get("/v1/jobs", headers=auth).status_code == 200
        # When the database cannot be reached for a while
        cut = threading.Thread(target=proxy.cut, args=(6,))
        cut.start()
        try:
            response = client.post("/v1/jobs", json=BODY, headers=auth)
            master = client.post("/v1/jobs", json=BODY, headers=MASTER)
        finally:
            cut.join()
        # Then the answer is 503 with Retry-After, and the key's one job a minute is
        # still there once the database is back
        assert response.status_code == 503, response.text
        assert int(response.headers["retry-after"]) >= 1
        assert response.json()["error"]["code"] == "database_unavailable"
        assert master.status_code == 503, master.text
        accepted = client.post("/v1/jobs", json=BODY, headers=auth)
        assert accepted.status_code == 202, accepted.text
