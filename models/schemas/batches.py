"""Batches across the HTTP border (OpenAI's Batch object), and the output lines both
the API (partial output) and the workers (output files) write."""

from __future__ import annotations

import datetime as dt
from typing import Any, Literal

from pydantic import BaseModel, Field, field_validator

from models.tables import Batch, Job, JobStatus
from models.wire import parse_duration

__all__ = [
    "BATCH_ENDPOINTS",
    "BatchCreate",
    "BatchPublic",
    "BatchesPublic",
    "RequestCounts",
    "output_line",
]

BATCH_ENDPOINTS = ("/v1/chat/completions", "/v1/embeddings")


class BatchCreate(BaseModel):
    input_file_id: str = Field(min_length=1)
    endpoint: Literal["/v1/chat/completions", "/v1/embeddings"]
    completion_window: str = Field(
        default="24h",
        max_length=16,
        description="'24h', or any duration such as '90s', '1h', '7d'.",
    )
    metadata: dict[str, str] | None = Field(default=None, max_length=16)
    webhook_url: str | None = Field(default=None, pattern=r"^https?://")

    @field_validator("completion_window")
    @classmethod
    def _window(cls, value: str) -> str:
        parse_duration(value)
        return value


class RequestCounts(BaseModel):
    total: int
    completed: int
    failed: int


class BatchError(BaseModel):
    code: str
    message: str
    line: int | None = None
    param: str | None = None


class BatchErrors(BaseModel):
    object: Literal["list"] = "list"
    data: list[BatchError]


class BatchPublic(BaseModel):
    """Every field of OpenAI's Batch, always present (explicit nulls)."""

    id: str
    object: Literal["batch"] = "batch"
    endpoint: str
    errors: BatchErrors | None
    input_file_id: str
    completion_window: str
    status: str
    output_file_id: str | None
    error_file_id: str | None
    created_at: int
    in_progress_at: int | None
    expires_at: int | None
    finalizing_at: int | None
    completed_at: int | None
    failed_at: int | None
    expired_at: int | None
    cancelling_at: int | None
    cancelled_at: int | None
    request_counts: RequestCounts
    metadata: dict[str, Any] | None
    model: str | None
    usage: dict[str, Any] | None

    @classmethod
    def from_row(
        cls, batch: Batch, counts: RequestCounts, usage: dict[str, Any] | None
    ) -> BatchPublic:
        return cls(
            id=batch.id,
            endpoint=batch.endpoint,
            errors=BatchErrors(data=[BatchError(**e) for e in batch.errors])
            if batch.errors
            else None,
            input_file_id=batch.input_file_id or "",
            completion_window=batch.completion_window,
            status=batch.status,
            output_file_id=batch.output_file_id,
            error_file_id=batch.error_file_id,
            created_at=_ts(batch.created_at) or 0,
            in_progress_at=_ts(batch.in_progress_at),
            expires_at=_ts(batch.expires_at),
            finalizing_at=_ts(batch.finalizing_at),
            completed_at=_ts(batch.completed_at),
            failed_at=_ts(batch.failed_at),
            expired_at=_ts(batch.expired_at),
            cancelling_at=_ts(batch.cancelling_at),
            cancelled_at=_ts(batch.cancelled_at),
            request_counts=counts,
            metadata=batch.meta,
            model=batch.model,
            usage=usage,
        )


class BatchesPublic(BaseModel):
    object: Literal["list"] = "list"
    data: list[BatchPublic]
    first_id: str | None
    last_id: str | None
    has_more: bool


def counts_from_statuses(total: int, by_status: dict[str, int]) -> RequestCounts:
    failed = sum(
        by_status.get(s, 0) for s in (JobStatus.FAILED, JobStatus.EXPIRED, JobStatus.CANCELLED)
    )
    return RequestCounts(
        total=total, completed=by_status.get(JobStatus.SUCCEEDED, 0), failed=failed
    )


def usage_from_sums(prompt: int, completion: int, cached: int, reasoning: int) -> dict[str, Any]:
    """OpenAI's batch `usage` object."""
    return {
        "input_tokens": prompt,
        "input_tokens_details": {"cached_tokens": cached},
        "output_tokens": completion,
        "output_tokens_details": {"reasoning_tokens": reasoning},
        "total_tokens": prompt + completion,
    }


_ENDED_WITHOUT_RUNNING = {
    JobStatus.EXPIRED: (
        "batch_expired",
        "This request could not be executed before the completion window expired.",
    ),
    JobStatus.CANCELLED: ("batch_cancelled", "This request was cancelled with its batch."),
}


def output_line(job: Job) -> tuple[Literal["output", "error"], dict[str, Any]]:
    """The line of a finished batch job, and which file it belongs in: succeeded
    requests go to the output file, everything else to the error file."""
    line: dict[str, Any] = {"id": f"batch_req_{job.id}", "custom_id": job.custom_id}
    if job.status == JobStatus.SUCCEEDED:
        line["response"] = {"status_code": 200, "request_id": job.id, "body": job.response}
        line["error"] = None
        return "output", line
    error = dict(job.error or {})
    if job.status == JobStatus.FAILED:
        status = int(error.pop("status_code", None) or 500)
        body = {"error": {k: error.get(k) for k in ("message", "type", "param", "code")}}
        line["response"] = {"status_code": status, "request_id": job.id, "body": body}
        line["error"] = None
        return "error", line
    code, message = _ENDED_WITHOUT_RUNNING.get(
        JobStatus(job.status), ("batch_failed", error.get("message", "not run"))
    )
    line["response"] = None
    line["error"] = {"code": code, "message": message}
    return "error", line


def _ts(value: dt.datetime | None) -> int | None:
    return int(value.timestamp()) if value is not None else None
