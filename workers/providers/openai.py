"""The OpenAI Chat Completions and Embeddings protocol, for OpenAI itself and every
server that speaks it (vLLM, llama.cpp, Groq, Together, ... and the project's mock).
Pure converters first, then the error boundary, then the I/O."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Generator
from dataclasses import dataclass
from typing import Any

import httpx2 as httpx

from models.fleet_config import Deployment
from models.stream_events import Delta
from workers.providers import errors
from workers.providers.base import CallOptions, ProviderResult, Usage
from workers.providers.exchange import (
    Exchange,
    ExchangeProtocol,
    HttpCall,
    StreamCall,
    json_call,
    map_transport_errors,
)
from workers.providers.stream_decoding import cut_short, json_event

__all__ = [
    "ChatChunks",
    "OpenAIProtocol",
    "build_chat_request",
    "error_from_response",
    "map_transport_errors",
    "parse_chat_response",
    "parse_embeddings_response",
    "usage_from_openai",
]

DEFAULT_API_BASE = "https://api.openai.com/v1"


def auth_headers(deployment: Deployment) -> dict[str, str]:
    params = deployment.litellm_params
    headers = {"Content-Type": "application/json"}
    if params.api_key is not None:
        headers["Authorization"] = f"Bearer {params.api_key.get_secret_value()}"
    if params.organization:
        headers["OpenAI-Organization"] = params.organization
    return headers


def build_chat_request(
    deployment: Deployment, body: dict[str, Any], default_base: str | None
) -> tuple[str, dict[str, str], dict[str, Any]]:
    """URL, headers and JSON body for one call; `body` is copied, never mutated."""
    base = (deployment.litellm_params.api_base or default_base or "").rstrip("/")
    payload = dict(body)
    payload["model"] = deployment.litellm_params.provider_model
    return f"{base}/chat/completions", auth_headers(deployment), payload


def usage_from_openai(raw: Any, provider: str) -> Usage:
    """OpenAI's usage object, details included, as a normalized Usage."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise errors.MalformedResponseError(
            "provider reply has a malformed `usage`", provider=provider
        )
    try:
        prompt = int(raw.get("prompt_tokens") or 0)
        completion = int(raw.get("completion_tokens") or 0)
        total = int(raw.get("total_tokens") or prompt + completion)
        prompt_details = raw.get("prompt_tokens_details") or {}
        completion_details = raw.get("completion_tokens_details") or {}
        return Usage(
            prompt,
            completion,
            total,
            cached_tokens=int(prompt_details.get("cached_tokens") or 0),
            cache_creation_tokens=int(prompt_details.get("cache_creation_tokens") or 0),
            reasoning_tokens=int(completion_details.get("reasoning_tokens") or 0),
        )
    except (TypeError, ValueError, AttributeError) as exc:
        raise errors.MalformedResponseError(
            "provider reply has a malformed `usage`", provider=provider
        ) from exc


def parse_chat_response(provider: str, data: Any) -> ProviderResult:
    """Validate the parts of a `chat.completion` the fleet relies on."""
    if not isinstance(data, dict) or not isinstance(data.get("choices"), list):
        raise errors.MalformedResponseError(
            "provider reply has no `choices` list", provider=provider
        )
    usage = usage_from_openai(data.get("usage"), provider)
    response = dict(data)
    response.setdefault("object", "chat.completion")
    return ProviderResult(response=response, usage=usage)


def stream_payload(payload: dict[str, Any]) -> dict[str, Any]:
    """A chat body asking for a stream whose last chunk carries the usage."""
    options = payload.get("stream_options") or {}
    return {**payload, "stream": True, "stream_options": {**options, "include_usage": True}}


#: Error `type`s a stream's error event may carry, and what they mean.
_STREAM_ERROR_TYPES: dict[str, type[errors.ProviderError]] = {
    "invalid_request_error": errors.BadRequestError,
    "rate_limit_error": errors.RateLimitedError,
    "requests": errors.RateLimitedError,
    "tokens": errors.RateLimitedError,
}


class ChatChunks:
    """OpenAI's `chat.completion.chunk` events, read one at a time (pure): each
    choice's delta becomes a Delta, the last chunk's `usage` a Usage, `[DONE]` the
    end, and an event carrying `error` (how OpenAI breaks off a stream) the error tree."""

    def __init__(self, provider: str) -> None:
        self.provider = provider
        self.done = False

    def feed(self, event: str, data: str) -> list[Delta | Usage]:
        if data.strip() == "[DONE]":
            self.done = True
            return []
        chunk = json_event(self.provider, data)
        if chunk.get("error") is not None:
            raise self._error(chunk["error"])
        out: list[Delta | Usage] = []
        for choice in chunk.get("choices") or ():
            delta = choice.get("delta") or {}
            content = delta.get("content") or None
            calls = tuple(delta.get("tool_calls") or ())
            finish = choice.get("finish_reason")
            if content is not None or calls or finish is not None:
                out.append(Delta(int(choice.get("index") or 0), content, calls, finish))
        if chunk.get("usage"):
            out.append(usage_from_openai(chunk["usage"], self.provider))
        return out

    def close(self) -> list[Delta | Usage]:
        if not self.done:
            raise cut_short(self.provider)
        return []

    def _error(self, raw: Any) -> errors.ProviderError:
        raw = raw if isinstance(raw, dict) else {"message": str(raw)}
        cls = _STREAM_ERROR_TYPES.get(str(raw.get("type")), errors.UnavailableError)
        code = raw.get("code") if isinstance(raw.get("code"), str) else None
        return cls(
            str(raw.get("message") or "the provider broke off its stream"),
            provider=self.provider,
            code=code,
        )


def parse_embeddings_response(provider: str, data: Any) -> ProviderResult:
    if not isinstance(data, dict) or not isinstance(data.get("data"), list):
        raise errors.MalformedResponseError("provider reply has no `data` list", provider=provider)
    usage = usage_from_openai(data.get("usage"), provider)
    return ProviderResult(response=dict(data), usage=usage)


_STATUS_ERRORS: dict[int, type[errors.ProviderError]] = {
    400: errors.BadRequestError,
    401: errors.AuthenticationError,
    403: errors.PermissionDeniedError,
    404: errors.NotFoundError,
    408: errors.ProviderTimeoutError,
    409: errors.UnavailableError,
    413: errors.BadRequestError,
    422: errors.BadRequestError,
    429: errors.RateLimitedError,
}


def error_class_for_status(status: int) -> type[errors.ProviderError]:
    cls = _STATUS_ERRORS.get(status)
    if cls is None:
        cls = errors.UnavailableError if status >= 500 else errors.BadRequestError
    return cls


def error_from_response(provider: str, response: httpx.Response) -> errors.ProviderError:
    """Map a non-2xx reply to the error tree; the most specific class wins."""
    message, param, code = _error_fields(response)
    cls = error_class_for_status(response.status_code)
    if cls is errors.BadRequestError:
        if code == "context_length_exceeded" or "context length" in message.lower():
            cls = errors.ContextWindowExceededError
        elif code in ("content_filter", "content_policy_violation"):
            cls = errors.ContentPolicyError
    return cls(
        message,
        provider=provider,
        param=param,
        code=code,
        retry_after=retry_after(response),
        status=response.status_code,
    )


def _error_fields(response: httpx.Response) -> tuple[str, str | None, str | None]:
    try:
        err = response.json().get("error")
    except (ValueError, AttributeError):
        err = None
    if isinstance(err, dict):
        message = str(err.get("message") or f"provider answered {response.status_code}")
        param = err.get("param") if isinstance(err.get("param"), str) else None
        code = err.get("code") if isinstance(err.get("code"), str) else None
        return message, param, code
    return f"provider answered HTTP {response.status_code}", None, None


def retry_after(response: httpx.Response) -> float | None:
    """Seconds from `retry-after-ms` or `retry-after` (seconds), when present."""
    for header in ("retry-after-ms", "retry-after"):
        value = response.headers.get(header)
        if value is None:
            continue
        with contextlib.suppress(ValueError):
            seconds = float(value)
            return seconds / 1000 if header == "retry-after-ms" else seconds
    return None


def read_json(provider: str, response: httpx.Response) -> Any:
    try:
        return json.loads(response.content)
    except ValueError as exc:
        raise errors.MalformedResponseError(
            "provider reply is not valid JSON", provider=provider
        ) from exc


def post_json(
    provider: str,
    url: str,
    headers: dict[str, str],
    payload: dict[str, Any],
    timeout: float,
    map_error: Callable[[str, httpx.Response], errors.ProviderError] | None = None,
) -> Generator[HttpCall, httpx.Response, Any]:
    """POST JSON and read a JSON reply (`yield from` it in an exchange); a non-2xx reply
    is mapped by the protocol's `map_error` (OpenAI's by default)."""
    response = yield json_call(url, headers, payload, timeout)
    if response.status_code >= 400:
        raise (map_error or error_from_response)(provider, response)
    return read_json(provider, response)


@dataclass(frozen=True)
class OpenAIProtocol(ExchangeProtocol):
    """`name` is the provider prefix; `default_base` is used when a deployment has no
    `api_base` (None means one is required)."""

    name: str
    default_base: str | None = DEFAULT_API_BASE

    def chat_exchange(
        self, deployment: Deployment, body: dict[str, Any], options: CallOptions
    ) -> Exchange:
        url, headers, payload = build_chat_request(deployment, body, self.default_base)
        data = yield from post_json(self.name, url, headers, payload, options.timeout)
        return parse_chat_response(self.name, data)

    def chat_stream(
        self, deployment: Deployment, body: dict[str, Any], options: CallOptions
    ) -> StreamCall:
        url, headers, payload = build_chat_request(deployment, body, self.default_base)
        call = json_call(url, headers, stream_payload(payload), options.timeout)
        return StreamCall(call, ChatChunks(self.name), error_from_response)

    def embed_exchange(
        self, deployment: Deployment, body: dict[str, Any], options: CallOptions
    ) -> Exchange:
        url, headers, payload = build_chat_request(deployment, body, self.default_base)
        url = url.removesuffix("/chat/completions") + "/embeddings"
        data = yield from post_json(self.name, url, headers, payload, options.timeout)
        return parse_embeddings_response(self.name, data)
