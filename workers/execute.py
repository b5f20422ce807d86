"""Run jobs: claim them as their lane has room, hand each claim's run to the event loop
(a JobRun: its calls through workers.calls) and return; the writer stores what each
run came to, an outcome or a wait for capacity (ARCHITECTURE.md, "The worker loop").
Plain functions with no Celery import; `workers.tasks` wraps them thinly."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from typing import TypeVar

from models.fair_room import fleet_group
from models.logging_setup import bind_log_context, log_context
from models.tables import JobStatus, utcnow
from workers import crashes, jobstore, metrics
from workers.admission import Slots
from workers.claimer import Claimer
from workers.resources import WorkerContext
from workers.run_store import Ran, job_log
from workers.runner import JobRun

__all__ = ["SendOn", "execute_job", "execute_lines", "execute_turn", "run_turn"]

log = logging.getLogger(__name__)

T = TypeVar("T")
#: Sends jobs back to the queue they came from, in a message of their own.
SendOn = Callable[[list[str]], None]

#: How long a general-lane message waits for room before it is sent on.
SLOT_WAIT_S = 0.05


def execute_job(
    ctx: WorkerContext,
    job_id: str,
    publish_webhook: Callable[[str], None],
    queue: str | None = None,
    send_on: SendOn | None = None,
) -> Future[JobStatus | None]:
    """Run one job delivered from `queue`. The future holds the status stored (QUEUED
    when the job now waits), or None when this delivery had nothing to do.
    `publish_webhook` sends the webhook task of a delivery recorded with the job's end.

    The job is claimed once its lane has room (workers.admission) and handed over when
    this returns, so its message may go: the writer stores its end (workers.writer). An
    interactive job waits for room; another is sent on (`send_on`, back to its queue)
    when the general lane has none, rather than hold a thread and a message
    (workers.lane_gate)."""
    lane = ctx.admission.lane(queue)
    if send_on is None or lane is ctx.admission.interactive:
        lane.take_one()
    elif not lane.take(1, timeout=SLOT_WAIT_S):
        send_on([job_id])
        log.info("job %s: no room here, sent on", job_id)
        return _done(None)
    claimer = ctx.interactive_claimer if lane is ctx.admission.interactive else ctx.claimer
    try:
        claimed = _claim_one(claimer, job_id)
    except BaseException:
        lane.give()
        raise
    if claimed is None:
        lane.give()
        return _done(None)
    return _hand_over(ctx, claimed, publish_webhook, lane.give)


def execute_turn(
    ctx: WorkerContext,
    queue: str,
    publish_webhook: Callable[[str], None],
    send_on: Callable[[], None] | None = None,
) -> Future[JobStatus | None]:
    """Take a turn for the jobs waiting for a free worker on `queue` (models.fair_room):
    once the lane has room, `run_turn`. A lane with no room sends the turn back to its
    queue (`send_on`); a room with nothing waiting (its job went another way: a worker
    that took the turn itself, the room's idle tick, the sweeper) leaves nothing to do."""
    lane = ctx.admission.lane(queue)
    if send_on is None:
        lane.take_one()
    elif not lane.take(1, timeout=SLOT_WAIT_S):
        send_on()
        return _done(None)
    return run_turn(ctx, queue, publish_webhook, lane) or _done(None)


def run_turn(
    ctx: WorkerContext, queue: str, publish_webhook: Callable[[str], None], lane: Slots
) -> Future[JobStatus | None] | None:
    """With a slot of `lane` taken: the queue's fleet room lets through the job that is
    fairly next, and it runs as `execute_job` would run it. None, the slot given back,
    when the room had no job for it (or that job was not claimable)."""
    claimed = turn = None
    try:
        turn = ctx.fair.next_turn(fleet_group(queue)) if ctx.fair is not None else None
        if turn is not None:
            with log_context(job_id=turn[0].job_id):
                claimed = _claim_one(ctx.claimer, turn[0].job_id)
    except BaseException:
        lane.give()
        if turn is not None and claimed is None:  # out of its room: its own message then
            with contextlib.suppress(Exception):
                ctx.publish_execute(turn[0].job_id, turn[0].priority)
        raise
    if claimed is None or turn is None:
        lane.give()
        return None
    handed = _hand_over(ctx, claimed, publish_webhook, lane.give)
    with contextlib.suppress(Exception):  # a cached read; a metric is not worth a job
        share = ctx.shares.share(claimed.owner)
        metrics.tenant_waited(share.tenant, share.tier, turn[1])
    return handed


def _claim_one(claimer: Claimer, job_id: str) -> jobstore.Claim | None:
    claims = claimer.claim([job_id])
    claimed = claims[0] if claims else None
    if claimed is None:
        log.info("job %s: not claimable (done, running elsewhere or cancelled)", job_id)
        return None
    bind_log_context(attempt=claimed.attempt, batch_id=claimed.batch_id)
    return claimed


def _hand_over(
    ctx: WorkerContext,
    claimed: jobstore.Claim,
    publish_webhook: Callable[[str], None],
    after: Callable[[], None],
) -> Future[JobStatus | None]:
    """Start a claimed job's run on the loop, under its lease, for the writer to store;
    `after` runs once it is stored (or could not start)."""
    lease = ctx.leases.hold(claimed.job_id, claimed.attempt)
    try:
        ran = _start(ctx, claimed)
    except BaseException:
        ctx.leases.release(lease)
        after()
        raise
    return ctx.writer.hand(claimed, ran, lease, publish_webhook, after)


def execute_lines(
    ctx: WorkerContext,
    job_ids: Sequence[str],
    publish_webhook: Callable[[str], None],
    send_on: SendOn | None = None,
) -> None:
    """Run several jobs (a batch's lines) from one message: claim them as the general
    lane has room, a wave at a time (each in one UPDATE with other messages' claims:
    workers.claimer), and hand each over; returns once every line is handed over,
    turned away (done, cancelled, running elsewhere), or sent on (`send_on`: the lines
    the lane has no room for go back to the queue in a message of their own, rather
    than wait here holding a thread and the message). Each line keeps its own claim,
    lease and fence, exactly as `execute_job` would run it."""
    lane = ctx.admission.general
    waiting = list(dict.fromkeys(job_ids))
    while waiting:
        room = lane.take(len(waiting), timeout=SLOT_WAIT_S)
        if not room and send_on is not None:
            send_on(waiting)
            log.info("%d line(s): no room here, sent on", len(waiting))
            return
        wave, waiting = waiting[:room], waiting[room:]
        claims = _claim(ctx, wave, lane)
        for i, claimed in enumerate(claims):
            try:
                _hand_over(ctx, claimed, publish_webhook, lane.give)
            except BaseException:
                lane.give(len(claims) - i - 1)  # the wave's lines not handed over
                raise


def _claim(ctx: WorkerContext, wave: list[str], slots: Slots) -> list[jobstore.Claim]:
    """Claim a wave of lines with the slots reserved for it; the slots of the lines not
    claimable (done, cancelled, running elsewhere) go back at once."""
    if not wave:
        return []
    try:
        claims = ctx.claimer.claim(wave)
    except BaseException:
        slots.give(len(wave))
        raise
    unclaimed = len(wave) - len(claims)
    if unclaimed:
        log.info("%d of %d line(s) not claimable", unclaimed, len(wave))
        slots.give(unclaimed)
    return claims


def _start(ctx: WorkerContext, claimed: jobstore.Claim) -> Future[Ran]:
    """Start the claim's run: the checks before any call here (JobRun.prepare), the
    calls on the event loop (workers.calls). The future holds what the run came to. A run that
    raises ends its claim (workers.crashes): released to be tried again soon, or, once
    the job has used up its claims, ended `failed`; an outage of the database or Redis
    is raised, left to the task."""
    with job_log(claimed):
        metrics.job_claimed(claimed)
        if claimed.deadline is not None and claimed.deadline <= utcnow():
            return _done(
                Ran(claimed, jobstore.Outcome(JobStatus.EXPIRED, error=_expired(claimed)), [])
            )
        run = JobRun(ctx, claimed)
        try:
            early = run.prepare()
        except crashes.TRANSIENT:
            raise
        except Exception as exc:
            return _done(
                Ran(claimed, crashes.after_crash(claimed, exc, run.records, ctx.rng), run.records)
            )
        if early is not None:
            return _done(Ran(claimed, early, run.records))
        return ctx.calls.start(_calls(ctx, run))


async def _calls(ctx: WorkerContext, run: JobRun) -> Ran:
    claimed = run.claim
    with job_log(claimed):
        try:
            result = await run.route()
        except crashes.TRANSIENT:
            raise
        except Exception as exc:
            result = crashes.after_crash(claimed, exc, run.records, ctx.rng)
        if run.cache is not None:  # blocking Redis: off the loop
            await asyncio.to_thread(run.settle, result)
        return Ran(claimed, result, run.records)


def _done(value: T) -> Future[T]:
    future: Future[T] = Future()
    future.set_result(value)
    return future


def _expired(claimed: jobstore.Claim) -> dict[str, object]:
    message = "the job's deadline passed before it could run"
    if claimed.wait_reason:
        message = f"the job's deadline passed while waiting for capacity ({claimed.wait_reason})"
    return {
        "message": message,
        "type": "expired",
        "param": "deadline",
        "code": "job_expired",
        "status_code": 408,
    }
