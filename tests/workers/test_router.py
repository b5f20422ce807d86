"""The router's decisions against real Redis: strategies, exact limits, cooldowns,
leases and the adaptive limit — each decision one Lua call."""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
import redis
import redis.asyncio as aioredis

from models import redis_keys as rk
from models.fleet_config import FleetConfig, parse_fleet_config
from tests.conftest import REDIS_BASE
from workers.calls import drive
from workers.providers import errors
from workers.router import Admitted, Request, Router, Saturated

ROUTER_DB = 9


@pytest.fixture
def client() -> Iterator[redis.Redis]:
    conn = redis.Redis.from_url(f"{REDIS_BASE}/{ROUTER_DB}")
    conn.flushdb()
    yield conn
    conn.flushdb()


def config(*deps: dict[str, Any], **router: Any) -> FleetConfig:
    model_list = [
        {
            "model_name": "g",
            "litellm_params": {"model": "openai/m", **params},
            "model_info": {"id": dep_id},
        }
        for dep_id, params in (next(iter(d.items())) for d in deps)
    ]
    return parse_fleet_config({"model_list": model_list, "router_settings": router}, {})


def request(group: str = "g", tags: tuple[str, ...] = ()) -> Request:
    return Request(group, tags, estimated_tokens=10, timeout_s=30)


def admit(router: Router, avoid: set[str] | None = None) -> Admitted:
    choice = drive(router.choose(request(), avoid or set()))
    assert isinstance(choice, Admitted), choice
    return choice


def test_weighted_shuffle_splits_2000_picks_by_weight(client: redis.Redis) -> None:
    router = Router(
        config({"a": {"weight": 1}}, {"b": {"weight": 3}}, {"c": {"weight": 6}}),
        client,
        random.Random(5),
    )
    picks = Counter()
    for _ in range(2000):
        admitted = admit(router)
        picks[admitted.deployment.id] += 1
        drive(router.report_success(admitted, latency_s=0.1, completion_tokens=5, total_tokens=10))
    shares = {k: 100 * v / 2000 for k, v in picks.items()}
    assert abs(shares["a"] - 10) <= 5 and abs(shares["b"] - 30) <= 5
    assert abs(shares["c"] - 60) <= 5


def test_rpm_is_exact_at_the_limit(client: redis.Redis) -> None:
    router = Router(config({"a": {"rpm": 5}}), client, random.Random(1))
    for _ in range(5):
        drive(router.report_success(admit(router), 0.1, 1, 1))
    sixth = drive(router.choose(request(), set()))
    assert isinstance(sixth, Saturated)
    assert sixth.reasons == {"a": "rpm"}
    # The window slides: the first call leaves it 60 s (+ a 1 s guard) after it started.
    assert 60_000 < sixth.wait_ms <= 61_001


def test_max_parallel_counts_live_leases_and_releases_them(client: redis.Redis) -> None:
    router = Router(config({"a": {"max_parallel_requests": 2}}), client, random.Random(1))
    first, second = admit(router), admit(router)
    assert isinstance(drive(router.choose(request(), set())), Saturated)
    drive(router.report_success(first, 0.1, 1, 1))
    third = admit(router)
    assert third.deployment.id == "a"
    assert second.lease_token != third.lease_token


def test_leases_of_dead_workers_expire(client: redis.Redis) -> None:
    router = Router(config({"a": {"max_parallel_requests": 1}}), client, random.Random(1))
    lease = drive(router.choose(Request("g", (), 1, timeout_s=0.001), set()))
    assert isinstance(lease, Admitted)
    # The worker dies without reporting; its lease lasts the call timeout plus a margin.
    key = rk.deployment_keys("a")[1]  # in flight
    client.zadd(key, {lease.lease_token: int(time.time() * 1000) - 1})
    assert isinstance(drive(router.choose(request(), set())), Admitted)


def test_cooldown_after_allowed_fails_is_seen_by_every_router(client: redis.Redis) -> None:
    cfg = config({"a": {}}, {"b": {}}, allowed_fails=1, cooldown_time=30)
    one, other = Router(cfg, client, random.Random(1)), Router(cfg, client, random.Random(2))
    boom = errors.UnavailableError("boom", provider="openai")
    for _ in range(2):
        admitted = drive(one.choose(request(), {"b"}))
        assert isinstance(admitted, Admitted) and admitted.deployment.id == "a"
        cooled = drive(one.report_failure(admitted, boom))
    assert cooled
    # Another worker's router never picks `a` while it cools down.
    assert {admit(other).deployment.id for _ in range(50)} == {"b"}


@pytest.mark.parametrize(
    ("error", "cools"),
    [
        (errors.BadRequestError("x", provider="p"), False),
        (errors.ContextWindowExceededError("x", provider="p"), False),
        (errors.ContentPolicyError("x", provider="p"), False),
        (errors.AuthenticationError("x", provider="p"), True),
        (errors.NotFoundError("x", provider="p"), True),
        (errors.RateLimitedError("x", provider="p", retry_after=2), True),
    ],
)
def test_what_cools_a_deployment_at_once(
    client: redis.Redis, error: errors.ProviderError, cools: bool
) -> None:
    router = Router(config({"a": {}}, cooldown_time=30), client, random.Random(1))
    assert drive(router.report_failure(admit(router), error)) is cools
    choice = drive(router.choose(request(), set()))
    assert isinstance(choice, Saturated) is cools
    if isinstance(error, errors.RateLimitedError):
        assert isinstance(choice, Saturated) and 1_000 < choice.wait_ms <= 2_000


def test_latency_routing_prefers_the_fastest(client: redis.Redis) -> None:
    cfg = config({"fast": {}}, {"mid": {}}, {"slow": {}}, routing_strategy="latency-based-routing")
    router = Router(cfg, client, random.Random(3))
    latency = {"fast": 0.1, "mid": 0.5, "slow": 1.0}
    picks = Counter()
    for _ in range(300):
        admitted = admit(router)
        picks[admitted.deployment.id] += 1
        drive(router.report_success(admitted, latency[admitted.deployment.id], 10, 20))
    assert picks["fast"] >= 0.9 * 300


def test_latency_routing_probes_a_deployment_without_latency_one_call_at_a_time(
    client: redis.Redis,
) -> None:
    # Given a deployment with measured latency, and a new one without any
    latency = {"fast": 0.1, "new": 1.0}
    cfg = config({"fast": {}}, routing_strategy="latency-based-routing")
    alone = Router(cfg, client, random.Random(1))
    drive(alone.report_success(admit(alone), latency["fast"], 10, 20))
    both = config({"fast": {}}, {"new": {}}, routing_strategy="latency-based-routing")
    router = Router(both, client, random.Random(5))
    # When 20 calls start at once
    held = [admit(router) for _ in range(20)]
    # Then the new one is probed by one call, not handed all of them
    picks = Counter(a.deployment.id for a in held)
    assert picks == {"fast": 19, "new": 1}
    # and once its probe says it is slow, the fast one keeps the traffic
    for admitted in held:
        drive(router.report_success(admitted, latency[admitted.deployment.id], 10, 20))
    assert {admit(router).deployment.id for _ in range(20)} == {"fast"}


def test_latency_routing_spreads_calls_while_nothing_is_measured(client: redis.Redis) -> None:
    cfg = config({"a": {}}, {"b": {}}, routing_strategy="latency-based-routing")
    router = Router(cfg, client, random.Random(2))
    assert Counter(admit(router).deployment.id for _ in range(20)) == {"a": 10, "b": 10}


def test_least_busy_and_usage_based(client: redis.Redis) -> None:
    busy = Router(
        config({"a": {}}, {"b": {}}, routing_strategy="least-busy"), client, random.Random(1)
    )
    held = admit(busy)
    assert admit(busy).deployment.id != held.deployment.id
    client.flushdb()
    usage = Router(
        config({"a": {}}, {"b": {}}, routing_strategy="usage-based-routing"),
        client,
        random.Random(1),
    )
    first = admit(usage)
    drive(usage.report_success(first, 0.1, 100, 500))
    other = ({"a", "b"} - {first.deployment.id}).pop()
    assert {admit(usage).deployment.id for _ in range(10)} == {other}


def test_cost_routing_takes_the_cheapest_with_capacity(client: redis.Redis) -> None:
    cfg = config(
        {"dear": {"input_cost_per_token": "0.00001"}},
        {"cheap": {"input_cost_per_token": "0.000001", "max_parallel_requests": 1}},
        routing_strategy="cost-based-routing",
    )
    router = Router(cfg, client, random.Random(1))
    assert admit(router).deployment.id == "cheap"
    assert admit(router).deployment.id == "dear"  # cheap is at its limit


def test_tags_select_deployments(client: redis.Redis) -> None:
    cfg = config({"eu": {"tags": ["eu"]}}, {"us": {"tags": ["us", "default"]}})
    router = Router(cfg, client, random.Random(1))
    assert {router.candidates("g", ("eu",))[0].id} == {"eu"}
    assert [d.id for d in router.candidates("g", ())] == ["us"]


def test_adaptive_limit_shrinks_on_429_and_grows_back(client: redis.Redis) -> None:
    router = Router(config({"a": {}}), client, random.Random(1))
    held = [admit(router) for _ in range(30)]
    # A 429 while 30 calls are in flight: the limit becomes 0.7 x 30.
    drive(
        router.report_failure(
            held.pop(), errors.RateLimitedError("x", provider="p", retry_after=0.001)
        )
    )
    time.sleep(0.01)
    limit = float(client.hget(rk.deployment_keys("a")[5], "limit"))
    assert limit == 21
    for admitted in held:
        drive(router.report_success(admitted, 0.1, 1, 1))
    grown = float(client.hget(rk.deployment_keys("a")[5], "limit"))
    assert 21 < grown < 23  # +1/limit per success while the limit binds


def test_an_asyncio_client_runs_the_same_scripts(client: redis.Redis) -> None:
    # A worker whose calls run on its event loop routes through redis.asyncio: what it
    # admits, reports and cools is what every other router sees.
    cfg = config({"a": {"max_parallel_requests": 1}}, {"b": {}}, cooldown_time=30)
    url = client.connection_pool.connection_kwargs
    blocking = Router(cfg, client, random.Random(1))

    async def on_the_loop() -> tuple[Admitted | Saturated, bool, bool]:
        aclient = aioredis.Redis(host=url["host"], port=url["port"], db=url["db"])
        try:
            router = Router(cfg, aclient, random.Random(1))
            held = await router.choose(request(), {"b"})
            assert isinstance(held, Admitted) and held.deployment.id == "a"
            throttle = errors.RateLimitedError("x", provider="p", retry_after=20)
            other = await router.choose(request(), {"a"})
            assert isinstance(other, Admitted) and other.deployment.id == "b"
            cooled = await router.report_failure(other, throttle)
            return held, cooled, await router.throttled_recently("g", ())
        finally:
            await aclient.aclose()

    held, cooled, throttled = asyncio.run(on_the_loop())
    assert cooled and throttled
    # `a` is at its one parallel call and `b` cools down: nothing left for anyone.
    choice = drive(blocking.choose(request(), set()))
    assert isinstance(choice, Saturated)
    assert choice.reasons == {"a": "max_parallel", "b": "cooldown"}
    assert isinstance(held, Admitted)
    drive(blocking.report_success(held, 0.1, 1, 1))
    again = drive(blocking.choose(request(), set()))
    assert isinstance(again, Admitted) and again.deployment.id == "a"
