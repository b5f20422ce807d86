"""The one error tree every provider maps into, at one boundary per provider.

    ProviderError                      retryable  cools deployment
    ├── BadRequestError                    no         no
    │   ├── ContextWindowExceededError     no         no
    │   └── ContentPolicyError             no         no
    ├── AuthenticationError                no         yes
    ├── PermissionDeniedError              no         yes
    ├── NotFoundError                      no         yes
    ├── RateLimitedError (retry_after)     yes        yes
    ├── ProviderTimeoutError               yes        yes
    ├── UnavailableError (5xx)             yes        yes
    ├── ProviderConnectionError            yes        yes
    │   └── StaleConnectionError           yes        no
    └── MalformedResponseError             yes        yes

Request errors (the caller's fault) never cool a deployment; a deployment that
rejects our credentials or does not know the model is useless until fixed, so it
cools without being retried on the same deployment.
"""

from __future__ import annotations

from typing import Any, ClassVar

__all__ = [
    "AuthenticationError",
    "BadRequestError",
    "ContentPolicyError",
    "ContextWindowExceededError",
    "MalformedResponseError",
    "NotFoundError",
    "PermissionDeniedError",
    "ProviderConnectionError",
    "ProviderError",
    "ProviderTimeoutError",
    "RateLimitedError",
    "StaleConnectionError",
    "UnavailableError",
]


class ProviderError(Exception):
    retryable: ClassVar[bool] = False
    cools_down: ClassVar[bool] = False
    #: OpenAI error `type`, and the HTTP status our API answers with: the provider's own
    #: when it answered one (`status=`), else the class's.
    error_type: ClassVar[str] = "api_error"
    status_code: int = 502
    #: LiteLLM's name for the class in retry_policy / allowed_fails_policy keys.
    policy_name: ClassVar[str] = "InternalServerError"

    def __init__(
        self,
        message: str,
        *,
        provider: str,
        param: str | None = None,
        code: str | None = None,
        retry_after: float | None = None,
        status: int | None = None,
    ) -> None:
        super().__init__(message)
        if status is not None:
            self.status_code = status
        self.message = message
        self.provider = provider
        self.param = param
        self.code = code
        self.retry_after = retry_after

    def to_error(self) -> dict[str, Any]:
        """OpenAI's error shape with the HTTP status, as stored on the job."""
        return {
            "message": self.message,
            "type": self.error_type,
            "param": self.param,
            "code": self.code,
            "status_code": self.status_code,
        }


class BadRequestError(ProviderError):
    policy_name = "BadRequestError"
    error_type = "invalid_request_error"
    status_code = 400


class ContextWindowExceededError(BadRequestError):
    """Answered by `context_window_fallbacks`."""


class ContentPolicyError(BadRequestError):
    """Answered by `content_policy_fallbacks`."""

    policy_name = "ContentPolicyViolationError"


class AuthenticationError(ProviderError):
    policy_name = "AuthenticationError"
    cools_down = True
    error_type = "authentication_error"


class PermissionDeniedError(ProviderError):
    policy_name = "AuthenticationError"
    cools_down = True
    error_type = "permission_error"


class NotFoundError(ProviderError):
    policy_name = "NotFoundError"
    cools_down = True
    error_type = "not_found_error"


class RateLimitedError(ProviderError):
    policy_name = "RateLimitError"
    retryable = True
    cools_down = True
    error_type = "rate_limit_error"
    status_code = 429


class ProviderTimeoutError(ProviderError):
    policy_name = "TimeoutError"
    retryable = True
    cools_down = True
    error_type = "timeout_error"
    status_code = 504


class UnavailableError(ProviderError):
    retryable = True
    cools_down = True


class ProviderConnectionError(ProviderError):
    retryable = True
    cools_down = True


class StaleConnectionError(ProviderConnectionError):
    """The server closed a kept-alive connection as the request went out: retry, but
    do not hold it against the deployment's health."""

    cools_down = False


class MalformedResponseError(ProviderError):
    retryable = True
    cools_down = True
