"""A PostgreSQL cluster of the benchmark's own, on a free port, removed afterwards.

Why not the server at 127.0.0.1:5432: its `max_connections` is 100 and other test runs
on a shared machine may hold many of them, so a fleet sized for 1,000 calls in flight
(each worker's pool grows to 2 x LLMFLEET_WORKER_DB_POOL) starves them and itself
("sorry, too many clients already"); and with a cluster of its own every postgres
process is the fleet's, so its CPU is measured exactly. Same binaries and the same
(default) settings as that server, but for max_connections.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import psutil
import psycopg

from tests.support.servers import PrivatePostgres

__all__ = ["private_postgres", "recreate_database"]


@contextlib.contextmanager
def private_postgres(
    max_connections: int = 300, settings: dict[str, str] | None = None
) -> Iterator[tuple[str, psutil.Process]]:
    """Yields (admin URL, postmaster); the postmaster's children are the cluster.
    `settings` adds server options (e.g. shared_preload_libraries for a diagnosis)."""
    with PrivatePostgres.running(max_connections, settings) as cluster:
        yield cluster.admin_url, psutil.Process(cluster.postmaster_pid)


def recreate_database(admin_url: str, name: str) -> str:
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')
    return admin_url.rsplit("/", 1)[0] + f"/{name}"
