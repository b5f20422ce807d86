"""The entitlement pre-check against real Redis and a Lago stand-in: the cached view,
holds, the usage cap, the fail-open / fail-closed policy, and the refresher."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx2 as httpx
import pytest
import redis
from pydantic import SecretStr

from models.entitlement import HOLD_ALERT, HOLD_WALLET, View
from models.redis_keys import (
    ENTITLEMENT_TRACKED,
    entitlement_customer_holds,
    entitlement_subscription_holds,
    entitlement_view,
)
from models.settings import CommonSettings
from tests.support.brokers import REDIS_BASE
from tests.support.lago import API_KEY, LagoStandIn
from workers.accounting.entitlement import check, denial_error, refresh
from workers.accounting.post_call import Billing

REDIS_DB = 3
ACME = Billing("cus_acme", "sub-acme")


@pytest.fixture
def state() -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(f"{REDIS_BASE}/{REDIS_DB}")
    client.flushdb()
    yield client
    client.flushdb()
    client.close()


@pytest.fixture
def lago() -> Iterator[LagoStandIn]:
    stand_in = LagoStandIn(subscriptions={"sub-acme": "active"})
    stand_in.start()
    yield stand_in
    stand_in.stop()  # again, when the test stopped it: harmless


@pytest.fixture
def http() -> Iterator[httpx.Client]:
    with httpx.Client() as client:
        yield client


def settings(lago: LagoStandIn, **extra: Any) -> CommonSettings:
    return CommonSettings(  # type: ignore[call-arg]
        LAGO_API_URL=lago.url, LAGO_API_KEY=SecretStr(API_KEY), **extra
    )


def test_an_active_subscription_is_allowed_and_cached(
    state: redis.Redis, lago: LagoStandIn, http: httpx.Client
) -> None:
    first = check(state, http, settings(lago), ACME)
    second = check(state, http, settings(lago), ACME)
    assert first is not None and first.allowed and first.looked_up
    assert second is not None and second.allowed and not second.looked_up
    assert lago.lookups == {"sub-acme": 1}  # the second job made no lookup
    ttl = state.ttl(entitlement_view("sub-acme"))
    assert 55 <= ttl <= 60  # LLMFLEET_ENTITLEMENT_TTL's default


@pytest.mark.parametrize("status", ["terminated", "canceled", "pending"])
def test_a_subscription_that_is_not_active_is_denied(
    state: redis.Redis, lago: LagoStandIn, http: httpx.Client, status: str
) -> None:
    lago.subscriptions["sub-acme"] = status
    verdict = check(state, http, settings(lago), ACME)
    assert verdict is not None and not verdict.allowed
    error = denial_error(verdict)
    assert error["status_code"] == 402 and error["code"] == "entitlement_denied"
    assert error["type"] == "insufficient_quota"
    assert "sub-acme" in error["message"] and status in error["message"]


def test_a_subscription_unknown_to_lago_is_denied(
    state: redis.Redis, lago: LagoStandIn, http: httpx.Client
) -> None:
    verdict = check(state, http, settings(lago), Billing(None, "sub-nobody"))
    assert verdict is not None and not verdict.allowed and "unknown" in verdict.reason


def test_nothing_is_checked_without_reporting_or_subscription(
    state: redis.Redis, lago: LagoStandIn, http: httpx.Client
) -> None:
    off = CommonSettings(LAGO_API_URL=None, LAGO_API_KEY=None)  # type: ignore[call-arg]
    assert check(state, http, off, ACME) is None
    assert check(state, http, settings(lago), Billing("cus_acme", None)) is None
    assert lago.lookups == {}


@pytest.mark.parametrize("outage", ["5xx", "hang", "stopped"])
@pytest.mark.parametrize("policy", ["fail_open", "fail_closed"])
def test_when_lago_cannot_be_reached_the_policy_decides(
    state: redis.Redis, lago: LagoStandIn, http: httpx.Client, policy: str, outage: str
) -> None:
    if outage == "stopped":
        lago.stop()
    else:
        lago.mode, lago.hang_seconds = outage, 3.0  # longer than the 2 s timeout
    config = settings(lago, LLMFLEET_ENTITLEMENT_POLICY=policy)
    verdict = check(state, http, config, ACME)
    assert verdict is not None and verdict.allowed is (policy == "fail_open")
    assert "can't be reached" in verdict.reason
    # The outage is remembered briefly: the next job does not wait on Lago again.
    again = check(state, http, config, ACME)
    assert again is not None and again.allowed is verdict.allowed and not again.looked_up
    assert 0 < state.ttl(entitlement_view("sub-acme")) <= 10


def test_a_known_view_outlives_an_outage(
    state: redis.Redis, lago: LagoStandIn, http: httpx.Client
) -> None:
    config = settings(lago, LLMFLEET_ENTITLEMENT_POLICY="fail_closed")
    assert check(state, http, config, ACME).allowed  # type: ignore[union-attr]
    lago.mode = "5xx"
    assert check(state, http, config, ACME).allowed  # type: ignore[union-attr]


def test_holds_deny_whatever_the_status_says(
    state: redis.Redis, lago: LagoStandIn, http: httpx.Client
) -> None:
    config = settings(lago)
    state.hset(entitlement_customer_holds("cus_acme"), HOLD_WALLET, "wallet depleted")
    verdict = check(state, http, config, ACME)
    assert verdict is not None and not verdict.allowed and verdict.reason == "wallet depleted"
    assert lago.lookups == {}  # a hold needs no lookup
    state.delete(entitlement_customer_holds("cus_acme"))
    state.hset(entitlement_subscription_holds("sub-acme"), HOLD_ALERT, "alert fired")
    assert check(state, http, config, ACME).reason == "alert fired"  # type: ignore[union-attr]
    state.delete(entitlement_subscription_holds("sub-acme"))
    assert check(state, http, config, ACME).allowed  # type: ignore[union-attr]


def test_usage_at_the_configured_cap_is_denied(
    state: redis.Redis, lago: LagoStandIn, http: httpx.Client
) -> None:
    config = settings(lago, LLMFLEET_LAGO_USAGE_LIMITS={"sub-acme": 1000})
    lago.usage_cents["sub-acme"] = 999
    assert check(state, http, config, ACME).allowed  # type: ignore[union-attr]
    state.flushdb()
    lago.usage_cents["sub-acme"] = 1000
    verdict = check(state, http, config, ACME)
    assert verdict is not None and not verdict.allowed
    assert "1000 cents" in verdict.reason and "cap" in verdict.reason


def test_the_refresher_keeps_views_in_use_fresh(
    state: redis.Redis, lago: LagoStandIn, http: httpx.Client
) -> None:
    config = settings(lago)
    assert check(state, http, config, ACME).allowed  # type: ignore[union-attr]
    lago.subscriptions["sub-acme"] = "terminated"
    report = refresh(state, http, config)
    assert report.refreshed == 1 and lago.lookups == {"sub-acme": 2}
    verdict = check(state, http, config, ACME)
    assert verdict is not None and not verdict.allowed and not verdict.looked_up


def test_the_refresher_keeps_views_through_an_outage_and_forgets_idle_ones(
    state: redis.Redis, lago: LagoStandIn, http: httpx.Client
) -> None:
    config = settings(lago)
    check(state, http, config, ACME)
    state.zadd(ENTITLEMENT_TRACKED, {"sub-idle": 1.0})  # last checked long ago
    lago.mode = "5xx"
    report = refresh(state, http, config)
    assert (report.refreshed, report.skipped, report.forgotten) == (0, 1, 1)
    view = View.decode(state.get(entitlement_view("sub-acme")))
    assert view is not None and view.allowed
    assert state.zrange(ENTITLEMENT_TRACKED, 0, -1) == [b"sub-acme"]
