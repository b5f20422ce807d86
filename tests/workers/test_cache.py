"""The response cache's Redis side (workers/cache.py, cache.lua) against a real Redis
on a db number of its own: keys, single flight, waiting, scoping."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
import redis

from models.tables import JobStatus
from tests.support.brokers import REDIS_BASE
from workers.cache import CacheWait, ResponseCache, request_digest
from workers.jobstore import Claim, Outcome

CACHE_DB = 4
BODY = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "temperature": 0}
REPLY = {"object": "chat.completion", "choices": [{"message": {"content": "hello"}}]}


@pytest.fixture
def client() -> Iterator[redis.Redis]:
    conn = redis.Redis.from_url(f"{REDIS_BASE}/{CACHE_DB}")
    conn.flushdb()
    yield conn
    conn.flushdb()
    conn.close()


def claim(
    job: str, owner: str = "key_a", body: dict[str, Any] | None = None, ttl: int = 60
) -> Claim:
    return Claim(job, 1, "chat.completions", "m", body or BODY, None, owner=owner, cache_ttl=ttl)


def succeeded() -> Outcome:
    return Outcome(JobStatus.SUCCEEDED, deployment_id="d", served_group="m", response=REPLY)


def test_digest_is_canonical_and_names_kind_model_and_body() -> None:
    reordered = {"temperature": 0, "messages": BODY["messages"], "model": "m"}
    assert request_digest("chat.completions", "m", BODY) == request_digest(
        "chat.completions", "m", reordered
    )
    assert request_digest("embeddings", "m", BODY) != request_digest("chat.completions", "m", BODY)
    assert request_digest("chat.completions", "m2", BODY) != request_digest(
        "chat.completions", "m", BODY
    )


def test_no_ttl_means_no_cache(client: redis.Redis) -> None:
    assert ResponseCache.open(client, claim("j1", ttl=0), 30) is None


def test_miss_then_store_then_hit(client: redis.Redis) -> None:
    first = ResponseCache.open(client, claim("j1"), 30)
    assert first is not None and first.lookup(1.0) is None and first.holding
    first.settle(succeeded())
    second = ResponseCache.open(client, claim("j2"), 30)
    assert second is not None
    hit = second.lookup(1.0)
    assert isinstance(hit, Outcome) and hit.cached and hit.response == REPLY
    assert hit.status is JobStatus.SUCCEEDED and hit.usage is None and hit.served_group == "m"
    assert not second.holding


def test_identical_job_waits_for_the_holder_then_hits(client: redis.Redis) -> None:
    holder = ResponseCache.open(client, claim("j1"), 30)
    assert holder is not None and holder.lookup(1.0) is None
    waiter = ResponseCache.open(client, claim("j2"), 30)
    assert waiter is not None
    # While the holder computes, a waiter with no budget left is told when to come back
    wait = waiter.lookup(0.0)
    assert isinstance(wait, CacheWait) and "identical request" in wait.reason
    assert time.time() + 0.4 < wait.due_s <= time.time() + 2.1
    # With budget, it polls and gets the holder's response
    holder.settle(succeeded())
    hit = waiter.lookup(1.0)
    assert isinstance(hit, Outcome) and hit.cached


def test_a_failed_holder_releases_the_lock_and_stores_nothing(client: redis.Redis) -> None:
    holder = ResponseCache.open(client, claim("j1"), 30)
    assert holder is not None and holder.lookup(1.0) is None
    holder.settle(Outcome(JobStatus.FAILED, error={"message": "x"}))
    nxt = ResponseCache.open(client, claim("j2"), 30)
    assert nxt is not None and nxt.lookup(0.0) is None and nxt.holding


def test_responses_never_cross_tenants_and_values_expire(client: redis.Redis) -> None:
    mine = ResponseCache.open(client, claim("j1", owner="key_a", ttl=1), 30)
    assert mine is not None and mine.lookup(1.0) is None
    mine.settle(succeeded())
    theirs = ResponseCache.open(client, claim("j2", owner="key_b"), 30)
    assert theirs is not None and theirs.lookup(0.0) is None and theirs.holding
    time.sleep(1.1)
    again = ResponseCache.open(client, claim("j3", owner="key_a"), 30)
    assert again is not None and again.lookup(0.0) is None
