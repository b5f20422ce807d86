"""The fleet's one-at-a-time locks (workers/fleet_lock.py): a live holder keeps its lock
however long it runs; a holder killed mid-run frees it within the lock's short TTL,
instead of stalling the batch tick or the Lago drain for minutes."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator

import pytest
import redis

from tests.support.brokers import REDIS_BASE
from workers.fleet_lock import fleet_lock

LOCK_DB = 3
KEY = "llmfleet:test-lock"


@pytest.fixture
def client() -> Iterator[redis.Redis]:
    conn = redis.Redis.from_url(f"{REDIS_BASE}/{LOCK_DB}")
    conn.delete(KEY)
    yield conn
    conn.delete(KEY)
    conn.close()


def test_a_live_holder_keeps_its_lock_past_the_ttl(client: redis.Redis) -> None:
    with fleet_lock(client, KEY, 300) as held:
        assert held
        time.sleep(1.0)  # over three TTLs
        with fleet_lock(client, KEY, 300) as other:
            assert not other
    # released at the end of the block
    with fleet_lock(client, KEY, 300) as again:
        assert again


def test_a_killed_holder_frees_the_lock_within_the_ttl(client: redis.Redis) -> None:
    # Given another process that holds the lock (TTL 1 s) and is killed while holding it
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import redis, sys, time\n"
            "from workers.fleet_lock import fleet_lock\n"
            f"c = redis.Redis.from_url('{REDIS_BASE}/{LOCK_DB}')\n"
            f"with fleet_lock(c, '{KEY}', 1000) as held:\n"
            "    print(held, flush=True)\n"
            "    time.sleep(60)\n",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "True"
        time.sleep(2.5)  # it renewed past its TTL
        with fleet_lock(client, KEY, 1000) as taken:
            assert not taken
        holder.kill()
        holder.wait()
        killed = time.monotonic()
        # Then the lock is free again within about its TTL, not a long fixed one
        while True:
            with fleet_lock(client, KEY, 1000) as taken:
                if taken:
                    break
            assert time.monotonic() - killed < 2.0
            time.sleep(0.05)
    finally:
        holder.kill()
        holder.wait()
