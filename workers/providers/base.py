"""What a provider protocol module offers the executor, and the shapes it returns."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from models.fleet_config import Deployment

if TYPE_CHECKING:
    from workers.providers.exchange import Exchange, StreamCall

__all__ = ["CallOptions", "Provider", "ProviderResult", "Usage", "openai_usage"]


@dataclass(frozen=True, slots=True)
class Usage:
    """Usage normalized across providers. `prompt_tokens` includes cached and
    cache-written tokens; `completion_tokens` includes reasoning tokens (OpenAI's
    convention), so a price per token applies to the totals and the details refine it."""

    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    #: Prompt tokens read from the provider's cache.
    cached_tokens: int = 0
    #: Prompt tokens written to the provider's cache (Anthropic's cache creation).
    cache_creation_tokens: int = 0
    #: Completion tokens spent on reasoning.
    reasoning_tokens: int = 0


def openai_usage(usage: Usage) -> dict[str, Any]:
    """The OpenAI `usage` object for a normalized Usage."""
    return {
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "total_tokens": usage.total_tokens,
        "prompt_tokens_details": {
            "cached_tokens": usage.cached_tokens,
            "cache_creation_tokens": usage.cache_creation_tokens,
        },
        "completion_tokens_details": {"reasoning_tokens": usage.reasoning_tokens},
    }


@dataclass(frozen=True, slots=True)
class ProviderResult:
    """A normalized OpenAI object (`chat.completion` or an embeddings `list`) and its
    usage."""

    response: dict[str, Any]
    usage: Usage


@dataclass(frozen=True, slots=True)
class CallOptions:
    timeout: float
    #: Drop parameters the provider lacks (with a warning) instead of failing the job.
    drop_params: bool = False


class Provider(Protocol):
    """One wire protocol. `body` is an OpenAI chat-completions (or embeddings) request;
    a provider never mutates it. Its calls are exchanges, apart from any client
    (workers.providers.exchange: the worker sends them on its event loop; each
    protocol's `chat` and `embed` send them with a blocking client)."""

    @property
    def name(self) -> str: ...

    def chat_exchange(
        self, deployment: Deployment, body: dict[str, Any], options: CallOptions
    ) -> Exchange: ...

    def chat_stream(
        self, deployment: Deployment, body: dict[str, Any], options: CallOptions
    ) -> StreamCall: ...

    def embed_exchange(
        self, deployment: Deployment, body: dict[str, Any], options: CallOptions
    ) -> Exchange: ...
