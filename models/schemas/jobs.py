"""Jobs across the HTTP border: `JobCreate` in, `JobPublic` / `JobsPublic` out."""

from __future__ import annotations

import datetime as dt
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, HttpUrl, field_validator, model_validator

from models.accounting import money
from models.contract import PRIORITY_DEFAULT, PRIORITY_MAX, PRIORITY_MIN
from models.schemas.chat import ChatCompletionRequest
from models.schemas.errors import ErrorBody
from models.tables import Job, JobAttempt, utcnow
from models.wire import DEADLINE_SKEW, BoundedDatetime, parse_duration

__all__ = ["JobCreate", "JobPublic", "JobsPublic"]


#: The job's own options, never sent to a provider.
JOB_FIELDS = frozenset(
    {"cache", "background", "priority", "deadline", "completion_window", "metadata"}
    | {"webhook_url"}
)


class JobCreate(ChatCompletionRequest):
    """An OpenAI chat-completions body plus the job's own options."""

    priority: int = Field(default=PRIORITY_DEFAULT, ge=PRIORITY_MIN, le=PRIORITY_MAX)
    deadline: BoundedDatetime | None = Field(
        default=None, description="Absolute time after which the job ends `expired`."
    )
    completion_window: str | None = Field(
        default=None, max_length=16, description="Relative deadline such as '1h' or '24h'."
    )
    metadata: dict[str, str] | None = Field(default=None, max_length=16)
    webhook_url: HttpUrl | None = None

    @field_validator("completion_window")
    @classmethod
    def _window_is_a_duration(cls, value: str | None) -> str | None:
        if value is not None:
            parse_duration(value)
        return value

    @field_validator("deadline")
    @classmethod
    def _deadline_ahead(cls, value: dt.datetime | None) -> dt.datetime | None:
        if value is not None and value < utcnow() - DEADLINE_SKEW:
            raise ValueError("is in the past")
        return value

    @model_validator(mode="after")
    def _one_deadline(self) -> JobCreate:
        if self.deadline is not None and self.completion_window is not None:
            raise ValueError("give either `deadline` or `completion_window`, not both")
        return self

    def effective_deadline(self, now: dt.datetime) -> dt.datetime | None:
        if self.completion_window is not None:
            return now + parse_duration(self.completion_window)
        return self.deadline

    def provider_body(self, exclude: frozenset[str] = JOB_FIELDS) -> dict[str, Any]:
        return super().provider_body(exclude)


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    cached_tokens: int = Field(description="Prompt tokens read from the provider's cache.")
    cache_creation_tokens: int = Field(description="Prompt tokens written to the cache.")
    reasoning_tokens: int = Field(description="Completion tokens spent reasoning.")


class AttemptPublic(BaseModel):
    model_group: str
    deployment: str
    error_class: str | None
    status_code: int | None
    latency_ms: int
    started_at: int


class JobPublic(BaseModel):
    model_config = ConfigDict(from_attributes=False)

    id: str
    object: Literal["job"] = "job"
    status: str
    model: str
    priority: int
    attempts: int = Field(description="Provider calls made for this job.")
    deployment: str | None
    served_group: str | None = Field(description="The model group that finally served it.")
    waiting_until: int | None = Field(description="While waiting for capacity: next try.")
    wait_reason: str | None
    created_at: int
    started_at: int | None
    finished_at: int | None
    deadline: int | None
    metadata: dict[str, Any] | None
    usage: Usage | None
    cached: bool = Field(
        default=False, description="Served from the response cache: no provider call, cost 0."
    )
    cost: str | None = Field(
        default=None,
        description="What the job's calls cost (USD, decimal digits); null until priced, "
        "or when no price is known for its model.",
    )
    cost_source: str | None = Field(
        default=None,
        description='Where the cost came from: "override" (the deployment\'s prices), '
        '"genai-prices" (the maintained price list), "cache".',
    )
    result: dict[str, Any] | None = Field(description="The `chat.completion` object.")
    error: ErrorBody | None
    batch_id: str | None
    custom_id: str | None
    attempt_log: list[AttemptPublic] | None = Field(
        default=None, description="Every provider call (on single-job reads)."
    )

    @classmethod
    def from_row(cls, job: Job, attempts: list[JobAttempt] | None = None) -> JobPublic:
        usage = None
        if job.total_tokens is not None:
            usage = Usage(
                prompt_tokens=job.prompt_tokens or 0,
                completion_tokens=job.completion_tokens or 0,
                total_tokens=job.total_tokens,
                cached_tokens=job.cached_tokens or 0,
                cache_creation_tokens=job.cache_creation_tokens or 0,
                reasoning_tokens=job.reasoning_tokens or 0,
            )
        return cls(
            id=job.id,
            status=job.status,
            model=job.model,
            priority=job.priority,
            attempts=job.calls or 0,
            deployment=job.deployment_id,
            served_group=job.served_group,
            waiting_until=_ts(job.not_before) if job.status == "queued" else None,
            wait_reason=job.wait_reason if job.status in ("queued", "expired") else None,
            created_at=_ts(job.created_at) or 0,
            started_at=_ts(job.started_at),
            finished_at=_ts(job.finished_at),
            deadline=_ts(job.deadline),
            metadata=job.meta,
            usage=usage,
            cached=bool(job.cached),
            cost=None if job.cost is None else money(job.cost),
            cost_source=job.cost_source if job.cost is not None else None,
            result=job.response,
            error=ErrorBody(**job.error) if job.error else None,
            batch_id=job.batch_id,
            custom_id=job.custom_id,
            attempt_log=None
            if attempts is None
            else [
                AttemptPublic(
                    model_group=a.model_group,
                    deployment=a.deployment_id,
                    error_class=a.error_class,
                    status_code=a.status_code,
                    latency_ms=a.latency_ms,
                    started_at=_ts(a.started_at) or 0,
                )
                for a in attempts
            ],
        )


class JobsPublic(BaseModel):
    object: Literal["list"] = "list"
    data: list[JobPublic]
    first_id: str | None
    last_id: str | None
    has_more: bool


def _ts(value: dt.datetime | None) -> int | None:
    return int(value.timestamp()) if value is not None else None
