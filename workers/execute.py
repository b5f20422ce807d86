"""Run one job: claim it, let a JobRun make its calls (on the worker's threads or its
event loop: workers.calls), store the outcome or put the job to wait for capacity.
On threads a task runs its jobs to their end; on the loop it claims them as there is
room, hands them over and returns, and the writer stores their ends
(ARCHITECTURE.md, "The worker loop"). Plain functions with no Celery import;
`workers.tasks` wraps them thinly."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, wait
from typing import TypeVar

from models.logging_setup import bind_log_context
from models.tables import JobStatus, utcnow
from workers import crashes, jobstore, metrics
from workers.admission import Slots
from workers.prefetch import Taken
from workers.resources import WorkerContext
from workers.run_store import Ran, job_log, store
from workers.runner import JobRun

__all__ = ["SendOn", "execute_job", "execute_lines"]

log = logging.getLogger(__name__)

T = TypeVar("T")
#: Sends jobs back to the queue they came from, in a message of their own.
SendOn = Callable[[list[str]], None]

#: While a message still has lines to claim, how often it looks for a free slot.
SLOT_WAIT_S = 0.05
#: How long a line that has ended waits for others of its message to store with them.
GATHER_S = 0.02


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

    With calls on threads the job runs to its end here. On the event loop, the job is
    claimed once its lane has room (workers.admission) and handed over when this
    returns, so its message may go: the writer stores its end (workers.writer). An
    interactive job waits for room; another is sent on (`send_on`, back to its queue)
    when the general lane has none, rather than hold a thread and a prefetch slot
    (workers.lane_gate)."""
    if ctx.writer is None:
        return _done(_execute_here(ctx, job_id, publish_webhook))
    lane = ctx.admission.lane(queue)
    if send_on is None or lane is ctx.admission.interactive:
        lane.take_one()
    elif not lane.take(1, timeout=SLOT_WAIT_S):
        send_on([job_id])
        log.info("job %s: no room here, sent on", job_id)
        return _done(None)
    try:
        claimed = _claim_one(ctx, job_id)
    except BaseException:
        lane.give()
        raise
    if claimed is None:
        lane.give()
        return _done(None)
    return _hand_over(ctx, claimed, publish_webhook, lane.give)


def _execute_here(
    ctx: WorkerContext, job_id: str, publish_webhook: Callable[[str], None]
) -> JobStatus | None:
    claimed = _claim_one(ctx, job_id)
    if claimed is None:
        return None
    with ctx.leases.holding(claimed.job_id, claimed.attempt):
        ran = _start(ctx, claimed).result()
        return store(ctx, [ran], publish_webhook)[0]


def _claim_one(ctx: WorkerContext, job_id: str) -> jobstore.Claim | None:
    claimed = jobstore.claim(ctx.sessions, job_id, lease_seconds=ctx.settings.lease_seconds)
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
    assert ctx.writer is not None
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
    taken: Taken | None = None,
    send_on: SendOn | None = None,
) -> None:
    """Run several jobs (a batch's lines) from one message: side by side on the line
    pool's threads (`_lines_here`), or handed over to the loop in the general lane as
    it has room (`_hand_over_lines`). `taken` holds the prefetch slots the worker took
    for the message's lines (workers.prefetch): each goes back as its line ends."""
    if ctx.writer is None:
        _lines_here(ctx, job_ids, publish_webhook, taken)
    else:
        _hand_over_lines(ctx, job_ids, publish_webhook, taken, send_on)


def _hand_over_lines(
    ctx: WorkerContext,
    job_ids: Sequence[str],
    publish_webhook: Callable[[str], None],
    taken: Taken | None,
    send_on: SendOn | None,
) -> None:
    """Claim the lines as the general lane has room, a wave per UPDATE, and hand each
    over; returns once every line is handed over, turned away, or sent on (`send_on`:
    the lines the lane has no room for go back to the queue in a message of their own,
    rather than wait here holding a thread and a prefetch slot)."""
    lane = ctx.admission.general
    waiting = list(dict.fromkeys(job_ids))

    def line_done() -> None:
        lane.give()
        if taken is not None:
            taken.give()

    try:
        while waiting:
            room = lane.take(len(waiting), timeout=SLOT_WAIT_S)
            if not room and send_on is not None:
                send_on(waiting)
                log.info("%d line(s): no room here, sent on", len(waiting))
                if taken is not None:
                    taken.give(len(waiting))
                break
            wave, waiting = waiting[:room], waiting[room:]
            claims = _claim(ctx, wave, taken, lane)
            for i, claimed in enumerate(claims):
                try:
                    _hand_over(ctx, claimed, publish_webhook, line_done)
                except BaseException:
                    lane.give(len(claims) - i - 1)  # the wave's lines not handed over
                    raise
    except BaseException:
        if taken is not None:
            # The message goes (sent again later): its prefetch slots with it. Lines
            # already handed over give theirs back as they end, to no effect.
            taken.give_all()
        raise


def _lines_here(
    ctx: WorkerContext,
    job_ids: Sequence[str],
    publish_webhook: Callable[[str], None],
    taken: Taken | None = None,
) -> list[JobStatus | None]:
    """Run several jobs (a batch's lines) from one message. As many lines as the line
    pool has free slots are claimed in one UPDATE, their runs go side by side (each on a
    line-pool thread, or its calls on the event loop), and the ends that arrive together
    are stored in one transaction; more lines are claimed as slots free up. Each line
    keeps its own claim, lease and fence, exactly as `execute_job` would run it.
    `taken` holds the prefetch slots the worker took for the message's lines
    (workers.prefetch): each goes back as its line ends. Returns the statuses stored,
    in the order the lines ended."""
    waiting = list(dict.fromkeys(job_ids))
    pending: dict[Future[Ran], jobstore.Claim] = {}
    leases: dict[str, int] = {}
    statuses: list[JobStatus | None] = []
    try:
        while waiting or pending:
            if waiting:
                room = ctx.lines.take(len(waiting), timeout=0 if pending else SLOT_WAIT_S)
                wave, waiting = waiting[:room], waiting[room:]
                for claimed in _claim(ctx, wave, taken, ctx.lines):
                    leases[claimed.job_id] = ctx.leases.hold(claimed.job_id, claimed.attempt)
                    future = _start_line(ctx, claimed)
                    future.add_done_callback(lambda _: ctx.lines.give(1))  # its slot
                    pending[future] = claimed
            if pending:
                timeout = SLOT_WAIT_S if waiting else None
                done, running = wait(pending, timeout=timeout, return_when=FIRST_COMPLETED)
                if done and running:
                    # the lines of a wave end close together: store them in one commit
                    done |= wait(running, timeout=GATHER_S).done
                finished = [(future, pending.pop(future)) for future in done]
                if finished:
                    statuses += _store_lines(ctx, finished, publish_webhook)
                for _, claimed in finished:
                    ctx.leases.release(leases.pop(claimed.job_id))
                if taken is not None:
                    taken.give(len(finished))
    finally:
        for future in pending:
            future.cancel()  # not started (or cut short on the loop): its lease lapses
        for token in leases.values():
            ctx.leases.release(token)
        if taken is not None:
            taken.give_all()
    return statuses


def _claim(
    ctx: WorkerContext, wave: list[str], taken: Taken | None, slots: Slots
) -> list[jobstore.Claim]:
    """Claim a wave of lines with the slots reserved for it; the slots (and prefetch
    slots) of the lines not claimable (done, cancelled, running elsewhere) go back at
    once."""
    if not wave:
        return []
    try:
        claims = jobstore.claim_many(ctx.sessions, wave, lease_seconds=ctx.settings.lease_seconds)
    except BaseException:
        slots.give(len(wave))
        raise
    unclaimed = len(wave) - len(claims)
    if unclaimed:
        log.info("%d of %d line(s) not claimable", unclaimed, len(wave))
        slots.give(unclaimed)
        if taken is not None:
            taken.give(unclaimed)
    return claims


def _store_lines(
    ctx: WorkerContext,
    done: list[tuple[Future[Ran], jobstore.Claim]],
    publish_webhook: Callable[[str], None],
) -> list[JobStatus | None]:
    runs = []
    for future, claimed in done:
        try:
            runs.append(future.result())
        except Exception as exc:
            # Left `running`: its lease lapses and the sweeper hands it on.
            log.warning(
                "job %s attempt %d: %s", claimed.job_id, claimed.attempt, type(exc).__name__
            )
    return store(ctx, runs, publish_webhook)


def _start_line(ctx: WorkerContext, claimed: jobstore.Claim) -> Future[Ran]:
    """The whole run on a line-pool thread: its calls hold the thread, and a pre-call
    hook or a cache wait may take its time."""
    return ctx.lines.submit(_run_here, ctx, claimed)


def _run_here(ctx: WorkerContext, claimed: jobstore.Claim) -> Ran:
    return _start(ctx, claimed).result()


def _start(ctx: WorkerContext, claimed: jobstore.Claim) -> Future[Ran]:
    """Start the claim's run: the checks before any call here (JobRun.prepare), the
    calls through `ctx.calls` (workers.calls: done when this returns if they hold this
    thread, else on the event loop). The future holds what the run came to. A run that
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
        run.settle(result)
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
