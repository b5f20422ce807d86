"""The calls of one claimed job: route, call, report, retry, fall back — or decide to
wait for capacity. Returns an Outcome to store or a Deferral; writes nothing itself."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any

from models.batch_lines import estimate_request_tokens
from models.contract import EMBEDDINGS
from models.logging_setup import bind_log_context
from models.tables import JobStatus, utcnow
from workers import hooks, metrics
from workers.accounting import budget_check, entitlement
from workers.cache import CacheWait, ResponseCache
from workers.jobstore import AttemptRecord, Claim, Outcome, is_cancel_requested
from workers.providers import CallOptions, ProviderError, provider_for
from workers.providers.errors import (
    BadRequestError,
    ContentPolicyError,
    ContextWindowExceededError,
)
from workers.resources import WorkerContext
from workers.router import Admitted, NoDeploymentError, Request, Saturated

__all__ = ["Deferral", "JobRun"]

log = logging.getLogger(__name__)

BACKOFF_BASE_S = 0.5
#: Waits up to this long are slept in place; longer ones give the slot back.
INLINE_WAIT_S = 1.0
INLINE_WAIT_BUDGET_S = 3.0
#: How long a job that keeps failing waits between claims, at most.
MAX_DEFER_S = 60.0


@dataclass(frozen=True, slots=True)
class Deferral:
    """Try again at `due_s` (epoch seconds); `reason` says what the job waits for."""

    due_s: float
    reason: str


@dataclass
class JobRun:
    ctx: WorkerContext
    claim: Claim
    records: list[AttemptRecord] = field(default_factory=list)
    tried: set[str] = field(default_factory=set)
    inline_waited: float = 0.0
    last_error: ProviderError | None = None
    waits: list[str] = field(default_factory=list)
    #: The earliest time some deployment said it may have capacity again.
    next_due: float | None = None
    success: Outcome | None = None

    def execute(self) -> Outcome | Deferral:
        """The job's outcome; a response-cache hit (or a wait for an identical job in
        flight) skips the calls, and a successful call fills the cache."""
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
        timeout = self.ctx.config.router_settings.timeout
        cache = ResponseCache.open(self.ctx.redis, self.claim, timeout)
        if cache is not None:
            early = cache.lookup(INLINE_WAIT_BUDGET_S - self.inline_waited)
            self.inline_waited += cache.waited_s
            if isinstance(early, CacheWait):
                return Deferral(early.due_s, early.reason)
            if early is not None:
                return early
        result = self._route()
        if cache is not None:
            cache.settle(result)
        return result

    def _route(self) -> Outcome | Deferral:
        settings = self.ctx.config.router_settings
        groups = [self.claim.model]
        visited: set[str] = set()
        while groups:
            group = groups.pop(0)
            if group in visited:
                continue
            visited.add(group)
            try:
                result = self._run_group(group)
            except NoDeploymentError as exc:
                if group == self.claim.model:
                    return _failed(str(exc), "model", "model_not_found", 404)
                log.warning("job %s: fallback %s skipped: %s", self.claim.job_id, group, exc)
                continue
            if isinstance(result, Outcome):
                return result
            kind = result  # the fallback list to continue with
            groups += [g for g in settings.fallbacks_for(kind, group) if g not in visited]
        return self._give_up()

    def _run_group(self, group: str) -> Outcome | str:
        """An Outcome, or which fallback list applies next."""
        router = self.ctx.router
        calls = 0
        while True:
            if self.tried and self._cancelled():
                return Outcome(JobStatus.CANCELLED)
            choice = router.choose(self._request(group), self.tried)
            if isinstance(choice, Saturated):
                wait_s = choice.wait_ms / 1000
                if wait_s <= INLINE_WAIT_S and self.inline_waited + wait_s <= INLINE_WAIT_BUDGET_S:
                    self.inline_waited += wait_s
                    time.sleep(wait_s)
                    continue
                reasons = ", ".join(f"{d} {r}" for d, r in choice.reasons.items())
                self.waits.append(f"{group}: {reasons}")
                due = time.time() + wait_s
                self.next_due = due if self.next_due is None else min(self.next_due, due)
                return "fallbacks"
            calls += 1
            error = self._call(group, choice)
            if error is None:
                assert self.success is not None
                return self.success
            if isinstance(error, ContextWindowExceededError):
                return "context_window_fallbacks"
            if isinstance(error, ContentPolicyError):
                return "content_policy_fallbacks"
            if isinstance(error, BadRequestError):
                return _from_error(error)
            retries = self.ctx.config.router_settings.retries_for(error.policy_name)
            if calls > retries:
                return "fallbacks"
            if error.retryable:
                self._backoff(calls, error.retry_after)

    def _call(self, group: str, admitted: Admitted) -> ProviderError | None:
        deployment = admitted.deployment
        bind_log_context(deployment=deployment.id)
        self.tried.add(deployment.id)
        params = deployment.litellm_params
        provider = provider_for(params.provider)
        options = CallOptions(
            timeout=params.timeout or self.ctx.config.router_settings.timeout,
            drop_params=params.drop_params or self.ctx.config.drop_params,
        )
        call = provider.embed if self.claim.kind == EMBEDDINGS else provider.chat
        started, t0 = utcnow(), time.monotonic()
        try:
            result = call(self.ctx.calls.client(), deployment, self.claim.request, options)
        except ProviderError as exc:
            latency = time.monotonic() - t0
            self.ctx.router.report_failure(admitted, exc)
            self._record(group, deployment.id, started, latency, exc)
            self.last_error = exc
            log.info("job %s: %s failed: %s", self.claim.job_id, deployment.id, type(exc).__name__)
            return exc
        latency = time.monotonic() - t0
        usage = result.usage
        self.ctx.router.report_success(
            admitted, latency, usage.completion_tokens, usage.total_tokens
        )
        self._record(group, deployment.id, started, latency, None)
        success = Outcome(
            JobStatus.SUCCEEDED,
            deployment_id=deployment.id,
            served_group=group,
            response=result.response,
            usage=usage,
        )
        self.success = hooks.after_call(self.ctx.hooks, self.claim, success)
        return None

    def _give_up(self) -> Outcome | Deferral:
        """Every group and fallback is exhausted for now. Retryable trouble (errors or
        no capacity) waits for the next chance; a request error fails the job."""
        error = self.last_error
        if error is not None and not error.retryable and not self.waits:
            return _from_error(error)
        backoff = min(MAX_DEFER_S, BACKOFF_BASE_S * 2 ** min(self.claim.attempt, 10))
        due = self.next_due
        if due is None:
            wait = max(backoff * self.ctx.rng.uniform(0.5, 1.0), (error and error.retry_after) or 0)
            due = time.time() + wait
        reason = "; ".join(self.waits) or "no capacity"
        if error is not None:
            reason += f"; last error {type(error).__name__}: {error.message}"
        return Deferral(due, reason[:2000])

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

    def _backoff(self, calls: int, retry_after: float | None) -> None:
        """Exponential with full jitter, at least Retry-After; long waits are not slept
        here: the next choose() will see the cooldown and the job will wait outside."""
        delay = self.ctx.rng.uniform(0, BACKOFF_BASE_S * 2 ** (calls - 1))
        if retry_after is not None:
            delay = max(delay, retry_after)
        if delay <= INLINE_WAIT_S:
            time.sleep(delay)

    def _cancelled(self) -> bool:
        return is_cancel_requested(self.ctx.sessions, self.claim.job_id)


def _from_error(error: ProviderError) -> Outcome:
    return Outcome(JobStatus.FAILED, error=error.to_error())


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
