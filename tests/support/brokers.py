"""The broker of a test fleet, Redis or RabbitMQ, and broker-agnostic looks into it.

Redis is the default: each fleet's broker is a Redis db number of its own. With
`TEST_BROKER_URL=amqp://guest:guest@127.0.0.1:5672/llmfleet_test` every fleet uses
RabbitMQ instead: the session fleet that vhost, each mini fleet `<vhost>-<db>`, so the
fleets of one run never share a queue. Router state stays in Redis either way.

Everything here goes through kombu (queue_declare's message count, basic_get +
requeue), so the same test reads Redis lists and AMQP queues alike.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from urllib.parse import unquote, urlsplit, urlunsplit

import redis
from celery import Celery

from models import fleet_name
from models.contract import WORKER_QUEUES, broker_options

__all__ = ["AMQP_URL", "REDIS_BASE", "Broker", "broker_for"]

REDIS_BASE = os.environ.get("TEST_REDIS_BASE", "redis://127.0.0.1:6379")
AMQP_URL = os.environ.get("TEST_BROKER_URL") or None


def broker_for(redis_db: int, *, own_vhost: bool = True) -> Broker:
    """Redis db `redis_db`, or under TEST_BROKER_URL a RabbitMQ vhost: the given one
    (`own_vhost=False`, the session fleet) or one named after the db number."""
    if AMQP_URL is None:
        return Broker(f"{REDIS_BASE}/{redis_db}")
    if not own_vhost:
        return Broker(AMQP_URL)
    parts = urlsplit(AMQP_URL)
    vhost = unquote(parts.path[1:]) or "llmfleet_test"
    return Broker(urlunsplit(parts._replace(path=f"/{vhost}-{redis_db}")))


@dataclass
class Broker:
    """One fleet's broker, seen from a producer-side Celery app that shares the fleet's
    broker options (and so declares queues exactly as the workers do)."""

    url: str
    celery: Celery = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.celery = Celery("test-producer", broker=self.url)
        self.celery.conf.update(broker_options(7200, fleet_name.current()))

    @property
    def is_amqp(self) -> bool:
        return self.url.startswith(("amqp://", "pyamqp://"))

    def reset(self) -> None:
        """Empty, before any fleet process connects. RabbitMQ: a fresh vhost where
        `rabbitmqctl` is at hand (stale bindings and reply queues go too), else the
        fleet's queues purged."""
        if not self.is_amqp:
            redis.Redis.from_url(self.url).flushdb()
        elif shutil.which("rabbitmqctl"):
            _recreate_vhost(self.url)
        else:
            self.purge()

    def purge(self) -> None:
        with self.celery.connection_for_write() as conn:
            for name in WORKER_QUEUES:
                self.celery.amqp.queues[name].bind(conn.default_channel).declare()
                self.celery.amqp.queues[name].bind(conn.default_channel).purge()

    def waiting(self) -> int:
        """Messages waiting in the fleet's queues (not counting those delivered)."""
        with self.celery.connection_for_read() as conn:
            total = 0
            for name in WORKER_QUEUES:
                queue = self.celery.amqp.queues[name].bind(conn.default_channel)
                total += int(queue.queue_declare().message_count)
            return total

    def busy_tasks(self) -> int:
        """Tasks the workers hold (running or prefetched), asked over the broker."""
        inspect = self.celery.control.inspect(timeout=2)
        held = 0
        for replies in (inspect.active(), inspect.reserved()):
            if replies is None:
                raise AssertionError("no worker answered the inspect request")
            held += sum(len(tasks) for tasks in replies.values())
        return held

    def idle(self) -> bool:
        return self.waiting() == 0 and self.busy_tasks() == 0

    def wait_idle(self, timeout: float = 30, settle: float = 0.3) -> None:
        """Idle twice, `settle` seconds apart: a message just taken from a queue is
        briefly in neither the queue nor a worker's lists."""
        until = time.monotonic() + timeout
        idle_since: float | None = None
        while time.monotonic() < until:
            if not self.idle():
                idle_since = None
            elif idle_since is None:
                idle_since = time.monotonic()
            elif time.monotonic() - idle_since > settle:
                return
            time.sleep(0.05)
        raise AssertionError(f"broker still busy: {self.waiting()} waiting")

    def peek(self) -> list[bytes]:
        """Every waiting message, headers and decoded body, put back as it was found."""
        seen: list[bytes] = []
        with self.celery.connection_for_write() as conn:
            for name in WORKER_QUEUES:
                queue = self.celery.amqp.queues[name].bind(conn.default_channel)
                held = []
                while (message := queue.get(no_ack=False)) is not None:
                    held.append(message)
                    body = (
                        message.body if isinstance(message.body, bytes) else message.body.encode()
                    )
                    seen.append(json.dumps(message.headers).encode() + b"\n" + body)
                for message in held:
                    message.requeue()
        return seen

    def close(self) -> None:
        self.celery.close()


def _recreate_vhost(url: str) -> None:
    parts = urlsplit(url)
    vhost = unquote(parts.path[1:]) or "/"
    user = parts.username or "guest"
    if vhost == "/":
        raise ValueError("TEST_BROKER_URL must name a vhost of its own: it is deleted")
    subprocess.run(["rabbitmqctl", "-q", "delete_vhost", vhost], capture_output=True)
    for argv in (["add_vhost", vhost], ["set_permissions", "-p", vhost, user, ".*", ".*", ".*"]):
        subprocess.run(["rabbitmqctl", "-q", *argv], check=True, capture_output=True)
