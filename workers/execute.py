"""Run one job: claim it, let a JobRun make its calls (on the worker's threads or its
event loop: workers.calls), store the outcome or put the job to wait for capacity.
Plain functions with no Celery import; `workers.tasks` wraps them thinly."""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import time
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, wait
from dataclasses import dataclass

from models.logging_setup import bind_log_context, log_context
from models.redis_keys import JOB_EVENTS_CHANNEL
from models.tables import JobStatus, utcnow
from workers import crashes, jobstore, metrics
from workers.accounting import charge as charges
from workers.accounting.post_call import Charge
from workers.key_usage import settle_job
from workers.prefetch import Taken
from workers.resources import WorkerContext
from workers.runner import Deferral, JobRun

__all__ = ["execute_job", "execute_lines"]

log = logging.getLogger(__name__)

#: While a message still has lines to claim, how often it looks for a free slot.
SLOT_WAIT_S = 0.05
#: How long a line that has ended waits for others of its message to store with them.
GATHER_S = 0.02
#: Backoff between tries to store runs while the database or Redis is away.
STORE_RETRY_BASE_S = 0.5
STORE_RETRY_MAX_S = 8.0


@dataclass(frozen=True, slots=True)
class Ran:
    """A claimed job after its calls: an outcome to store, or a wait for capacity."""

    claimed: jobstore.Claim
    result: jobstore.Outcome | Deferral
    records: list[jobstore.AttemptRecord]


def execute_job(
    ctx: WorkerContext, job_id: str, publish_webhook: Callable[[str], None]
) -> JobStatus | None:
    """Returns the status stored (QUEUED when the job now waits), or None when this
    delivery had nothing to do. `publish_webhook` sends the webhook task of a delivery
    recorded with the job's end."""
    claimed = jobstore.claim(ctx.sessions, job_id, lease_seconds=ctx.settings.lease_seconds)
    if claimed is None:
        log.info("job %s: not claimable (done, running elsewhere or cancelled)", job_id)
        return None
    bind_log_context(attempt=claimed.attempt, batch_id=claimed.batch_id)
    with ctx.leases.holding(claimed.job_id, claimed.attempt):
        ran = _start(ctx, claimed).result()
        return _store(ctx, [ran], publish_webhook)[0]


def execute_lines(
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
                for claimed in _claim(ctx, wave, taken):
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


def _claim(ctx: WorkerContext, wave: list[str], taken: Taken | None) -> list[jobstore.Claim]:
    """Claim a wave of lines with the slots reserved for it; the slots (and prefetch
    slots) of the lines not claimable (done, cancelled, running elsewhere) go back at
    once."""
    if not wave:
        return []
    try:
        claims = jobstore.claim_many(ctx.sessions, wave, lease_seconds=ctx.settings.lease_seconds)
    except BaseException:
        ctx.lines.give(len(wave))
        raise
    unclaimed = len(wave) - len(claims)
    if unclaimed:
        log.info("%d of %d line(s) not claimable", unclaimed, len(wave))
        ctx.lines.give(unclaimed)
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
    return _store(ctx, runs, publish_webhook)


def _start_line(ctx: WorkerContext, claimed: jobstore.Claim) -> Future[Ran]:
    """`_start` beside this thread: the whole run on a line-pool thread when runs hold
    their thread (a pre-call hook or a cache wait may take its time), else the checks
    here and the calls on the loop. An outage of the database or Redis is kept in the
    future."""
    if ctx.calls.blocking:
        return ctx.lines.submit(_run_here, ctx, claimed)
    try:
        return _start(ctx, claimed)
    except crashes.TRANSIENT as exc:
        failed: Future[Ran] = Future()
        failed.set_exception(exc)
        return failed


def _job_log(
    claimed: jobstore.Claim, deployment: str | None = None
) -> contextlib.AbstractContextManager[None]:
    """Every line logged about this job carries its ids (on whichever thread), and the
    deployment that served it once its calls are done (they ran on the event loop)."""
    return log_context(
        job_id=claimed.job_id,
        attempt=claimed.attempt,
        batch_id=claimed.batch_id,
        deployment=deployment,
    )


def _run_here(ctx: WorkerContext, claimed: jobstore.Claim) -> Ran:
    return _start(ctx, claimed).result()


def _start(ctx: WorkerContext, claimed: jobstore.Claim) -> Future[Ran]:
    """Start the claim's run: the checks before any call here (JobRun.prepare), the
    calls through `ctx.calls` (workers.calls: done when this returns if they hold this
    thread, else on the event loop). The future holds what the run came to. A run that
    raises ends its claim (workers.crashes): released to be tried again soon, or, once
    the job has used up its claims, ended `failed`; an outage of the database or Redis
    is raised, left to the task."""
    with _job_log(claimed):
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
    with _job_log(claimed):
        try:
            result = await run.route()
        except crashes.TRANSIENT:
            raise
        except Exception as exc:
            result = crashes.after_crash(claimed, exc, run.records, ctx.rng)
        run.settle(result)
        return Ran(claimed, result, run.records)


def _done(ran: Ran) -> Future[Ran]:
    future: Future[Ran] = Future()
    future.set_result(ran)
    return future


def _store(
    ctx: WorkerContext, runs: Sequence[Ran], publish_webhook: Callable[[str], None]
) -> list[JobStatus | None]:
    """Store what the runs came to. A passing outage of the database or Redis is waited
    out here, with backoff, for up to a lease: the answers in hand are stored, never
    asked for again. Trying again is safe: an end already stored is fenced out."""
    delay, until = STORE_RETRY_BASE_S, time.monotonic() + ctx.settings.lease_seconds
    while True:
        try:
            return _store_once(ctx, runs, publish_webhook)
        except crashes.TRANSIENT as exc:
            if time.monotonic() + delay > until:
                raise
            log.warning(
                "storing %d run(s) failed (%s); trying again in %.1f s",
                len(runs),
                type(exc).__name__,
                delay,
            )
            time.sleep(delay)
            delay = min(2 * delay, STORE_RETRY_MAX_S)


def _store_once(
    ctx: WorkerContext, runs: Sequence[Ran], publish_webhook: Callable[[str], None]
) -> list[JobStatus | None]:
    """The ends in one transaction, each wait on its own."""
    ended = [r for r in runs if not isinstance(r.result, Deferral)]
    statuses = _finish(ctx, ended, publish_webhook) if ended else []
    for ran in runs:
        if isinstance(ran.result, Deferral):
            with _job_log(ran.claimed):
                deferred = _defer(ctx, ran.claimed, ran.result, ran.records, publish_webhook)
            statuses.append(deferred)
    return statuses


def _defer(
    ctx: WorkerContext,
    claimed: jobstore.Claim,
    deferral: Deferral,
    records: list[jobstore.AttemptRecord],
    publish_webhook: Callable[[str], None],
) -> JobStatus | None:
    due = dt.datetime.fromtimestamp(deferral.due_s, dt.UTC)
    if claimed.deadline is not None and due > claimed.deadline:
        due = claimed.deadline  # wake at the deadline to end it `expired`
    stored = jobstore.defer(ctx.sessions, claimed, due, deferral.reason, records)
    if stored is None or stored.status is not JobStatus.QUEUED:
        settle_job(ctx, claimed, stored, None)
        status = _ended(ctx, claimed, stored, None, publish_webhook)
        _announce(ctx, [claimed.job_id] if status else [])
        return status
    ctx.delayed.add(claimed.job_id, claimed.priority, int(due.timestamp() * 1000))
    metrics.job_deferred(claimed)
    log.info(
        "job %s attempt %d: waiting until %s", claimed.job_id, claimed.attempt, due.isoformat()
    )
    return JobStatus.QUEUED


def _finish(
    ctx: WorkerContext, ended: Sequence[Ran], publish_webhook: Callable[[str], None]
) -> list[JobStatus | None]:
    """Store the ends with their charges (spend rows and usage events) in one
    transaction; then settle key limits and budgets, which live in Redis."""
    outcomes = [(r.claimed, r.result) for r in ended if isinstance(r.result, jobstore.Outcome)]
    priced = [charges.prepare(ctx, claimed, outcome) for claimed, outcome in outcomes]
    endings = [
        jobstore.Ending(claimed, outcome, ran.records, charge)
        for (claimed, outcome), ran, charge in zip(outcomes, ended, priced, strict=True)
    ]
    stored = _store_ends(ctx, endings)
    statuses = []
    for (claimed, outcome), charge, s in zip(outcomes, priced, stored, strict=True):
        with _job_log(claimed, outcome.deployment_id):
            statuses.append(_after_finish(ctx, claimed, outcome, charge, s, publish_webhook))
    _announce(ctx, [e.claimed.job_id for e, s in zip(endings, statuses, strict=True) if s])
    return statuses


def _store_ends(
    ctx: WorkerContext, endings: Sequence[jobstore.Ending]
) -> list[jobstore.Stored | None]:
    """`finish_many`; ends the database refuses are stored one by one, and the one it
    refuses alone ends `failed` instead (workers.crashes.unstorable)."""
    try:
        return jobstore.finish_many(ctx.sessions, endings)
    except crashes.TRANSIENT:
        raise
    except Exception as exc:
        if len(endings) > 1:
            return [stored for e in endings for stored in _store_ends(ctx, [e])]
        instead = crashes.unstorable(endings[0], exc)
    return jobstore.finish_many(ctx.sessions, [instead])


def _after_finish(
    ctx: WorkerContext,
    claimed: jobstore.Claim,
    outcome: jobstore.Outcome,
    charge: Charge | None,
    stored: jobstore.Stored | None,
    publish_webhook: Callable[[str], None],
) -> JobStatus | None:
    settle_job(ctx, claimed, stored, outcome)
    status = _ended(ctx, claimed, stored, outcome.deployment_id, publish_webhook)
    if status is None or stored is None or outcome.usage is None:
        return status
    metrics.tokens_used(claimed, outcome.served_group, outcome.usage)
    if charge is not None and stored.charged:
        charges.settle(ctx, claimed.owner, charge.model_group, charge.cost)
    elif charge is None and outcome.usage.total_tokens and not outcome.cached:
        _post_call(ctx, claimed)
    return status


def _post_call(ctx: WorkerContext, claimed: jobstore.Claim) -> None:
    """A claim that used tokens but could not be priced here is priced by the post-call
    task. If this message is lost the sweeper finds the claim without a spend row and
    sends it again."""
    try:
        ctx.publish_post_call(claimed.job_id, claimed.attempt)
    except Exception as exc:
        log.warning("job %s: post-call not published: %s", claimed.job_id, type(exc).__name__)


def _ended(
    ctx: WorkerContext,
    claimed: jobstore.Claim,
    stored: jobstore.Stored | None,
    deployment_id: str | None,
    publish_webhook: Callable[[str], None],
) -> JobStatus | None:
    if stored is None:
        log.warning(
            "job %s attempt %d: claim lost before it ended", claimed.job_id, claimed.attempt
        )
        return None
    metrics.job_ended(claimed, stored.status)
    for delivery_id in stored.webhooks:
        _publish_webhook(publish_webhook, claimed.job_id, delivery_id)
    log.info(
        "job %s attempt %d: %s via %s",
        claimed.job_id,
        claimed.attempt,
        stored.status,
        deployment_id,
    )
    return stored.status


def _announce(ctx: WorkerContext, job_ids: Sequence[str]) -> None:
    """Wake long-polling API requests (one round trip for all). Losing this only delays
    them to their timeout."""
    if not job_ids:
        return
    try:
        with ctx.redis.pipeline(transaction=False) as pipe:
            for job_id in job_ids:
                pipe.publish(JOB_EVENTS_CHANNEL, job_id)
            pipe.execute()
    except Exception as exc:
        log.warning("%d job(s): could not announce their end: %s", len(job_ids), type(exc).__name__)


def _publish_webhook(publish: Callable[[str], None], job_id: str, delivery_id: str) -> None:
    """The delivery row is committed; if its message is lost the sweeper sends it."""
    try:
        publish(delivery_id)
    except Exception as exc:
        log.warning("job %s: webhook %s not published: %s", job_id, delivery_id, type(exc).__name__)


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
