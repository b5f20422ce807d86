"""The Celery app of the execute workers, and the per-process resources its tasks use."""

from __future__ import annotations

import logging
from typing import Any
from urllib.parse import urlsplit

from celery import Celery, Task
from celery.exceptions import Ignore, Reject, Retry
from celery.signals import (
    worker_init,
    worker_shutdown,
)

from models import fleet_name, tracing
from models.contract import (
    BATCH_TICK_TASK,
    EXECUTE_TASK,
    LAGO_DRAIN_TASK,
    LAGO_ENTITLEMENT_TASK,
    POST_CALL_TASK,
    QUEUE_BATCH_TICK,
    QUEUE_NORMAL,
    QUEUE_POST_CALL,
    QUEUES,
    SWEEP_TASK,
    WEBHOOK_QUEUE,
    WEBHOOK_TASK,
    broker_options,
    queue_for_priority,
)
from models.fleet_config import ConfigError
from models.logging_setup import log_context
from models.settings import WorkerSettings
from workers import broker_transport, fleet_presence, observability
from workers.admission import lines_per_message
from workers.crashes import task_crashed
from workers.delayed import Waker
from workers.lane_gate import GateStep, LaneGate
from workers.resources import WorkerContext, build_context
from workers.turn_taker import TurnTaker

__all__ = [
    "FleetCelery",
    "GuardedTask",
    "app",
    "create_app",
    "publish_execute",
    "publish_webhook",
]

log = logging.getLogger(__name__)

SWEEP_INTERVAL_SECONDS = 30.0
#: How long the consumer's BRPOP blocks on Redis before it is sent again.
BRPOP_TIMEOUT_S = 0.1
BATCH_TICK_SECONDS = 1.0
LAGO_DRAIN_SECONDS = 5.0


#: Raised by a task to steer Celery (retry, drop, reject): passed on as they are.
CELERY_CONTROL = (Retry, Ignore, Reject)


class GuardedTask(Task):
    """Every task of the app: an unexpected exception leaves it as a `TaskCrashed`
    naming the class and the ids only (workers.crashes). Celery writes what escapes a
    task into its log line (repr and traceback, chained exceptions included) and into
    the task event Flower shows; the original may quote a request or a response."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        job_id = (
            args[0] if args and isinstance(args[0], str) and args[0].startswith("job_") else None
        )
        with log_context(job_id=job_id):
            try:
                return super().__call__(*args, **kwargs)
            except CELERY_CONTROL:
                raise
            except Exception as exc:
                crash = task_crashed(self.name, exc, args)
            # raised outside the `except`: nothing of the original is chained to it
            raise crash from None


class FleetCelery(Celery):
    """A Celery app that carries the process's WorkerContext once a worker starts."""

    fleet_settings: WorkerSettings
    context: WorkerContext | None = None
    waker: Waker | None = None
    #: Serves the jobs waiting for a free worker as the general lane frees slots.
    turns: TurnTaker | None = None
    #: Keeps the consumer off the general queues while the general lane is full.
    lane_gate: LaneGate | None = None

    def get_context(self) -> WorkerContext:
        if self.context is None:
            # Outside a worker (a beat process, a script): build on first use.
            self.context = _build(self.fleet_settings)
        return self.context


def create_app(settings: WorkerSettings | None = None) -> FleetCelery:
    settings = settings or WorkerSettings()
    app = FleetCelery(
        "llmfleet",
        broker=settings.broker_url,
        task_cls=GuardedTask,
        include=["workers.tasks", "workers.batch_tasks", "workers.accounting_tasks"],
    )
    app.fleet_settings = settings
    app.steps["consumer"].add(GateStep)
    options = broker_options(settings.visibility_timeout, fleet_name.current())
    # On Redis a queue the lane gate resumes is read from the consumer's next BRPOP,
    # once the one in flight times out (kombu's default: 1 s): a worker whose lines end
    # in a fraction of that would sit idle for the rest of it.
    options["broker_transport_options"]["polling_interval"] = BRPOP_TIMEOUT_S
    if urlsplit(settings.broker_url).scheme in broker_transport.SCHEMES:
        # A channel whose connection is gone raises a connection error, not an
        # AttributeError that stops the worker (workers.broker_transport).
        options["broker_transport"] = broker_transport.TRANSPORT
    app.conf.update(
        options,
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_ignore_result=True,
        task_default_queue=QUEUE_NORMAL,
        worker_hijack_root_logger=False,
        # Task events cost about 1 ms of CPU per task (docs/BENCHMARKS.md): off unless
        # asked for (`llmfleet worker --events`, or `celery control enable_events`).
        worker_send_task_events=False,
        task_send_sent_event=False,
        beat_schedule={
            "sweep": {"task": SWEEP_TASK, "schedule": SWEEP_INTERVAL_SECONDS},
            "batch-tick": {"task": BATCH_TICK_TASK, "schedule": BATCH_TICK_SECONDS},
            "lago-drain": {"task": LAGO_DRAIN_TASK, "schedule": LAGO_DRAIN_SECONDS},
            "lago-entitlements": {
                "task": LAGO_ENTITLEMENT_TASK,
                "schedule": settings.entitlement_ttl / 2,
            },
        },
    )
    app.conf.task_routes = {
        SWEEP_TASK: {"queue": QUEUES[0]},
        BATCH_TICK_TASK: {"queue": QUEUE_BATCH_TICK},
        WEBHOOK_TASK: {"queue": WEBHOOK_QUEUE},
        POST_CALL_TASK: {"queue": QUEUE_POST_CALL},
        LAGO_DRAIN_TASK: {"queue": QUEUE_POST_CALL},
        LAGO_ENTITLEMENT_TASK: {"queue": QUEUE_POST_CALL},
    }
    return app


app = create_app()
observability.install(app)


def _start(sender: Any = None, **_: Any) -> None:
    """Size the process's resources (HTTP and Redis pools) to the pool Celery really
    runs, whatever `-c` said, rather than to the environment's default."""
    if app.context is None:
        settings = app.fleet_settings
        concurrency = getattr(sender, "concurrency", None)
        if isinstance(concurrency, int) and concurrency > 0:
            settings = settings.model_copy(update={"concurrency": concurrency})
        try:
            _check_pool(sender)
            app.context = _build(settings)
            fleet_presence.announce(app.context.epoch_clients(), fleet_name.current())
        except ConfigError as exc:
            # Celery logs and swallows a signal handler's exception: SystemExit stops
            # the worker here, at start, rather than failing every job later.
            log.critical("llmfleet worker cannot start: %s", exc)
            raise SystemExit(f"llmfleet worker: {exc}") from None
        room = lines_per_message(settings.batch_lines_per_message, settings.concurrency)
        app.lane_gate = LaneGate(app.context.admission.general, room)


def _check_pool(sender: Any) -> None:
    """Tasks run on the threads pool: they claim and hand their jobs to the process's
    event loop, the lanes and the gate are the process's. Under gevent's patched
    threads and sockets the loop is not a loop of its own; prefork would split the
    lanes across children the consumer's gate cannot see."""
    pool = getattr(getattr(sender, "pool_cls", None), "__module__", "")
    if pool and pool != "celery.concurrency.thread":
        name = pool.rsplit(".", 1)[-1]
        raise ConfigError(f"the worker runs on the threads pool (-P threads), not {name}")


def _build(settings: WorkerSettings) -> WorkerContext:
    tracing.setup("llmfleet-worker")
    ctx = build_context(settings)
    ctx.publish_post_call = publish_post_call
    ctx.publish_execute = publish_execute
    return ctx


def publish_post_call(job_id: str, claim: int) -> None:
    app.send_task(POST_CALL_TASK, args=[job_id, claim], queue=QUEUE_POST_CALL)


def _start_waker(**_: Any) -> None:
    """One waker per worker node re-publishes jobs whose wait for capacity is over;
    with fair share on, its turn taker serves the jobs waiting for a free worker."""
    ctx = app.get_context()
    app.waker = Waker(ctx.delayed, publish_execute, ctx.fair)
    app.waker.start()
    if ctx.fair is not None:
        app.turns = TurnTaker(ctx, ctx.fair, publish_webhook)
        app.turns.start()


def publish_execute(job_id: str, priority: int) -> None:
    app.send_task(EXECUTE_TASK, args=[job_id], queue=queue_for_priority(priority))


def publish_webhook(delivery_id: str) -> None:
    app.send_task(WEBHOOK_TASK, args=[delivery_id], queue=WEBHOOK_QUEUE)


def _stop(**_: Any) -> None:
    if app.turns is not None:
        app.turns.stop()
    if app.waker is not None:
        app.waker.stop()
    if app.context is not None:
        app.context.close()
        app.context = None
    tracing.shutdown()  # the spans still in its buffer go out first


# The threads pool runs tasks in the main process: the context is built once, at start.
worker_init.connect(_start, weak=False)
worker_init.connect(_start_waker, weak=False)
worker_shutdown.connect(_stop, weak=False)
