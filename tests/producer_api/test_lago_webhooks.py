"""POST /v1/lago/webhooks: only Lago's signed webhooks change the entitlement view, and
each one changes what the workers' pre-check answers at once."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx2 as httpx
import pytest
import redis
import yaml
from fastapi.testclient import TestClient

from models import migrate
from models.entitlement import HOLD_ALERT, HOLD_SUBSCRIPTION, HOLD_WALLET, lago_signature
from models.redis_keys import (
    JOB_EVENTS_CHANNEL,
    entitlement_customer_holds,
    entitlement_subscription_holds,
    entitlement_view,
)
from models.settings import ApiSettings, CommonSettings
from producer_api.app import create_app
from tests.conftest import recreate_database
from tests.support.brokers import REDIS_BASE
from tests.support.lago import API_KEY, LagoStandIn
from workers.accounting.entitlement import check
from workers.accounting.post_call import Billing

REDIS_DB = 3
MASTER = "sk-test-master-key"
HMAC_KEY = "lago-hmac-key"
ADMIN = {"Authorization": f"Bearer {MASTER}"}


@pytest.fixture(scope="module")
def database_url() -> str:
    url = recreate_database("llmfleet_test_lago_webhooks")
    migrate.upgrade(url)
    return url


@pytest.fixture
def state() -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(f"{REDIS_BASE}/{REDIS_DB}")
    client.flushdb()
    yield client
    client.flushdb()
    client.close()


@pytest.fixture
def api(database_url: str, state: redis.Redis, tmp_path: Path) -> Iterator[TestClient]:
    config = tmp_path / "fleet.yaml"
    model = {"model": "openai_compatible/m", "api_base": "http://127.0.0.1:9/v1", "api_key": "k"}
    config.write_text(
        yaml.safe_dump({"model_list": [{"model_name": "m", "litellm_params": model}]})
    )
    settings = ApiSettings(  # type: ignore[call-arg]
        DATABASE_URL=database_url,
        REDIS_URL=f"{REDIS_BASE}/{REDIS_DB}",
        BROKER_URL=f"{REDIS_BASE}/{REDIS_DB}",
        LLMFLEET_CONFIG=config,
        LLMFLEET_MASTER_KEY=MASTER,
        LLMFLEET_FILES_DIR=tmp_path / "files",
        LAGO_WEBHOOK_SECRET=HMAC_KEY,
    )
    with TestClient(create_app(settings)) as client:
        # Shutting the app down while its job-events listener is still subscribing can
        # hang (producer_api/waiters.py): let it finish subscribing first.
        until = time.monotonic() + 10
        while not state.pubsub_numsub(JOB_EVENTS_CHANNEL)[0][1]:
            assert time.monotonic() < until, "the API never subscribed to job events"
            time.sleep(0.01)
        yield client


def send(
    api: TestClient, webhook_type: str, object_type: str, obj: dict[str, Any], **headers: str
) -> Any:
    body = json.dumps(
        {"webhook_type": webhook_type, "object_type": object_type, object_type: obj}
    ).encode()
    signed = {
        "X-Lago-Signature": lago_signature(HMAC_KEY, body),
        "X-Lago-Signature-Algorithm": "hmac",
        "Content-Type": "application/json",
        **headers,
    }
    return api.post("/v1/lago/webhooks", content=body, headers=signed)


def terminated(subscription: str) -> dict[str, Any]:
    return {"external_id": subscription, "status": "terminated", "external_customer_id": "c"}


def make_customer(api: TestClient, name: str, subscription: str) -> str:
    response = api.post(
        "/v1/customers",
        json={"name": name, "external_subscription_id": subscription},
        headers=ADMIN,
    )
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


def test_a_signed_termination_denies_the_subscription_before_any_lookup(
    api: TestClient, state: redis.Redis
) -> None:
    # Given a customer billed to a subscription Lago still says is active
    customer = make_customer(api, "acme-terminated", "sub-acme")
    lago = LagoStandIn(subscriptions={"sub-acme": "active"})
    lago.start()
    try:
        # When Lago signals its termination
        response = send(api, "subscription.terminated", "subscription", terminated("sub-acme"))
        assert response.status_code == 200, response.text
        assert response.json()["denied"] == ["sub-acme"]
        # Then the workers' pre-check denies it, without asking Lago
        worker = CommonSettings(LAGO_API_URL=lago.url, LAGO_API_KEY=API_KEY)  # type: ignore[call-arg]
        with httpx.Client() as http:
            verdict = check(state, http, worker, Billing(customer, "sub-acme"))
    finally:
        lago.stop()
    assert verdict is not None and not verdict.allowed and "terminated" in verdict.reason
    assert lago.lookups == {}


@pytest.mark.parametrize(
    "headers",
    [
        {"X-Lago-Signature": "bm90IHRoZSBzaWduYXR1cmU="},
        {"X-Lago-Signature": ""},
        {"X-Lago-Signature-Algorithm": "jwt"},
    ],
    ids=["wrong", "missing", "jwt"],
)
def test_a_bad_or_missing_signature_is_refused_and_changes_nothing(
    api: TestClient, state: redis.Redis, headers: dict[str, str]
) -> None:
    response = send(api, "subscription.terminated", "subscription", terminated("s"), **headers)
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "invalid_signature"
    assert state.keys("*entitlement*") == []


def test_a_body_altered_after_signing_is_refused(api: TestClient, state: redis.Redis) -> None:
    body = json.dumps({"webhook_type": "subscription.terminated"}).encode()
    headers = {"X-Lago-Signature": lago_signature(HMAC_KEY, body + b" ")}
    response = api.post("/v1/lago/webhooks", content=body, headers=headers)
    assert response.status_code == 401 and state.keys("*entitlement*") == []


def test_subscription_started_lifts_the_termination(api: TestClient, state: redis.Redis) -> None:
    send(api, "subscription.terminated", "subscription", terminated("sub-b"))
    assert state.hget(entitlement_subscription_holds("sub-b"), HOLD_SUBSCRIPTION)
    started = {"external_id": "sub-b", "status": "active"}
    assert send(api, "subscription.started", "subscription", started).status_code == 200
    assert state.hgetall(entitlement_subscription_holds("sub-b")) == {}
    assert b'"allowed": true' in (state.get(entitlement_view("sub-b")) or b"")


def test_a_depleted_wallet_denies_the_customer_until_a_top_up(
    api: TestClient, state: redis.Redis
) -> None:
    customer = make_customer(api, "acme-wallet", "sub-cust")
    key = api.post(
        "/v1/keys",
        json={"customer_id": customer, "external_subscription_id": "sub-key"},
        headers=ADMIN,
    )
    assert key.status_code == 201, key.text
    wallet = {"lago_id": "wal_1", "external_customer_id": customer, "ongoing_balance_cents": 0}
    response = send(api, "wallet.depleted_ongoing_balance", "wallet", wallet)
    assert response.status_code == 200, response.text
    assert response.json()["denied"] == ["sub-cust", "sub-key"]
    assert state.hget(entitlement_customer_holds(customer), HOLD_WALLET)
    # A pending top-up lifts nothing; the settled one does.
    top_up = {"lago_wallet_id": "wal_1", "transaction_type": "inbound", "status": "pending"}
    send(api, "wallet_transaction.created", "wallet_transaction", top_up)
    assert state.hget(entitlement_customer_holds(customer), HOLD_WALLET)
    send(api, "wallet_transaction.updated", "wallet_transaction", {**top_up, "status": "settled"})
    assert state.hgetall(entitlement_customer_holds(customer)) == {}


def test_a_wallet_of_an_unknown_customer_changes_nothing(
    api: TestClient, state: redis.Redis
) -> None:
    wallet = {"lago_id": "wal_2", "external_customer_id": "cus_nobody"}
    response = send(api, "wallet.depleted_ongoing_balance", "wallet", wallet)
    assert response.status_code == 200 and "ignored" in response.json()
    assert state.keys("*entitlement*") == []


def test_an_alert_holds_its_subscription_until_resolved(
    api: TestClient, state: redis.Redis
) -> None:
    alert = {"external_subscription_id": "sub-c", "alert_code": "cap", "current_value": "120"}
    assert send(api, "alert.triggered", "triggered_alert", alert).status_code == 200
    reason = state.hget(entitlement_subscription_holds("sub-c"), HOLD_ALERT)
    assert reason == b"Lago alert cap was triggered (value 120)"
    send(api, "alert.resolved", "triggered_alert", alert)
    assert state.hgetall(entitlement_subscription_holds("sub-c")) == {}


def test_unknown_webhook_types_are_acknowledged_and_ignored(
    api: TestClient, state: redis.Redis
) -> None:
    response = send(api, "invoice.created", "invoice", {"lago_id": "inv_1"})
    assert response.status_code == 200 and response.json()["status"] == "ignored"
    assert state.keys("*entitlement*") == []
