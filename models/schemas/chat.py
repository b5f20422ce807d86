"""The OpenAI chat-completions request, validated at intake.

Known parameters are typed so that a bad value is refused with its field named; newer
OpenAI parameters this schema does not list pass through unchanged to the provider.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from models.wire import JsonInt, TokenCount

__all__ = ["CacheOptions", "ChatCompletionRequest", "ChatMessage", "StreamOptions"]

#: Fields of the request that are the fleet's, never sent to a provider.
FLEET_FIELDS = frozenset({"cache", "background"})


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow")

    role: Literal["system", "developer", "user", "assistant", "tool", "function"]
    content: str | list[dict[str, Any]] | None = None
    name: str | None = None
    tool_calls: list[dict[str, Any]] | None = None
    tool_call_id: str | None = None

    @model_validator(mode="after")
    def _content_required(self) -> ChatMessage:
        if self.role in ("system", "developer", "user") and self.content is None:
            raise ValueError(f"a {self.role} message needs `content`")
        if self.role == "tool" and not self.tool_call_id:
            raise ValueError("a tool message needs `tool_call_id`")
        return self


class CacheOptions(BaseModel):
    """`cache: {"ttl": 600}`: serve identical requests from the response cache for
    `ttl` seconds (0: never from the cache, even when the key caches by default)."""

    model_config = ConfigDict(extra="forbid")

    ttl: int = Field(ge=0, le=30 * 86400)


class StreamOptions(BaseModel):
    """OpenAI's `stream_options`: `include_usage` adds a last chunk with the usage."""

    model_config = ConfigDict(extra="forbid")

    include_usage: bool | None = None
    include_obfuscation: bool | None = None


class ChatCompletionRequest(BaseModel):
    model_config = ConfigDict(extra="allow")

    model: str = Field(min_length=1, max_length=255)
    messages: list[ChatMessage] = Field(min_length=1)
    temperature: Annotated[float, Field(ge=0, le=2)] | None = None
    top_p: Annotated[float, Field(ge=0, le=1)] | None = None
    n: Annotated[int, Field(ge=1, le=128)] | None = None
    stop: str | Annotated[list[str], Field(max_length=4)] | None = None
    max_tokens: TokenCount | None = None
    max_completion_tokens: TokenCount | None = None
    seed: JsonInt | None = None
    presence_penalty: Annotated[float, Field(ge=-2, le=2)] | None = None
    frequency_penalty: Annotated[float, Field(ge=-2, le=2)] | None = None
    tools: list[dict[str, Any]] | None = None
    tool_choice: str | dict[str, Any] | None = None
    response_format: dict[str, Any] | None = None
    user: str | None = None
    stream: bool | None = Field(
        default=None, description="Answer as server-sent `chat.completion.chunk` events."
    )
    stream_options: StreamOptions | None = None
    background: bool | None = Field(
        default=None,
        description="With `stream`: the job runs to its end even if the stream is dropped "
        "(else a dropped stream cancels it, as OpenAI does). Never sent to the provider.",
    )
    cache: CacheOptions | None = Field(
        default=None, description="The fleet's response cache; never sent to the provider."
    )

    @model_validator(mode="after")
    def _stream_options_need_stream(self) -> ChatCompletionRequest:
        if self.stream_options is not None and not self.stream:
            raise ValueError("`stream_options` is only allowed when `stream` is true")
        return self

    def provider_body(self, exclude: frozenset[str] = FLEET_FIELDS) -> dict[str, Any]:
        """The body to store: what the client set, nothing we added; `stream` only
        when true (the worker then streams the call: workers.streaming)."""
        skip = set(exclude) | (set() if self.stream else {"stream"})
        return self.model_dump(mode="json", exclude_unset=True, exclude=skip)

    def cache_ttl(self) -> int | None:
        return self.cache.ttl if self.cache is not None else None
