"""The OpenAI embeddings request, validated at intake."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from models.wire import JsonInt

__all__ = ["EmbeddingsRequest"]


class EmbeddingsRequest(BaseModel):
    model_config = ConfigDict(extra="allow")

    model: str = Field(min_length=1, max_length=255)
    input: (
        Annotated[str, Field(min_length=1)]
        | Annotated[list[str], Field(min_length=1, max_length=2048)]
        | Annotated[list[JsonInt], Field(min_length=1)]
        | Annotated[list[list[JsonInt]], Field(min_length=1, max_length=2048)]
    )
    encoding_format: Literal["float", "base64"] | None = None
    dimensions: Annotated[int, Field(ge=1, le=1_000_000)] | None = None
    user: str | None = None

    def provider_body(self) -> dict[str, Any]:
        return self.model_dump(mode="json", exclude_unset=True)
