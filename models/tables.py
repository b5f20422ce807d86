"""SQLAlchemy 2 tables. The database row is the truth about every job."""

from __future__ import annotations

import datetime as dt
import enum
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    JSON,
    ColumnElement,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    Numeric,
    Select,
    String,
    Text,
    TypeDecorator,
    select,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

__all__ = [
    "Base",
    "Batch",
    "File",
    "Job",
    "JobAttempt",
    "JobStatus",
    "UTCDateTime",
    "WebhookDelivery",
    "locked_in_id_order",
    "utcnow",
]


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class UTCDateTime(TypeDecorator[dt.datetime]):
    """Timezone-aware UTC datetimes on every backend (SQLite stores them naive)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: dt.datetime | None, dialect: Dialect) -> Any:
        if value is not None and value.tzinfo is None:
            raise ValueError("naive datetime given; use an aware UTC datetime")
        return value

    def process_result_value(self, value: Any, dialect: Dialect) -> dt.datetime | None:
        if value is not None and value.tzinfo is None:
            return value.replace(tzinfo=dt.UTC)
        return value


class Base(DeclarativeBase):
    pass


class JobStatus(enum.StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    EXPIRED = "expired"

    @property
    def is_terminal(self) -> bool:
        return self in TERMINAL_STATUSES


TERMINAL_STATUSES = frozenset(
    {JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED, JobStatus.EXPIRED}
)


class Job(Base):
    """One completion request and everything that happened to it.

    `attempts` doubles as the claim fence: a worker finishes a job only while the row
    still carries the attempt number it claimed, so a worker whose lease was taken over
    can never overwrite the newer attempt's outcome.
    """

    __tablename__ = "jobs"

    id: Mapped[str] = mapped_column(String(48), primary_key=True)
    status: Mapped[str] = mapped_column(String(16), default=JobStatus.QUEUED)
    kind: Mapped[str] = mapped_column(String(24), default="chat.completions")
    model: Mapped[str] = mapped_column(String(255))
    deployment_id: Mapped[str | None] = mapped_column(String(255))
    request: Mapped[dict[str, Any]] = mapped_column(JSON)
    response: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    error: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    priority: Mapped[int] = mapped_column(Integer, default=5)
    deadline: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    queued_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    published_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    started_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    finished_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    lease_until: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    cancel_requested: Mapped[bool] = mapped_column(default=False)
    prompt_tokens: Mapped[int | None] = mapped_column(Integer)
    completion_tokens: Mapped[int | None] = mapped_column(Integer)
    total_tokens: Mapped[int | None] = mapped_column(Integer)
    cached_tokens: Mapped[int | None] = mapped_column(Integer)
    cache_creation_tokens: Mapped[int | None] = mapped_column(Integer)
    reasoning_tokens: Mapped[int | None] = mapped_column(Integer)
    cost: Mapped[Decimal | None] = mapped_column(Numeric(20, 10))
    #: The W3C `traceparent` of the job's intake span (models.tracing); None untraced.
    trace_context: Mapped[str | None] = mapped_column(String(64))
    #: Where `cost` came from: "override" (the deployment's prices), "genai-prices",
    #: "cache" (served from the response cache: 0); None while unpriced.
    cost_source: Mapped[str | None] = mapped_column(String(32))
    owner_key: Mapped[str] = mapped_column(String(64))
    batch_id: Mapped[str | None] = mapped_column(String(48))
    custom_id: Mapped[str | None] = mapped_column(String(512))
    meta: Mapped[dict[str, Any] | None] = mapped_column("metadata", JSON)
    webhook_url: Mapped[str | None] = mapped_column(Text)
    #: The model group whose deployment finally served the job (after fallbacks).
    served_group: Mapped[str | None] = mapped_column(String(255))
    #: While waiting for capacity: when the job is due to be tried again, and why.
    not_before: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    wait_reason: Mapped[str | None] = mapped_column(Text)
    #: Provider calls made (rows in job_attempts); `attempts` counts claims.
    calls: Mapped[int] = mapped_column(Integer, default=0)
    #: Tokens charged to the key's tpm at intake; corrected by usage when it ends.
    estimated_tokens: Mapped[int | None] = mapped_column(Integer)
    #: Response-cache lifetime for this job (seconds); None = not cached.
    cache_ttl: Mapped[int | None] = mapped_column(Integer)
    #: Served from the response cache: no provider call, cost 0.
    cached: Mapped[bool] = mapped_column(default=False)

    __table_args__ = (
        Index("ix_jobs_owner_status_id", "owner_key", "status", "id"),
        Index("ix_jobs_owner_id", "owner_key", "id"),
        Index("ix_jobs_batch_status", "batch_id", "status"),
        Index("ix_jobs_status_published", "status", "published_at"),
        #: The operator page's last hour (producer_api.activity).
        Index("ix_jobs_finished", "finished_at"),
    )

    def openai_usage(self) -> dict[str, Any] | None:
        """The stored usage as OpenAI's `usage` object (None before any is stored)."""
        if self.total_tokens is None:
            return None
        return {
            "prompt_tokens": self.prompt_tokens or 0,
            "completion_tokens": self.completion_tokens or 0,
            "total_tokens": self.total_tokens,
            "prompt_tokens_details": {
                "cached_tokens": self.cached_tokens or 0,
                "cache_creation_tokens": self.cache_creation_tokens or 0,
            },
            "completion_tokens_details": {"reasoning_tokens": self.reasoning_tokens or 0},
        }


class JobAttempt(Base):
    """One provider call made for a job: which deployment, how it ended, how long."""

    __tablename__ = "job_attempts"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(String(48), ForeignKey("jobs.id", ondelete="CASCADE"))
    claim: Mapped[int] = mapped_column(Integer)
    model_group: Mapped[str] = mapped_column(String(255))
    deployment_id: Mapped[str] = mapped_column(String(255))
    #: None for success, else the error class name (e.g. RateLimitedError).
    error_class: Mapped[str | None] = mapped_column(String(64))
    status_code: Mapped[int | None] = mapped_column(Integer)
    latency_ms: Mapped[int] = mapped_column(Integer)
    started_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)

    __table_args__ = (Index("ix_job_attempts_job_id", "job_id", "id"),)


class File(Base):
    """An uploaded or produced file; the bytes live in file storage under
    `storage_key`."""

    __tablename__ = "files"

    id: Mapped[str] = mapped_column(String(48), primary_key=True)
    owner_key: Mapped[str] = mapped_column(String(64))
    purpose: Mapped[str] = mapped_column(String(32))
    filename: Mapped[str] = mapped_column(String(512))
    bytes: Mapped[int] = mapped_column(Integer)
    storage_key: Mapped[str] = mapped_column(String(512))
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)

    __table_args__ = (Index("ix_files_owner_id", "owner_key", "id"),)


class Batch(Base):
    """A batch of jobs (OpenAI Batch API or Anthropic Message Batches). Counts are
    read live from its jobs; `usage` is summed when it ends."""

    __tablename__ = "batches"

    id: Mapped[str] = mapped_column(String(48), primary_key=True)
    owner_key: Mapped[str] = mapped_column(String(64))
    #: Which wire shape the batch was created with: "openai" or "anthropic".
    api: Mapped[str] = mapped_column(String(16), default="openai")
    endpoint: Mapped[str] = mapped_column(String(64))
    input_file_id: Mapped[str | None] = mapped_column(String(48))
    completion_window: Mapped[str] = mapped_column(String(16))
    status: Mapped[str] = mapped_column(String(16))
    errors: Mapped[list[dict[str, Any]] | None] = mapped_column(JSON)
    output_file_id: Mapped[str | None] = mapped_column(String(48))
    error_file_id: Mapped[str | None] = mapped_column(String(48))
    total: Mapped[int] = mapped_column(Integer, default=0)
    model: Mapped[str | None] = mapped_column(String(255))
    usage: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    meta: Mapped[dict[str, Any] | None] = mapped_column("metadata", JSON)
    webhook_url: Mapped[str | None] = mapped_column(Text)
    priority: Mapped[int] = mapped_column(Integer, default=2)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    in_progress_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    expires_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    finalizing_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    completed_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    failed_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    expired_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    cancelling_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    cancelled_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)

    __table_args__ = (
        Index("ix_batches_owner_id", "owner_key", "id"),
        Index("ix_batches_status", "status"),
    )


class WebhookDelivery(Base):
    """One webhook event for one URL, retried until delivered or out of attempts."""

    __tablename__ = "webhook_deliveries"

    id: Mapped[str] = mapped_column(String(48), primary_key=True)
    event_type: Mapped[str] = mapped_column(String(32))
    url: Mapped[str] = mapped_column(Text)
    payload: Mapped[dict[str, Any]] = mapped_column(JSON)
    status: Mapped[str] = mapped_column(String(16), default="pending")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_status_code: Mapped[int | None] = mapped_column(Integer)
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    next_attempt_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    delivered_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)

    __table_args__ = (Index("ix_webhook_deliveries_status_next", "status", "next_attempt_at"),)


def locked_in_id_order(*where: ColumnElement[bool]) -> Select[str]:
    """The ids of the job rows matching `where`, locked in id order. Every statement that
    changes several job rows at once takes their locks through this
    (`update(Job).where(Job.id.in_(locked_in_id_order(...)))`), so two such statements
    never wait on each other's rows in opposite orders (a deadlock)."""
    return select(Job.id).where(*where).order_by(Job.id).with_for_update()


# Tenancy, accounting and Responses tables live in their own modules; importing them
# here registers them on Base.metadata for everything that loads the tables.
from models import accounting as _accounting  # noqa: E402, F401
from models import responses as _responses  # noqa: E402, F401
from models import tenancy as _tenancy  # noqa: E402, F401
