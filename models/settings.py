"""Process settings, read from the environment by pydantic-settings.

One class per process kind, each built explicitly at process start and passed down;
nothing here is read at import time.
"""

from __future__ import annotations

import hashlib
import hmac
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from models.batch_lines import MAX_BYTES
from models.webhooks import secret_key

__all__ = ["ApiSettings", "CommonSettings", "FlowerSettings", "WorkerSettings"]


class CommonSettings(BaseSettings):
    """What every fleet process needs: where the truth (DB), the state (Redis) and the
    broker live, and which fleet config to route with."""

    # Errors never echo an input: several settings are secrets.
    model_config = SettingsConfigDict(
        env_prefix="", extra="ignore", populate_by_name=True, hide_input_in_errors=True
    )

    database_url: str = Field(
        default="sqlite:///./llmfleet.db",
        validation_alias="DATABASE_URL",
        description="SQLAlchemy URL; postgresql:// is served by psycopg 3.",
    )
    redis_url: str = Field(default="redis://127.0.0.1:6379/0", validation_alias="REDIS_URL")
    broker_url_setting: str | None = Field(default=None, validation_alias="BROKER_URL")
    config_path: Path | None = Field(default=None, validation_alias="LLMFLEET_CONFIG")
    log_format: Literal["json", "text"] | None = Field(
        default=None,
        validation_alias="LLMFLEET_LOG_FORMAT",
        description="json (one object a line) or text; unset: text on a terminal, else json.",
    )
    master_key: SecretStr | None = Field(default=None, validation_alias="LLMFLEET_MASTER_KEY")
    key_secret: SecretStr | None = Field(
        default=None,
        validation_alias="LLMFLEET_KEY_SECRET",
        description="Server secret of the virtual keys' HMAC-SHA256 hashes. Unset, it is "
        "derived from the master key, so changing the master key then invalidates "
        "every virtual key.",
    )

    def key_hash_secret(self) -> bytes:
        """The HMAC secret for virtual keys: LLMFLEET_KEY_SECRET, else
        HMAC-SHA256(master key, "llmfleet virtual key hashing v1")."""
        if self.key_secret is not None:
            return self.key_secret.get_secret_value().encode()
        if self.master_key is None:
            raise ValueError("set LLMFLEET_KEY_SECRET or LLMFLEET_MASTER_KEY to hash API keys")
        master = self.master_key.get_secret_value().encode()
        return hmac.new(master, b"llmfleet virtual key hashing v1", hashlib.sha256).digest()

    visibility_timeout: int = Field(
        default=600,
        ge=5,
        validation_alias="LLMFLEET_VISIBILITY_TIMEOUT",
        description="Seconds before Redis delivers again a message that no worker "
        "acknowledged (its worker died holding it). A second delivery is harmless: a running "
        "job's lease turns it away. Shorter means faster recovery after a worker dies.",
    )

    files_dir: Path = Field(
        default=Path(".llmfleet/files"),
        validation_alias="LLMFLEET_FILES_DIR",
        description="Where uploaded and produced files are stored (local file storage).",
    )
    batch_queue_target: int = Field(
        default=2000,
        validation_alias="LLMFLEET_BATCH_QUEUE_TARGET",
        description="Batch lines kept waiting in the broker; more are published as "
        "these drain, so a large batch never floods Redis.",
    )
    batch_lines_per_message: int = Field(
        default=20,
        ge=1,
        le=500,
        validation_alias="LLMFLEET_BATCH_LINES_PER_MESSAGE",
        description="Batch lines carried by one execute message, at most a quarter of the "
        "workers' -c. A worker claims and stores them together (one message, one claim, "
        "fewer commits), runs their calls side by side, and counts the message as one "
        "slot per line. 1 sends a message per line.",
    )
    webhook_secret: SecretStr | None = Field(
        default=None,
        validation_alias="LLMFLEET_WEBHOOK_SECRET",
        description="Signs webhooks (Standard Webhooks): `whsec_` + base64 of the key. "
        "Without it no webhook is sent.",
    )
    webhook_max_attempts: int = Field(
        default=8,
        ge=1,
        validation_alias="LLMFLEET_WEBHOOK_MAX_ATTEMPTS",
        description="Sends of one webhook before its delivery is marked failed.",
    )

    @field_validator("webhook_secret")
    @classmethod
    def _webhook_secret_format(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            try:
                secret_key(value.get_secret_value())
            except ValueError as exc:
                # The message names the variable, never the secret.
                raise ValueError(f"LLMFLEET_WEBHOOK_SECRET {exc}") from None
        return value

    lago_api_url: str | None = Field(
        default=None,
        validation_alias="LAGO_API_URL",
        description="Lago's API base (e.g. https://api.getlago.com); reporting is off when unset.",
    )
    lago_api_key: SecretStr | None = Field(default=None, validation_alias="LAGO_API_KEY")
    lago_metric_codes: dict[str, str] = Field(
        default={
            "prompt_tokens": "llm_input_tokens",
            "completion_tokens": "llm_output_tokens",
            "cached_tokens": "llm_cached_input_tokens",
            "cache_creation_tokens": "llm_cache_creation_tokens",
            "reasoning_tokens": "llm_reasoning_tokens",
        },
        validation_alias="LLMFLEET_LAGO_METRIC_CODES",
        description="Usage field -> Lago billable metric code (JSON).",
    )
    lago_cost_code: str | None = Field(
        default=None,
        validation_alias="LLMFLEET_LAGO_COST_CODE",
        description="When set, a cost event with precise_total_amount_cents is sent too.",
    )
    lago_webhook_secret: SecretStr | None = Field(
        default=None,
        validation_alias="LAGO_WEBHOOK_SECRET",
        description="HMAC key of Lago's webhook signatures (X-Lago-Signature, algorithm "
        "hmac); without it every POST /v1/lago/webhooks is refused.",
    )
    entitlement_ttl: int = Field(
        default=60,
        ge=2,
        validation_alias="LLMFLEET_ENTITLEMENT_TTL",
        description="Seconds a subscription's entitlement view is trusted; the refresher "
        "re-reads Lago every TTL/2 for the subscriptions in use.",
    )
    entitlement_policy: Literal["fail_open", "fail_closed"] = Field(
        default="fail_open",
        validation_alias="LLMFLEET_ENTITLEMENT_POLICY",
        description="When Lago can't be reached and nothing is cached: run the job "
        "(its usage is still reported) or deny it.",
    )
    lago_usage_limits: dict[str, int] = Field(
        default={},
        validation_alias="LLMFLEET_LAGO_USAGE_LIMITS",
        description="external_subscription_id -> cap in cents on the current period's "
        "usage (Lago's current_usage total_amount_cents), JSON; at the cap jobs are denied.",
    )
    fair_share: bool = Field(
        default=True,
        validation_alias="LLMFLEET_FAIR_SHARE",
        description="Jobs that find their model group out of capacity wait in its fair "
        "room and are let through by tier and weight (docs/ROUTING.md); off: each waits "
        "its own time and goes first come, first served.",
    )
    fair_share_half_life: float = Field(
        default=30.0,
        gt=0,
        le=86_400,
        validation_alias="LLMFLEET_FAIR_SHARE_HALF_LIFE",
        description="Seconds after which a tenant's usage counts half in the fair order.",
    )

    @property
    def lago_enabled(self) -> bool:
        return bool(self.lago_api_url and self.lago_api_key)

    @property
    def broker_url(self) -> str:
        """The broker defaults to the Redis that holds router state."""
        return self.broker_url_setting or self.redis_url


class ApiSettings(CommonSettings):
    """Settings of the producer API process."""

    max_wait_seconds: float = Field(default=600.0, validation_alias="LLMFLEET_MAX_WAIT")
    sync_timeout_seconds: float = Field(
        default=600.0,
        validation_alias="LLMFLEET_SYNC_TIMEOUT",
        description="How long /v1/chat/completions waits for its job before answering 504.",
    )
    sync_capacity_wait_seconds: float = Field(
        default=30.0,
        gt=0,
        validation_alias="LLMFLEET_SYNC_CAPACITY_WAIT",
        description="How long a sync call's job may wait for capacity (provider rate "
        "limits, cooldowns, a busy fleet) before the call answers 429; a call that has "
        "started runs to its end.",
    )
    db_pool_size: int = Field(default=10, validation_alias="LLMFLEET_API_DB_POOL")
    stream_connections: int = Field(
        default=200,
        ge=2,
        validation_alias="LLMFLEET_STREAM_CONNECTIONS",
        description="Redis connections for relaying streams: the stream hub's one XREAD "
        "and the relays' short reads (at the end of a stream, or when the hub lags); a "
        "read beyond them waits for one. Keep the sum over API processes under Redis' "
        "`maxclients`.",
    )
    default_completion_window: str = Field(
        default="24h",
        validation_alias="LLMFLEET_DEFAULT_COMPLETION_WINDOW",
        description="Deadline of a job that gives none: it waits for capacity this long.",
    )
    max_body_bytes: int = Field(
        default=16 * 1024 * 1024,
        ge=1,
        validation_alias="LLMFLEET_MAX_BODY_BYTES",
        description="Largest request body of a JSON route; a bigger one is refused with 413 "
        "before anything is stored.",
    )
    max_file_bytes: int = Field(
        default=MAX_BYTES,
        ge=1,
        le=MAX_BYTES,
        validation_alias="LLMFLEET_MAX_FILE_BYTES",
        description="Largest batch input: an upload to /v1/files (file content; multipart "
        "framing is allowed on top) or the body of /v1/messages/batches. It may only be "
        "lowered: batch validation caps a file at 200 MiB.",
    )


class WorkerSettings(CommonSettings):
    """Settings of an execute worker process."""

    concurrency: int = Field(default=200, validation_alias="LLMFLEET_WORKER_CONCURRENCY")
    job_timeout: float = Field(
        default=1800.0,
        validation_alias="LLMFLEET_JOB_TIMEOUT",
        description="Upper bound of one attempt (all provider retries included): a live "
        "worker renews its lease on a job for at most this long.",
    )
    lease_seconds: float = Field(
        default=60.0,
        ge=3.0,
        validation_alias="LLMFLEET_LEASE_SECONDS",
        description="A worker's claim on a running job lasts this long and is renewed every "
        "third of it; the jobs of a worker that dies go to another within about one lease "
        "plus a sweep.",
    )
    db_pool_size: int = Field(default=20, validation_alias="LLMFLEET_WORKER_DB_POOL")
    metrics_port: int = Field(
        default=0,
        ge=0,
        le=65535,
        validation_alias="LLMFLEET_METRICS_PORT",
        description="Serve this worker's Prometheus metrics on this port; 0 = off.",
    )
    metrics_addr: str = Field(default="0.0.0.0", validation_alias="LLMFLEET_METRICS_ADDR")


class FlowerSettings(CommonSettings):
    """Settings of `llmfleet flower`: basic-auth credentials."""

    flower_user: str | None = Field(default=None, validation_alias="LLMFLEET_FLOWER_USER")
    flower_password: SecretStr | None = Field(
        default=None, validation_alias="LLMFLEET_FLOWER_PASSWORD"
    )

    @field_validator("flower_user")
    @classmethod
    def _flower_user_format(cls, value: str | None) -> str | None:
        if value is not None and (":" in value or "," in value):
            raise ValueError("LLMFLEET_FLOWER_USER must not contain ':' or ','")
        return value

    @field_validator("flower_password")
    @classmethod
    def _flower_password_format(cls, value: SecretStr | None) -> SecretStr | None:
        # Flower splits its credential list on commas.
        if value is not None and "," in value.get_secret_value():
            raise ValueError("LLMFLEET_FLOWER_PASSWORD must not contain ','")
        return value

    def flower_basic_auth(self) -> str | None:
        """`user:password` for Flower, or None unless both are set."""
        if not self.flower_user or self.flower_password is None:
            return None
        if not self.flower_password.get_secret_value():
            return None
        return f"{self.flower_user}:{self.flower_password.get_secret_value()}"
