"""Servers of a test's own, to break for real: a redis-server and a PostgreSQL cluster on
free ports, which a test may flush, stop, restart or cut off; plus a TCP proxy that can
drop every connection through it for a while."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import redis

from tests.support.processes import Proc, free_port

__all__ = ["PrivatePostgres", "PrivateRedis", "TcpProxy"]


class PrivateRedis:
    """A redis-server with nothing on disk: a restart loses every key, as in production
    without persistence."""

    def __init__(self, log_dir: Path) -> None:
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}"
        self._log_dir = log_dir
        self._starts = 0
        self.proc: Proc | None = None

    def start(self) -> None:
        self._starts += 1
        argv = ["redis-server", "--bind", "127.0.0.1", "--port", str(self.port)]
        argv += ["--save", "", "--appendonly", "no"]
        self.proc = Proc(f"redis-{self._starts}", argv, dict(os.environ), self._log_dir)
        self.proc.wait_for("PONG", self.answers, timeout=30)

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.stop()

    def answers(self) -> bool:
        try:
            with redis.Redis(port=self.port, socket_timeout=1) as client:
                return bool(client.ping())
        except redis.RedisError:
            return False

    def client(self, db: int = 0) -> redis.Redis:
        return redis.Redis.from_url(f"{self.url}/{db}")

    @classmethod
    @contextlib.contextmanager
    def running(cls, log_dir: Path) -> Iterator[PrivateRedis]:
        server = cls(log_dir)
        server.start()
        try:
            yield server
        finally:
            server.stop()


def _as_postgres(argv: list[str]) -> list[str]:
    """initdb and postgres refuse to run as root."""
    return ["runuser", "-u", "postgres", "--", *argv] if os.geteuid() == 0 else argv


class PrivatePostgres:
    """A PostgreSQL cluster of its own (same binaries and defaults as the shared server,
    but for `max_connections`), removed afterwards."""

    def __init__(self, max_connections: int = 300, settings: dict[str, str] | None = None):
        self._bindir = sorted(Path("/usr/lib/postgresql").glob("*/bin"))[-1]
        self.data = Path(tempfile.mkdtemp(prefix="llmfleet-pg-"))
        if os.geteuid() == 0:
            shutil.chown(self.data, "postgres")
        self.port = free_port()
        self.admin_url = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"
        initdb = [str(self._bindir / "initdb"), "-D", str(self.data), "-U", "postgres"]
        initdb += ["--auth=trust", "-E", "UTF8", "--no-sync"]
        subprocess.run(_as_postgres(initdb), check=True, stdout=subprocess.DEVNULL)
        options = f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.data} "
        options += f"-c max_connections={max_connections}"
        self._options = options + "".join(f" -c {k}={v}" for k, v in (settings or {}).items())

    def _pg_ctl(self, *args: str) -> None:
        argv = [str(self._bindir / "pg_ctl"), "-D", str(self.data), *args]
        subprocess.run(_as_postgres(argv), check=True, stdout=subprocess.DEVNULL)

    def start(self) -> None:
        self._pg_ctl("-o", self._options, "-l", str(self.data / "server.log"), "-w", "start")

    def restart(self) -> None:
        """A fast restart: every connection is cut and in-flight transactions roll back."""
        self._pg_ctl("-m", "fast", "-w", "restart")

    def stop(self) -> None:
        self._pg_ctl("-m", "fast", "-w", "stop")

    @property
    def postmaster_pid(self) -> int:
        return int((self.data / "postmaster.pid").read_text().split()[0])

    def url(self, dbname: str) -> str:
        return self.admin_url.rsplit("/", 1)[0] + f"/{dbname}"

    @classmethod
    @contextlib.contextmanager
    def running(
        cls, max_connections: int = 300, settings: dict[str, str] | None = None
    ) -> Iterator[PrivatePostgres]:
        cluster = cls(max_connections, settings)
        try:
            cluster.start()
            yield cluster
        finally:
            with contextlib.suppress(subprocess.CalledProcessError):
                cluster.stop()
            shutil.rmtree(cluster.data, ignore_errors=True)


class TcpProxy:
    """Forwards 127.0.0.1:`port` to `target_port`. `cut(seconds)` closes every
    connection and refuses new ones for that long, as a network partition would."""

    def __init__(self, target_port: int) -> None:
        self.port = free_port()
        self._target = target_port
        self._up = threading.Event()
        self._up.set()
        self._lock = threading.Lock()
        self._conns: set[socket.socket] = set()
        self._listener = socket.create_server(("127.0.0.1", self.port))
        self._closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def cut(self, seconds: float) -> None:
        self._up.clear()
        with self._lock:
            for conn in self._conns:
                with contextlib.suppress(OSError):
                    conn.shutdown(socket.SHUT_RDWR)
                conn.close()
            self._conns.clear()
        time.sleep(seconds)
        self._up.set()

    def close(self) -> None:
        self._closed = True
        self._listener.close()

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            if not self._up.is_set():
                client.close()  # refused while cut
                continue
            try:
                upstream = socket.create_connection(("127.0.0.1", self._target))
            except OSError:
                client.close()
                continue
            with self._lock:
                self._conns.update((client, upstream))
            for src, dst in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(src, dst), daemon=True).start()

    def _pipe(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (src, dst):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                sock.close()
            with self._lock:
                self._conns.discard(src)
                self._conns.discard(dst)
