"""What a worker decides as it starts: the Celery pool it runs on, and the consumer's
prefetch (a lane's worth of batch messages)."""

from __future__ import annotations

import logging
from types import SimpleNamespace

import pytest
import redis
from kombu import Exchange, Producer, Queue

from models import fleet_name
from models.contract import BATCH_TICK_TASK, QUEUE_BATCH_TICK, QUEUE_HIGH
from models.fleet_config import ConfigError
from models.settings import WorkerSettings
from producer_api.cli import worker_argv
from tests.support.brokers import REDIS_BASE
from workers import broker_transport
from workers.admission import Slots
from workers.celery_app import _check_pool, create_app
from workers.lane_gate import LaneGate


def started_with(module: str) -> SimpleNamespace:
    """A worker (Celery's WorkController) whose pool class lives in `module`."""
    return SimpleNamespace(pool_cls=type("TaskPool", (), {"__module__": module}))


@pytest.mark.parametrize("pool", ["gevent", "prefork", "eventlet", "solo"])
def test_a_worker_on_another_pool_than_threads_refuses_to_start(pool: str) -> None:
    with pytest.raises(ConfigError, match=rf"threads pool \(-P threads\), not {pool}"):
        _check_pool(started_with(f"celery.concurrency.{pool}"))


def test_a_worker_on_the_threads_pool_starts() -> None:
    _check_pool(started_with("celery.concurrency.thread"))


@pytest.mark.parametrize(
    ("concurrency", "lines_per_message", "prefetch"),
    [(1000, 20, 50), (20, 5, 4), (8, 2, 4), (4, 1, 4), (2, 2, 2)],
)
def test_the_prefetch_is_a_lanes_worth_of_batch_messages(
    concurrency: int, lines_per_message: int, prefetch: int
) -> None:
    assert LaneGate(Slots(concurrency), lines_per_message).prefetch == prefetch


def test_batch_ticks_have_a_queue_of_their_own_that_default_workers_consume() -> None:
    # Given the fleet's Celery app publishing to a Redis broker
    broker = redis.Redis.from_url(f"{REDIS_BASE}/2")
    broker.flushdb()
    app = create_app(WorkerSettings(BROKER_URL=f"{REDIS_BASE}/2"))
    try:
        # When beat's batch tick is sent
        app.send_task(BATCH_TICK_TASK)
        # Then it waits on its own queue, not on the interactive one (each of the fleet's
        # broker keys starts with its name)
        prefix = fleet_name.current()
        assert broker.llen(f"{prefix}:{QUEUE_BATCH_TICK}") == 1
        assert broker.llen(f"{prefix}:{QUEUE_HIGH}") == 0
    finally:
        app.close()
        broker.flushdb()
        broker.close()
    # and a worker started with the defaults consumes it; one for `llmfleet.high` does not
    default = worker_argv(None, "w@%h", "INFO")
    assert QUEUE_BATCH_TICK in default[default.index("-Q") + 1].split(",")
    high_only = worker_argv(None, "w@%h", "INFO", queues=QUEUE_HIGH)
    assert high_only[high_only.index("-Q") + 1] == QUEUE_HIGH


def test_a_message_acknowledged_after_its_connection_closed_is_a_connection_error(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Given a worker's broker connection (Redis) holding a message it was delivered
    app = create_app(WorkerSettings(BROKER_URL=f"{REDIS_BASE}/2"))
    assert app.conf.broker_transport == broker_transport.TRANSPORT
    broker = redis.Redis.from_url(f"{REDIS_BASE}/2")
    try:
        for gone in ("closed", "collected"):
            connection = app.connection_for_read()
            queue = Queue("ack-after-close", Exchange("ack-after-close"), "ack-after-close")
            with Producer(connection.channel()) as producer:
                producer.publish(
                    {"n": 1}, exchange=queue.exchange, routing_key=queue.name, declare=[queue]
                )
            message = queue(connection.default_channel).get()
            assert message is not None
            # When the broker went away before the message's task ended: its channel
            # closed, or its connection collected (the transport without its client, as
            # Celery's consumer leaves it), and the channel's pools gone
            transport = message.channel.connection
            connection.release()
            if gone == "collected":
                message.channel.connection, transport.client = transport, None
            message.channel._disconnect_pools()
            # Then the acknowledgement fails as a connection error, which Celery logs
            # and gets over, not an error that escapes the worker's loop and stops it
            with pytest.raises(ConnectionError):
                message.ack()
            message.ack_log_error(logging.getLogger("test"), connection.connection_errors)
            assert "Couldn't ack" in caplog.text
            caplog.clear()
    finally:
        app.close()
        broker.flushdb()
        broker.close()
    # and a worker on RabbitMQ keeps kombu's own transport
    amqp = create_app(WorkerSettings(BROKER_URL="amqp://guest:guest@127.0.0.1:5672//"))
    assert amqp.conf.broker_transport is None
