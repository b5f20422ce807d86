"""Anthropic's Message Batches across the HTTP border: `MessageBatchCreate` in (each
request's `params` is checked by `models.anthropic_shape.anthropic_to_openai_request`)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

__all__ = ["BatchRequest", "MessageBatchCreate"]


class BatchRequest(BaseModel):
    """One request of a batch; `params` is checked by `anthropic_to_openai_request`."""

    model_config = ConfigDict(extra="forbid")

    custom_id: str = Field(min_length=1, max_length=64, pattern=r"^[a-zA-Z0-9_-]{1,64}$")
    params: dict[str, Any]


class MessageBatchCreate(BaseModel):
    """`POST /v1/messages/batches`."""

    model_config = ConfigDict(extra="forbid")

    requests: list[BatchRequest] = Field(min_length=1, max_length=100_000)

    @model_validator(mode="after")
    def _custom_ids_unique(self) -> MessageBatchCreate:
        seen: dict[str, int] = {}
        for index, request in enumerate(self.requests):
            if (first := seen.setdefault(request.custom_id, index)) != index:
                cid = request.custom_id
                msg = f"requests[{index}].custom_id {cid!r} duplicates requests[{first}]"
                raise ValueError(f"{msg}; custom_id must be unique within a batch")
        return self
