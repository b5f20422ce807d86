"""A redis-server of the benchmark's own, on a port nobody else uses, stopped afterwards.

Other Redis servers on a shared machine may carry other test runs' traffic: a fleet on
one of them would count their CPU as its own (and flush their dbs). With a server of its
own, the redis-server's CPU is all the fleet's. bench/cpu_meter.py finds it by port.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import time
from collections.abc import Iterator

import redis

__all__ = ["private_redis"]

#: Clear of 6379 (the default server) and of the ports test runs use for their own.
DEFAULT_PORT = 6397


@contextlib.contextmanager
def private_redis(port: int = DEFAULT_PORT) -> Iterator[str]:
    """Yields the base URL (no db); sets TEST_REDIS_BASE and BENCH_REDIS_BASE for the
    bench scripts started meanwhile."""
    url = f"redis://127.0.0.1:{port}"
    try:
        redis.Redis.from_url(url).ping()
    except redis.ConnectionError:
        pass
    else:
        raise RuntimeError(f"port {port} already serves a Redis: pick another --redis-port")
    argv = [shutil.which("redis-server") or "redis-server", "--bind", "127.0.0.1"]
    argv += ["--port", str(port), "--save", "", "--appendonly", "no"]
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL)
    saved = {k: os.environ.get(k) for k in ("TEST_REDIS_BASE", "BENCH_REDIS_BASE")}
    try:
        until = time.monotonic() + 10
        while True:
            try:
                redis.Redis.from_url(url).ping()
                break
            except redis.ConnectionError:
                if time.monotonic() > until:
                    raise
                time.sleep(0.05)
        os.environ["TEST_REDIS_BASE"] = os.environ["BENCH_REDIS_BASE"] = url
        yield url
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        proc.terminate()
        proc.wait(timeout=10)
