"""A PostgreSQL cluster of the benchmark's own, on a free port, removed afterwards.

Why not the shared server at 127.0.0.1:5432: its `max_connections` is 100 and the
other engineers' test fleets hold most of them, so a fleet sized for 1,000 calls in
flight (each worker's pool grows to 2 x LLMFLEET_WORKER_DB_POOL) starves them and
itself ("sorry, too many clients already"); and with a cluster of its own every
postgres process is the fleet's, so its CPU is measured exactly. Same binaries and
the same (default) settings as the shared server, but for max_connections.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import psutil
import psycopg

from tests.support.processes import free_port

__all__ = ["private_postgres", "recreate_database"]


def _as_postgres(argv: list[str]) -> list[str]:
    """initdb and postgres refuse to run as root."""
    return ["runuser", "-u", "postgres", "--", *argv] if os.geteuid() == 0 else argv


@contextlib.contextmanager
def private_postgres(
    max_connections: int = 300, settings: dict[str, str] | None = None
) -> Iterator[tuple[str, psutil.Process]]:
    """Yields (admin URL, postmaster); the postmaster's children are the cluster.
    `settings` adds server options (e.g. shared_preload_libraries for a diagnosis)."""
    bindir = sorted(Path("/usr/lib/postgresql").glob("*/bin"))[-1]
    data = Path(tempfile.mkdtemp(prefix="llmfleet-bench-pg-"))
    if os.geteuid() == 0:
        shutil.chown(data, "postgres")
    port = free_port()
    initdb = [str(bindir / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust"]
    subprocess.run(
        _as_postgres([*initdb, "-E", "UTF8", "--no-sync"]), check=True, stdout=subprocess.DEVNULL
    )
    options = f"-p {port} -c listen_addresses=127.0.0.1 -k {data} "
    options += f"-c max_connections={max_connections}"
    options += "".join(f" -c {k}={v}" for k, v in (settings or {}).items())
    pg_ctl = [str(bindir / "pg_ctl"), "-D", str(data)]
    start = [*pg_ctl, "-o", options, "-l", str(data / "server.log"), "-w", "start"]
    subprocess.run(_as_postgres(start), check=True, stdout=subprocess.DEVNULL)
    try:
        pid = int((data / "postmaster.pid").read_text().split()[0])
        yield f"postgresql://postgres@127.0.0.1:{port}/postgres", psutil.Process(pid)
    finally:
        stop = [*pg_ctl, "-m", "fast", "-w", "stop"]
        subprocess.run(_as_postgres(stop), check=False, stdout=subprocess.DEVNULL)
        shutil.rmtree(data, ignore_errors=True)


def recreate_database(admin_url: str, name: str) -> str:
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')
    return admin_url.rsplit("/", 1)[0] + f"/{name}"
