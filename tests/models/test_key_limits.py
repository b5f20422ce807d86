"""A virtual key's limits in Redis (models/key_limits.lua), against a real Redis on a
db number of their own. Windows are shortened where a test watches them slide."""

from __future__ import annotations

import datetime as dt
import threading
import time
from collections.abc import Iterator

import pytest
import redis

from models import redis_keys as rk
from models.ids import new_id
from models.key_limits import KeyLimiter, Refusal
from models.tenancy import KeyGrant
from tests.support.brokers import REDIS_BASE

LIMITS_DB = 4
LATER = dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)


@pytest.fixture
def client() -> Iterator[redis.Redis]:
    conn = redis.Redis.from_url(f"{REDIS_BASE}/{LIMITS_DB}")
    conn.flushdb()
    yield conn
    conn.flushdb()
    conn.close()


def grant(**limits: int) -> KeyGrant:
    return KeyGrant(new_id("key"), **limits)  # type: ignore[arg-type]


def test_rpm_admits_exactly_the_limit_then_says_when(client: redis.Redis) -> None:
    # Given a key allowed 30 jobs a minute
    limiter, key = KeyLimiter(client), grant(rpm=30)
    # When 60 jobs arrive at once from 12 threads
    refusals: list[Refusal] = []
    admitted: list[str] = []
    lock = threading.Lock()

    def admit(_: int) -> None:
        job = new_id("job")
        refusal = limiter.admit(key, job, 10, LATER)
        with lock:
            if refusal is None:
                admitted.append(job)
            else:
                refusals.append(refusal)

    threads = [threading.Thread(target=admit, args=(i,)) for i in range(60)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    # Then exactly 30 are admitted, and the rest are told to come back in about a minute
    assert len(admitted) == 30 and len(refusals) == 30
    for refusal in refusals:
        assert (refusal.limit, refusal.value, refusal.used) == ("rpm", 30, 30)
        assert 55 < refusal.retry_after_s <= 60


def test_rpm_window_slides_and_never_holds_more_than_the_limit(client: redis.Redis) -> None:
    # Given a 1 s window (the fleet's is 60 s; the script takes the window as given)
    window_ms, limit = 1000, 5
    limiter, key = KeyLimiter(client, rpm_window_ms=window_ms), grant(rpm=limit)
    accepted: list[float] = []
    until = time.monotonic() + 3.5
    # When jobs are offered every 20 ms for 3.5 s
    while time.monotonic() < until:
        if limiter.admit(key, new_id("job"), 1, LATER) is None:
            accepted.append(time.monotonic())
        time.sleep(0.02)
    # Then every window holds at most `limit` acceptances, and the window did slide
    for i, start in enumerate(accepted):
        in_window = [t for t in accepted[i:] if t - start < window_ms / 1000 - 0.01]
        assert len(in_window) <= limit
    assert len(accepted) >= 3 * limit


def test_tpm_charges_the_estimate_and_settling_corrects_it(client: redis.Redis) -> None:
    limiter, key = KeyLimiter(client), grant(tpm=1000)
    first = new_id("job")
    # Given a job estimated at 900 tokens
    assert limiter.admit(key, first, 900, LATER) is None
    # Then a second one of 200 does not fit this minute
    refused = limiter.admit(key, new_id("job"), 200, LATER)
    assert refused is not None and refused.limit == "tpm" and refused.used == 900
    assert 0 < refused.retry_after_s <= 60
    # When the first ends having used 50 tokens, the difference is given back
    limiter.settle(key.key_id, first, 50 - 900)
    assert limiter.admit(key, new_id("job"), 200, LATER) is None


def test_a_job_larger_than_tpm_runs_in_an_empty_minute(client: redis.Redis) -> None:
    limiter, key = KeyLimiter(client), grant(tpm=100)
    assert limiter.admit(key, new_id("job"), 5000, LATER) is None
    assert limiter.admit(key, new_id("job"), 1, LATER) is not None


def test_parallel_slots_are_held_until_settled_or_the_deadline(client: redis.Redis) -> None:
    limiter, key = KeyLimiter(client), grant(max_parallel_jobs=2)
    soon = dt.datetime.now(dt.UTC) + dt.timedelta(milliseconds=300)
    first, second = new_id("job"), new_id("job")
    assert limiter.admit(key, first, 1, LATER) is None
    assert limiter.admit(key, second, 1, soon) is None
    refused = limiter.admit(key, new_id("job"), 1, LATER)
    assert refused is not None and refused.limit == "max_parallel_jobs" and refused.used == 2
    # A settled job frees its slot at once
    limiter.settle(key.key_id, first, 0)
    third = new_id("job")
    assert limiter.admit(key, third, 1, LATER) is None
    # A job whose end is never reported frees its slot at its deadline
    assert limiter.admit(key, new_id("job"), 1, LATER) is not None
    time.sleep(0.4)
    assert limiter.admit(key, new_id("job"), 1, LATER) is None


def test_keys_do_not_share_limits_and_unlimited_keys_are_still_counted(
    client: redis.Redis,
) -> None:
    limiter = KeyLimiter(client)
    a, b, free = grant(rpm=1), grant(rpm=1), grant()
    assert limiter.admit(a, new_id("job"), 1, LATER) is None
    assert limiter.admit(b, new_id("job"), 1, LATER) is None
    assert limiter.admit(a, new_id("job"), 1, LATER) is not None
    for _ in range(50):
        assert limiter.admit(free, new_id("job"), 1, LATER) is None
    rpm_key, _, active_key = rk.key_limit_keys(free.key_id)
    assert client.zcard(rpm_key) == 50 and client.zcard(active_key) == 50
    assert 0 < client.pttl(rpm_key) <= rk.KEY_RPM_WINDOW_MS
