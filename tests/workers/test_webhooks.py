"""Webhooks: signatures checked by the independent `standardwebhooks` package, sends
and retries against a real local HTTP receiver, and job end states through the
running fleet."""

from __future__ import annotations

import datetime as dt
import random
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

import httpx2 as httpx
import pytest
import standardwebhooks
from pydantic import SecretStr, ValidationError
from sqlalchemy import Engine, select, text, update
from sqlalchemy.orm import Session, sessionmaker

from models.contract import QUEUES
from models.db import make_sessionmaker
from models.settings import CommonSettings
from models.tables import WebhookDelivery, utcnow
from models.webhooks import record_event
from tests.conftest import WEBHOOK_SECRET, Fleet, migrated_database
from tests.support.webhooks import Receiver, verify
from workers import webhooks

SECRET = SecretStr(WEBHOOK_SECRET)
HOOK = standardwebhooks.Webhook(WEBHOOK_SECRET)


def test_signature_verifies_with_standard_webhooks() -> None:
    body = b'{"type":"job.succeeded","data":{"id":"job_1"}}'
    now = int(time.time())
    headers = {
        "webhook-id": "whd_1",
        "webhook-timestamp": str(now),
        "webhook-signature": webhooks.sign(WEBHOOK_SECRET, "whd_1", now, body),
    }

    assert HOOK.verify(body, headers) == {"type": "job.succeeded", "data": {"id": "job_1"}}
    with pytest.raises(standardwebhooks.webhooks.WebhookVerificationError):
        HOOK.verify(body.replace(b"job_1", b"job_2"), headers)


@pytest.mark.parametrize("bad", ["abc", "whsec_not base64!", "whsec_===="])
def test_malformed_secret_is_refused_naming_the_variable_not_the_value(bad: str) -> None:
    with pytest.raises(ValidationError) as raised:
        CommonSettings(LLMFLEET_WEBHOOK_SECRET=bad)
    assert "LLMFLEET_WEBHOOK_SECRET" in str(raised.value)
    assert bad not in str(raised.value)


def test_backoff_grows_from_two_seconds_with_full_jitter_up_to_fifteen_minutes() -> None:
    rng = random.Random(7)
    first = [webhooks.backoff(1, rng) for _ in range(200)]
    late = [webhooks.backoff(30, rng) for _ in range(200)]
    assert min(first) >= 0 and max(first) <= 2 and max(first) > 1.5
    assert max(late) <= 900 and min(late) < 300


@pytest.fixture(scope="module")
def engine() -> Iterator[Engine]:
    with migrated_database("llmfleet_test_webhooks") as (_url, eng):
        yield eng


@pytest.fixture
def sessions(engine: Engine) -> sessionmaker[Session]:
    with engine.begin() as conn:
        conn.execute(text("TRUNCATE webhook_deliveries"))
    return make_sessionmaker(engine)


@pytest.fixture
def http() -> Iterator[httpx.Client]:
    with httpx.Client() as client:
        yield client


def add_delivery(sessions: sessionmaker[Session], url: str) -> str:
    with sessions.begin() as session:
        return record_event(session, url, "job.succeeded", {"id": "job_x", "status": "succeeded"})


def row(sessions: sessionmaker[Session], delivery_id: str) -> WebhookDelivery:
    with sessions() as session:
        return session.get_one(WebhookDelivery, delivery_id)


def set_row(sessions: sessionmaker[Session], delivery_id: str, **values: object) -> None:
    with sessions.begin() as session:
        session.execute(
            update(WebhookDelivery).where(WebhookDelivery.id == delivery_id).values(**values)
        )


def make_due(sessions: sessionmaker[Session], delivery_id: str) -> None:
    set_row(sessions, delivery_id, next_attempt_at=utcnow())


def send(
    http: httpx.Client,
    sessions: sessionmaker[Session],
    delivery_id: str,
    max_attempts: int = 8,
    secret: SecretStr | None = SECRET,
    rng: random.Random | None = None,
) -> float | None:
    rng = rng or random.Random(1)
    return webhooks.deliver(http, sessions, secret, max_attempts, delivery_id, rng)


class HighRandom(random.Random):
    """Jitter at its top: the longest backoff."""

    def random(self) -> float:
        return 0.999


def test_failed_send_is_retried_after_a_backoff_then_delivered(
    sessions: sessionmaker[Session], http: httpx.Client, receiver: Callable[..., Receiver]
) -> None:
    # Given a receiver that answers 500 once
    hook = receiver(fail_first=1)
    delivery_id = add_delivery(sessions, hook.url)

    # When the first send fails
    before = utcnow()
    delay = send(http, sessions, delivery_id, rng=HighRandom())

    # Then the attempt is recorded, the next one scheduled, and the delay returned
    assert delay == pytest.approx(0.999 * webhooks.BASE_BACKOFF_SECONDS)
    failed = row(sessions, delivery_id)
    assert (failed.status, failed.attempts, failed.last_status_code) == ("pending", 1, 500)
    assert failed.last_error == "HTTP 500 Internal Server Error"
    assert abs((failed.next_attempt_at - before).total_seconds() - delay) < 1
    # ... and a message arriving before then sends nothing
    assert send(http, sessions, delivery_id) is None
    assert len(hook.requests) == 1

    # When it is due and the receiver is back
    make_due(sessions, delivery_id)
    assert send(http, sessions, delivery_id) is None

    # Then it is delivered, both attempts counted, the same message sent twice
    done = row(sessions, delivery_id)
    assert (done.status, done.attempts, done.last_status_code) == ("delivered", 2, 204)
    assert done.delivered_at is not None and done.last_error is None
    first, second = hook.requests
    assert first.body == second.body
    assert first.headers["webhook-id"] == second.headers["webhook-id"] == delivery_id
    assert first.headers["content-type"] == "application/json"
    assert verify(second)["data"] == {"id": "job_x", "status": "succeeded"}


def test_delivery_fails_for_good_after_max_attempts(
    sessions: sessionmaker[Session], http: httpx.Client, receiver: Callable[..., Receiver]
) -> None:
    hook = receiver(fail_first=100)
    delivery_id = add_delivery(sessions, hook.url)

    delays = []
    for _ in range(3):
        make_due(sessions, delivery_id)
        delays.append(send(http, sessions, delivery_id, max_attempts=3))

    assert None not in delays[:2] and delays[2] is None
    gave_up = row(sessions, delivery_id)
    assert (gave_up.status, gave_up.attempts, gave_up.next_attempt_at) == ("failed", 3, None)
    assert send(http, sessions, delivery_id, max_attempts=3) is None
    assert len(hook.requests) == 3


def test_unreachable_receiver_counts_as_a_failed_attempt(
    sessions: sessionmaker[Session], http: httpx.Client, receiver: Callable[..., Receiver]
) -> None:
    gone = receiver()
    gone.close()  # nothing listens on its port any more
    delivery_id = add_delivery(sessions, gone.url)

    assert send(http, sessions, delivery_id) is not None

    failed = row(sessions, delivery_id)
    assert (failed.attempts, failed.last_status_code) == (1, None)
    assert failed.last_error is not None and failed.last_error.startswith("ConnectError")
    assert "job_x" not in failed.last_error


def test_missing_secret_fails_the_delivery_without_sending(
    sessions: sessionmaker[Session], http: httpx.Client, receiver: Callable[..., Receiver]
) -> None:
    hook = receiver()
    delivery_id = add_delivery(sessions, hook.url)

    assert send(http, sessions, delivery_id, secret=None) is None

    failed = row(sessions, delivery_id)
    assert (failed.status, failed.attempts) == ("failed", 0)
    assert failed.last_error == "LLMFLEET_WEBHOOK_SECRET is not set"
    assert hook.requests == []


def test_delivered_webhook_is_not_sent_again(
    sessions: sessionmaker[Session], http: httpx.Client, receiver: Callable[..., Receiver]
) -> None:
    hook = receiver()
    delivery_id = add_delivery(sessions, hook.url)
    assert send(http, sessions, delivery_id) is None

    make_due(sessions, delivery_id)  # even a row that looks due
    assert send(http, sessions, delivery_id) is None

    assert len(hook.requests) == 1
    assert row(sessions, delivery_id).status == "delivered"


def test_concurrent_deliveries_of_one_message_send_it_once(
    sessions: sessionmaker[Session], http: httpx.Client, receiver: Callable[..., Receiver]
) -> None:
    hook = receiver(delay=0.3)
    delivery_id = add_delivery(sessions, hook.url)

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda _: send(http, sessions, delivery_id), range(8)))

    assert len(hook.requests) == 1
    assert row(sessions, delivery_id).attempts == 1


def test_sweep_requeues_only_pending_deliveries_long_past_due(
    sessions: sessionmaker[Session],
) -> None:
    long_ago = utcnow() - dt.timedelta(minutes=2)
    lost, _due_now, delivered = [add_delivery(sessions, "http://127.0.0.1:9/") for _ in range(3)]
    set_row(sessions, lost, next_attempt_at=long_ago)
    set_row(sessions, delivered, next_attempt_at=long_ago, status="delivered")

    assert webhooks.requeue_lost(sessions) == [lost]
    # Marked due now: not picked again until it is overdue again
    assert webhooks.requeue_lost(sessions) == []


def chat(content: str, **extra: object) -> dict[str, object]:
    return {"model": "mock-model", "messages": [{"role": "user", "content": content}], **extra}


def settled_delivery(fleet: Fleet, timeout: float = 10) -> WebhookDelivery:
    """The fleet's one delivery once it is no longer pending (the worker records the
    outcome just after the receiver has answered)."""
    until = time.monotonic() + timeout
    while True:
        with make_sessionmaker(fleet.engine)() as session:
            [delivery] = session.scalars(select(WebhookDelivery))
        if delivery.status != "pending" or time.monotonic() > until:
            return delivery
        time.sleep(0.05)


def test_finished_job_sends_one_signed_webhook(
    clean_fleet: Fleet, receiver: Callable[..., Receiver]
) -> None:
    hook = receiver()
    with clean_fleet.client() as client:
        job_id = client.post("/v1/jobs", json=chat("notify me", webhook_url=hook.url)).json()["id"]

    [received] = hook.wait_for(1)
    time.sleep(1.0)  # room for a duplicate to show up

    assert len(hook.requests) == 1
    event = verify(received)
    assert event["type"] == "job.succeeded" and event["object"] == "event"
    assert event["data"] == {"id": job_id, "status": "succeeded"}
    delivery = settled_delivery(clean_fleet)
    assert (delivery.status, delivery.attempts) == ("delivered", 1)


def test_webhook_reaches_a_receiver_that_fails_twice(
    clean_fleet: Fleet, receiver: Callable[..., Receiver]
) -> None:
    hook = receiver(fail_first=2)
    with clean_fleet.client() as client:
        job_id = client.post("/v1/jobs", json=chat("retry me", webhook_url=hook.url)).json()["id"]

    received = hook.wait_for(3, timeout=40)

    assert len(received) == 3
    assert len({r.headers["webhook-id"] for r in received}) == 1
    assert verify(received[-1])["data"] == {"id": job_id, "status": "succeeded"}
    delivery = settled_delivery(clean_fleet)
    assert (delivery.status, delivery.attempts, delivery.last_status_code) == (
        "delivered",
        3,
        204,
    )


@contextmanager
def consumers_paused(fleet: Fleet) -> Iterator[None]:
    for queue in QUEUES:
        fleet.celery.control.cancel_consumer(queue, reply=True, timeout=5, limit=1)
    try:
        yield
    finally:
        for queue in QUEUES:
            assert fleet.celery.control.add_consumer(queue, reply=True, timeout=5, limit=1)


def test_job_cancelled_while_queued_sends_job_cancelled(
    clean_fleet: Fleet, receiver: Callable[..., Receiver]
) -> None:
    # Given a queued job that asked for a webhook
    hook = receiver()
    with consumers_paused(clean_fleet), clean_fleet.client() as client:
        job_id = client.post("/v1/jobs", json=chat("never", webhook_url=hook.url)).json()["id"]
        # When the API cancels it
        assert client.delete(f"/v1/jobs/{job_id}").json()["status"] == "cancelled"

    # Then one signed job.cancelled event arrives, and the dropped execute adds none
    [received] = hook.wait_for(1)
    time.sleep(1.0)
    assert len(hook.requests) == 1
    event = verify(received)
    assert event["type"] == "job.cancelled"
    assert event["data"] == {"id": job_id, "status": "cancelled"}
    assert clean_fleet.mock_stats()["calls"] == 0
