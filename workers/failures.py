"""What a provider error means for a job (docs/ROUTING.md, "What a failure means"):
wait for capacity, fail at once, fall back, or retry."""

from __future__ import annotations

from enum import Enum, StrEnum

from workers.providers import ProviderError
from workers.providers.errors import (
    BadRequestError,
    ContentPolicyError,
    ContextWindowExceededError,
    RateLimitedError,
)

__all__ = ["CAPACITY_REASONS", "FailureKind", "FallbackList", "failure_kind", "fallback_list_for"]


#: Saturated reasons that are limits being respected, not deployments out of order.
CAPACITY_REASONS = frozenset({"rpm", "tpm", "max_parallel"})


class FallbackList(StrEnum):
    """The router_settings list a group's failure continues with."""

    GENERAL = "fallbacks"
    CONTEXT_WINDOW = "context_window_fallbacks"
    CONTENT_POLICY = "content_policy_fallbacks"


class FailureKind(Enum):
    """What a provider error means for the job (docs/ROUTING.md, "What a failure means")."""

    #: 429: wait for capacity until the deadline; never fails the job.
    CAPACITY = "capacity"
    #: 400 / 422: the request is at fault; the job fails at once.
    REFUSED = "refused"
    #: Context window, content policy: their own fallback list, then fail.
    NEEDS_FALLBACK = "needs_fallback"
    #: 401 / 403 / 404: this deployment cannot serve it; the others, then the
    #: fallbacks, then fail with the provider's status and message.
    DEPLOYMENT = "deployment"
    #: 5xx, timeouts, resets, malformed replies: `num_retries` with backoff across the
    #: group's deployments, then the fallbacks, then fail with the last error.
    TRANSIENT = "transient"


def failure_kind(error: ProviderError) -> FailureKind:
    if isinstance(error, RateLimitedError):
        return FailureKind.CAPACITY
    if isinstance(error, ContextWindowExceededError | ContentPolicyError):
        return FailureKind.NEEDS_FALLBACK
    if isinstance(error, BadRequestError):
        return FailureKind.REFUSED
    if error.retryable:
        return FailureKind.TRANSIENT
    return FailureKind.DEPLOYMENT


def fallback_list_for(error: ProviderError) -> FallbackList:
    if isinstance(error, ContextWindowExceededError):
        return FallbackList.CONTEXT_WINDOW
    if isinstance(error, ContentPolicyError):
        return FallbackList.CONTENT_POLICY
    return FallbackList.GENERAL
