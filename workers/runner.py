"""The calls of one claimed job: the checks before any call (`JobRun.prepare`, in the
thread that hands the job over), then route, call, report, retry, fall back — or
decide to wait for capacity (`JobRun.route`, a coroutine whose calls and waits go
through `ctx.calls`: the worker's threads or its event loop, workers.calls). Returns
an Outcome to store or a Deferral; writes nothing itself."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any

import redis

from models.batch_lines import estimate_request_tokens
from models.contract import EMBEDDINGS
from models.logging_setup import bind_log_context
from models.stream_events import without_stream
from models.tables import JobStatus, utcnow
from workers import hooks, metrics
from workers.accounting import budget_check, entitlement
from workers.cache import CacheWait, ResponseCache
from workers.failures import (
    CAPACITY_REASONS,
    FailureKind,
    FallbackList,
    failure_kind,
    fallback_list_for,
)
from workers.fair_turn import FairTurn, due_of
from workers.jobstore import AttemptRecord, Claim, Outcome, is_cancel_requested
from workers.providers import (
    CallOptions,
    Provider,
    ProviderError,
    ProviderResult,
    Usage,
    provider_for,
)
from workers.resources import WorkerContext
from workers.router import Admitted, NoDeploymentError, Request, Saturated
from workers.streaming import (
    BrokenStream,
    StoppedStream,
    StreamedCall,
    interrupted,
)
from workers.waits import Deferral, Exhausted

__all__ = ["JobRun"]

log = logging.getLogger(__name__)

BACKOFF_BASE_S = 0.5
#: Waits up to this long are slept in place; longer ones give the slot back.
INLINE_WAIT_S = 1.0
INLINE_WAIT_BUDGET_S = 3.0
#: How long a job waiting on a throttled group sleeps between claims, at most (unless
#: the provider's Retry-After asks for longer).
MAX_CAPACITY_RECHECK_S = 10.0
#: The longest backoff slept between two tries of one claim.
MAX_BACKOFF_S = 2.0
TURN = "others waiting for its capacity go first (fair share)"


@dataclass
class JobRun:
    ctx: WorkerContext
    claim: Claim
    records: list[AttemptRecord] = field(default_factory=list)
    tried: set[str] = field(default_factory=set)
    inline_waited: float = 0.0
    last_error: ProviderError | None = None
    cache: ResponseCache | None = None
    turn: FairTurn = field(init=False)

    def __post_init__(self) -> None:
        self.turn = FairTurn(self.ctx, self.claim, None)

    def prepare(self) -> Outcome | Deferral | None:
        """The checks before any call, run by the thread that hands the job over: an
        end or a wait that needs no call (an entitlement or budget denial, a pre-call
        hook's rejection, a response-cache hit or an identical job in flight), else
        None: `route` makes the calls, then `settle` fills the cache."""
        denied = entitlement.pre_check(self.ctx, self.claim)
        if denied is not None:
            return denied  # its Lago subscription may not run jobs: no provider call
        over_budget = budget_check.pre_check(self.ctx, self.claim)
        if over_budget is not None:
            return over_budget  # its key or customer has used up a budget
        checked = hooks.before_call(self.ctx.hooks, self.claim)
        if isinstance(checked, Outcome):
            return checked  # rejected by a pre-call hook: no provider call
        self.claim = checked
        if self.ctx.fair is not None:  # the key's tenant (a cached read): here, off the loop
            self.turn = FairTurn(self.ctx, self.claim, self.ctx.shares.share(self.claim.owner))
        timeout = self.ctx.config.router_settings.timeout
        self.cache = ResponseCache.open(self.ctx.redis, self.claim, timeout)
        if self.cache is not None:
            early = self.cache.lookup(INLINE_WAIT_BUDGET_S - self.inline_waited)
            self.inline_waited += self.cache.waited_s
            if isinstance(early, CacheWait):
                return Deferral(early.due_s, early.reason)
            if early is not None:
                return early
        return None

    def settle(self, result: Outcome | Deferral) -> None:
        """After `route`: a successful response fills the cache this job holds."""
        if self.cache is not None:
            self.cache.settle(result)

    async def route(self) -> Outcome | Deferral:
        """The calls (through `ctx.calls`): the model group, then its fallbacks, until one
        ends the job; a group that is only out of capacity leaves a wait, taken when no
        group could end it."""
        if self.claim.request.get("stream") and self.claim.attempt > 1:
            lost = await interrupted(self.ctx.calls.streams, self.claim)
            if lost is not None:
                return lost
        settings = self.ctx.config.router_settings
        # An alias (`model_group_alias`) runs as, and is billed to, its real group; the
        # job keeps the name it asked for (`model`).
        requested = settings.model_group_alias.get(self.claim.model, self.claim.model)
        groups = [requested]
        visited: set[str] = set()
        waits: list[Deferral] = []
        while groups:
            group = groups.pop(0)
            if group in visited:
                continue
            visited.add(group)
            try:
                end = await self._run_group(group)
            except NoDeploymentError as exc:
                if group == requested:
                    return _failed(str(exc), "model", "model_not_found", 404)
                log.warning("job %s: fallback %s skipped: %s", self.claim.job_id, group, exc)
                continue
            if isinstance(end, Outcome):
                return end
            if end.wait is not None:
                waits.append(end.wait)
            groups += [g for g in settings.fallbacks_for(end.then, group) if g not in visited]
        return self._give_up(waits)

    async def _run_group(self, group: str) -> Outcome | Exhausted:
        """Calls to the group's deployments until one answers, the request is refused,
        the group's retries are spent, or no deployment has capacity now."""
        transient = rate_limited = 0
        error: ProviderError | None = None  # this group's last, in this claim
        turn = await self.turn.admit(group)
        if turn is not None:  # others wait for the group's capacity, and go first
            return Exhausted(FallbackList.GENERAL, Deferral(time.time(), f"{group}: {TURN}", turn))
        while True:
            if self.tried and await self._cancelled():
                return Outcome(JobStatus.CANCELLED)
            refused_here = error is not None and failure_kind(error) is FailureKind.DEPLOYMENT
            if refused_here and self._all_tried(group):  # each deployment refused it
                return await self._exhausted(group, error, rate_limited)
            choice = await self.ctx.router.choose(self._request(group), self.tried)
            if isinstance(choice, Saturated):
                if self.turn.on:  # fair share: wait in the group's room, not on a timer
                    if await self.turn.wait_here(group, *due_of(choice)):
                        continue
                elif await self._wait_inline(choice.wait_ms / 1000):
                    continue
                return await self._saturated(group, choice, error, rate_limited)
            result = await self._call(group, choice)
            await self.turn.call_ended(group)
            if isinstance(result, Outcome):
                return result
            error = result
            kind = failure_kind(error)
            if kind is FailureKind.REFUSED:
                return _from_error(error)
            if kind is FailureKind.NEEDS_FALLBACK:
                return Exhausted(fallback_list_for(error))
            if kind is FailureKind.CAPACITY:
                rate_limited += 1
                if rate_limited > self._retries(error):
                    return await self._exhausted(group, error, rate_limited)
            elif kind is FailureKind.TRANSIENT:
                transient += 1
                long_wait = (error.retry_after or 0) > INLINE_WAIT_S  # "come back later"
                if transient > self._retries(error) or long_wait:
                    return await self._exhausted(group, error, rate_limited + int(long_wait))
                await self._backoff(transient, error.retry_after)

    async def _saturated(
        self, group: str, choice: Saturated, error: ProviderError | None, rate_limited: int
    ) -> Exhausted:
        """No deployment can take a call now. A limit (rpm, tpm, parallel calls) or
        others' failures are capacity to wait for; cooldowns that follow this claim's
        own failures are not, unless the group is also being throttled."""
        if set(choice.reasons.values()) & CAPACITY_REASONS or error is None:
            return Exhausted(FallbackList.GENERAL, self._limit_wait(group, choice))
        if failure_kind(error) is FailureKind.CAPACITY:
            return Exhausted(FallbackList.GENERAL, self._limit_wait(group, choice))
        return await self._exhausted(group, error, rate_limited)

    async def _exhausted(
        self, group: str, error: ProviderError | None, rate_limited: int
    ) -> Exhausted:
        """The group failed this claim. If it is short of capacity too (a 429 now or
        within THROTTLED_RECENTLY_MS), a deployment may still serve it: wait for that;
        otherwise go on to the fallbacks, and the last error if they fail too."""
        throttled = rate_limited > 0 or await self.ctx.router.throttled_recently(
            group, self.claim.tags
        )
        if not throttled or error is None:
            return Exhausted(FallbackList.GENERAL)
        return Exhausted(FallbackList.GENERAL, self._capacity_wait(group, error))

    def _limit_wait(self, group: str, choice: Saturated) -> Deferral:
        reasons = ", ".join(f"{d} {r}" for d, r in choice.reasons.items())
        due, by_call_end = due_of(choice)
        return Deferral(due, f"{group}: {reasons}", self.turn.room_wait(group, due, by_call_end))

    def _capacity_wait(self, group: str, error: ProviderError) -> Deferral:
        """Wait for the provider's Retry-After, else a backoff that grows per claim up
        to MAX_CAPACITY_RECHECK_S: a throttled group frees up within seconds, and a job
        should not sleep long past it."""
        backoff = min(MAX_CAPACITY_RECHECK_S, BACKOFF_BASE_S * 2 ** min(self.claim.attempt, 10))
        due = time.time() + max(backoff * self.ctx.rng.uniform(0.5, 1.0), error.retry_after or 0)
        reason = f"{group}: the provider asked to wait ({error.status_code})"
        return Deferral(due, reason, self.turn.room_wait(group, due, by_call_end=False))

    async def _call(self, group: str, admitted: Admitted) -> Outcome | ProviderError:
        """The call's successful Outcome (post-call hooks applied), or its error; a
        streamed call that broke off or was cancelled midway ends the job here."""
        deployment = admitted.deployment
        bind_log_context(deployment=deployment.id)
        self.tried.add(deployment.id)
        params = deployment.litellm_params
        options = CallOptions(
            timeout=params.timeout or self.ctx.config.router_settings.timeout,
            drop_params=params.drop_params or self.ctx.config.drop_params,
        )
        started, t0 = utcnow(), time.monotonic()
        ended: Outcome | None = None
        try:
            result = await self._send(provider_for(params.provider), admitted, options)
        except BrokenStream as broken:
            exc, ended = broken.error, _from_error(broken.error, broken.usage, deployment.id, group)
        except StoppedStream as stopped:
            await self._report(self.ctx.router.release(admitted))
            self._record(group, deployment.id, started, time.monotonic() - t0, None)
            return Outcome(JobStatus.CANCELLED, deployment.id, group, usage=stopped.usage)
        except ProviderError as caught:
            exc = caught
        else:
            return await self._succeeded(group, admitted, started, t0, result)
        latency = time.monotonic() - t0
        await self._report(self.ctx.router.report_failure(admitted, exc))
        self._record(group, deployment.id, started, latency, exc)
        self.last_error = exc
        log.info("job %s: %s failed: %s", self.claim.job_id, deployment.id, type(exc).__name__)
        return exc if ended is None else ended

    async def _send(
        self, provider: Provider, admitted: Admitted, options: CallOptions
    ) -> ProviderResult:
        """One call: whole, or streamed (workers.streaming) when the job asks for it."""
        calls, deployment, claim = self.ctx.calls, admitted.deployment, self.claim
        if claim.kind == EMBEDDINGS:
            exchange = provider.embed_exchange(deployment, claim.request, options)
            return await calls.send(exchange, provider.name)
        # The deployment's call defaults (LiteLLM's `litellm_params`) where the job sets none.
        request = deployment.litellm_params.with_defaults(claim.request)
        if not request.get("stream"):
            exchange = provider.chat_exchange(deployment, request, options)
            return await calls.send(exchange, provider.name)
        body = without_stream(request)
        streamed = StreamedCall(calls.streams, claim.job_id, claim.attempt, body, claim.model)
        stream = provider.chat_stream(deployment, body, options)
        return await streamed.run(calls.stream(stream, provider.name))

    async def _succeeded(
        self, group: str, admitted: Admitted, started: Any, t0: float, result: ProviderResult
    ) -> Outcome:
        deployment = admitted.deployment
        latency = time.monotonic() - t0
        usage = result.usage
        await self._report(
            self.ctx.router.report_success(
                admitted, latency, usage.completion_tokens, usage.total_tokens
            )
        )
        self._record(group, deployment.id, started, latency, None)
        success = Outcome(
            JobStatus.SUCCEEDED,
            deployment_id=deployment.id,
            served_group=group,
            response=result.response,
            usage=usage,
        )
        if not self.ctx.hooks.post_call:
            return success
        # The fleet's own code, which may block: on a thread, never on the loop.
        return await asyncio.to_thread(hooks.after_call, self.ctx.hooks, self.claim, success)

    def _give_up(self, waits: list[Deferral]) -> Outcome | Deferral:
        """Every group and fallback is done for this claim. A group out of capacity
        makes the job wait for the earliest; otherwise the last error ends it."""
        error = self.last_error
        if waits:
            due = min(w.due_s for w in waits)
            reason = "; ".join(w.reason for w in waits)
            if error is not None:
                reason += f"; last error {type(error).__name__}: {error.message}"
            # the first group's room (the one asked for, before its fallbacks)
            room = next((w.room for w in waits if w.room is not None), None)
            return Deferral(due, reason[:2000], room)
        if error is not None:
            return _from_error(error)
        return _failed("no deployment could take the job", "model", "no_deployment", 503)

    def _all_tried(self, group: str) -> bool:
        candidates = self.ctx.router.candidates(group, self.claim.tags)
        return all(d.id in self.tried for d in candidates)

    async def _report(self, report: Coroutine[Any, Any, object]) -> None:
        """Tell the router how a call ended. Its state is soft (a lease it does not hear
        about lapses by itself): Redis being away must not cost the answer in hand."""
        try:
            await report
        except redis.RedisError as exc:
            log.warning(
                "job %s: call not reported to the router: %s", self.claim.job_id, type(exc).__name__
            )

    def _retries(self, error: ProviderError) -> int:
        return self.ctx.config.router_settings.retries_for(error.policy_name)

    async def _wait_inline(self, wait_s: float) -> bool:
        """Sleep a short wait for capacity in place, within the claim's budget."""
        if wait_s > INLINE_WAIT_S or self.inline_waited + wait_s > INLINE_WAIT_BUDGET_S:
            return False
        self.inline_waited += wait_s
        await self.ctx.calls.sleep(wait_s)
        return True

    def _request(self, group: str) -> Request:
        timeout = self.ctx.config.router_settings.timeout
        return Request(group, self.claim.tags, estimate_request_tokens(self.claim.request), timeout)

    def _record(
        self, group: str, deployment_id: str, started: Any, latency: float, error: Any
    ) -> None:
        metrics.attempt_done(deployment_id, latency, error)
        self.records.append(
            AttemptRecord(
                model_group=group,
                deployment_id=deployment_id,
                error_class=type(error).__name__ if error else None,
                status_code=None if error is None else error.status_code,
                latency_ms=int(latency * 1000),
                started_at=started,
            )
        )

    async def _backoff(self, calls: int, retry_after: float | None) -> None:
        """Before the next try of a transient failure: exponential with full jitter, at
        least a (short) Retry-After, at most MAX_BACKOFF_S; a longer Retry-After was
        turned into a wait for capacity by the caller."""
        delay = self.ctx.rng.uniform(0, BACKOFF_BASE_S * 2 ** (calls - 1))
        await self.ctx.calls.sleep(min(max(delay, retry_after or 0), MAX_BACKOFF_S))

    async def _cancelled(self) -> bool:
        """Asked to cancel (the row says; a blocking read: off the loop)."""
        return await asyncio.to_thread(is_cancel_requested, self.ctx.sessions, self.claim.job_id)


def _from_error(
    error: ProviderError,
    usage: Usage | None = None,
    deployment_id: str | None = None,
    group: str | None = None,
) -> Outcome:
    return Outcome(JobStatus.FAILED, deployment_id, group, error=error.to_error(), usage=usage)


def _failed(message: str, param: str, code: str, status: int) -> Outcome:
    return Outcome(
        JobStatus.FAILED,
        error={
            "message": message,
            "type": "invalid_request_error",
            "param": param,
            "code": code,
            "status_code": status,
        },
    )
