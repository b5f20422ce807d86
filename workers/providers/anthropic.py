"""The Anthropic Messages protocol (`POST /v1/messages`), for Claude deployments.

Why a module of its own: a job stores an OpenAI chat-completions request and an OpenAI
`chat.completion`, and Anthropic's wire shape differs where it matters: the system
prompt is a top-level field, roles must alternate, tool calls and tool results are
content blocks, `max_tokens` is required, and cached prompt tokens are counted apart
from `input_tokens`. Pure converters translate both ways and never mutate their input;
one boundary maps Anthropic's typed errors into `errors`; the I/O comes last. The
transport boundary, `Retry-After` and JSON reading are the OpenAI module's, shared;
the stream's events are read by `anthropic_stream`.

Finish reasons (Anthropic `stop_reason` -> OpenAI `finish_reason`):

    end_turn                        stop
    stop_sequence                   stop
    pause_turn                      stop    (a server-tool loop paused; resend to go on)
    max_tokens                      length
    model_context_window_exceeded   length
    tool_use                        tool_calls
    refusal                         content_filter
    absent or unknown               stop

Errors: the body's `error.type` (`_TYPE_ERRORS`) is more specific than the HTTP status
(`openai.error_class_for_status`) and wins; a bad request whose message says the prompt
is too long is a ContextWindowExceededError. 429 carries `retry-after`; 529 overloaded
and other 5xx are UnavailableError; transport failures, timeouts and non-JSON replies
map as in the OpenAI module; a 2xx without a `content` list is MalformedResponseError.
"""

from __future__ import annotations

import functools
import json
import time
from dataclasses import dataclass
from typing import Any

import httpx2 as httpx

from models.fleet_config import Deployment
from workers.providers import errors, openai
from workers.providers.anthropic_convert import (
    convert_messages,
    convert_tool_choice,
    convert_tools,
    refused,
)
from workers.providers.anthropic_stream import MessageEvents
from workers.providers.base import CallOptions, ProviderResult, Usage, openai_usage
from workers.providers.exchange import Exchange, ExchangeProtocol, StreamCall, json_call
from workers.providers.params import check_params

__all__ = [
    "FINISH_REASONS",
    "SUPPORTED",
    "AnthropicProtocol",
    "build_messages_request",
    "error_from_response",
    "parse_message",
    "usage_from_anthropic",
]

DEFAULT_API_BASE = "https://api.anthropic.com"
#: Pinned: 2026-10-21 (anthropic SDK 2.x's default) refuses `temperature` and `top_p`.
ANTHROPIC_VERSION = "2023-06-01"
#: Anthropic requires `max_tokens`; OpenAI callers often leave it out.
DEFAULT_MAX_TOKENS = 4096

#: OpenAI parameters this protocol translates; `n` is accepted only when it is 1.
SUPPORTED = frozenset(
    {"max_tokens", "max_completion_tokens", "stop", "temperature", "top_p", "user"}
    | {"tools", "tool_choice", "parallel_tool_calls"}
)

FINISH_REASONS: dict[str, str] = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "pause_turn": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
}

#: Anthropic's error types (with the status they come with) -> the error tree.
_TYPE_ERRORS: dict[str, type[errors.ProviderError]] = {
    "invalid_request_error": errors.BadRequestError,  # 400
    "request_too_large": errors.BadRequestError,  # 413
    "authentication_error": errors.AuthenticationError,  # 401
    "billing_error": errors.PermissionDeniedError,  # 402: useless until someone pays
    "permission_error": errors.PermissionDeniedError,  # 403
    "not_found_error": errors.NotFoundError,  # 404
    "rate_limit_error": errors.RateLimitedError,  # 429
    "api_error": errors.UnavailableError,  # 500
    "timeout_error": errors.ProviderTimeoutError,  # 504
    "overloaded_error": errors.UnavailableError,  # 529
}

_CONTEXT_WINDOW_HINTS = ("prompt is too long", "context window", "context length")


# --- request: OpenAI chat completions -> Anthropic Messages -------------------------


def messages_url(deployment: Deployment, default_base: str) -> str:
    """`{base}/v1/messages`; an `api_base` that already ends in `/v1` or `/v1/messages`
    (LiteLLM configs have both) is completed, not doubled."""
    base = (deployment.litellm_params.api_base or default_base).rstrip("/")
    if base.endswith("/v1/messages"):
        return base
    if base.endswith("/v1"):
        return f"{base}/messages"
    return f"{base}/v1/messages"


def auth_headers(deployment: Deployment) -> dict[str, str]:
    headers = {"content-type": "application/json", "anthropic-version": ANTHROPIC_VERSION}
    if deployment.litellm_params.api_key is not None:
        headers["x-api-key"] = deployment.litellm_params.api_key.get_secret_value()
    return headers


def build_messages_request(
    provider: str, deployment: Deployment, body: dict[str, Any], default_base: str, drop: bool
) -> tuple[str, dict[str, str], dict[str, Any]]:
    """URL, headers and Anthropic body for one OpenAI chat-completions `body`."""
    supported = SUPPORTED | ({"n"} if body.get("n") in (None, 1) else set())
    body = check_params(body, supported, provider, drop)
    try:
        system, messages = convert_messages(provider, body.get("messages") or [])
        tools = convert_tools(provider, body.get("tools") or [])
    except (KeyError, TypeError, AttributeError) as exc:
        raise refused(provider, f"malformed messages or tools ({exc!r})", "messages") from exc
    max_tokens = body.get("max_completion_tokens") or body.get("max_tokens")
    payload: dict[str, Any] = {
        "model": deployment.litellm_params.provider_model,
        "max_tokens": max_tokens or DEFAULT_MAX_TOKENS,
        "messages": messages,
    }
    if system:
        payload["system"] = system
    for key in ("temperature", "top_p"):
        if body.get(key) is not None:
            payload[key] = body[key]
    stop = body.get("stop")
    if stop:
        payload["stop_sequences"] = [stop] if isinstance(stop, str) else list(stop)
    if tools:
        payload["tools"] = tools
    choice = convert_tool_choice(provider, body.get("tool_choice"), body.get("parallel_tool_calls"))
    if tools and choice is not None:  # a tool_choice means nothing without tools
        payload["tool_choice"] = choice
    if body.get("user"):
        payload["metadata"] = {"user_id": body["user"]}
    return messages_url(deployment, default_base), auth_headers(deployment), payload


# --- response: Anthropic Message -> OpenAI chat.completion --------------------------


def usage_from_anthropic(raw: Any, provider: str) -> Usage:
    """Anthropic counts cache reads and writes apart from `input_tokens`; the
    normalized `prompt_tokens` includes both."""
    if not isinstance(raw, dict):
        raise _malformed(provider, "has no `usage`")
    try:
        fresh = int(raw.get("input_tokens") or 0)
        read = int(raw.get("cache_read_input_tokens") or 0)
        written = int(raw.get("cache_creation_input_tokens") or 0)
        completion = int(raw.get("output_tokens") or 0)
    except (TypeError, ValueError) as exc:
        raise _malformed(provider, "has a malformed `usage`") from exc
    prompt = fresh + read + written
    total = prompt + completion
    return Usage(prompt, completion, total, cached_tokens=read, cache_creation_tokens=written)


def parse_message(provider: str, data: Any, created: int) -> ProviderResult:
    """An Anthropic `message` as an OpenAI `chat.completion` made at `created`."""
    if not isinstance(data, dict) or not isinstance(data.get("content"), list):
        raise _malformed(provider, "has no `content` list")
    usage = usage_from_anthropic(data.get("usage"), provider)
    try:
        message = _openai_message(data["content"])
    except (KeyError, TypeError, AttributeError) as exc:
        raise _malformed(provider, "has a malformed content block") from exc
    finish_reason = FINISH_REASONS.get(data.get("stop_reason") or "", "stop")
    choice = {"index": 0, "message": message, "finish_reason": finish_reason, "logprobs": None}
    response = {
        "id": str(data.get("id") or ""),
        "object": "chat.completion",
        "created": created,
        "model": str(data.get("model") or ""),
        "choices": [choice],
        "usage": openai_usage(usage),
    }
    return ProviderResult(response=response, usage=usage)


def _malformed(provider: str, what: str) -> errors.MalformedResponseError:
    return errors.MalformedResponseError(f"provider reply {what}", provider=provider)


def _openai_message(content: list[Any]) -> dict[str, Any]:
    """Text blocks joined; tool_use blocks as tool calls; other blocks (thinking,
    server tools) have no OpenAI counterpart and are left out."""
    texts = [block["text"] for block in content if block.get("type") == "text"]
    calls = [
        {
            "id": block["id"],
            "type": "function",
            "function": {"name": block["name"], "arguments": json.dumps(block["input"])},
        }
        for block in content
        if block.get("type") == "tool_use"
    ]
    message: dict[str, Any] = {"role": "assistant", "content": "".join(texts) if texts else None}
    if calls:
        message["tool_calls"] = calls
    return message


# --- the error boundary ------------------------------------------------------------


def error_from_response(provider: str, response: httpx.Response) -> errors.ProviderError:
    """Map a non-2xx reply to the error tree; `error.type` is more specific than the
    status, and a too-long prompt is a context-window error."""
    try:
        err = response.json().get("error")
    except (ValueError, AttributeError):
        err = None
    err = err if isinstance(err, dict) else {}
    etype = err.get("type") if isinstance(err.get("type"), str) else None
    message = str(err.get("message") or f"provider answered HTTP {response.status_code}")
    wait, status = openai.retry_after(response), response.status_code
    return error_for_type(provider, etype, message, status, wait)


def error_for_type(
    provider: str,
    etype: str | None,
    message: str,
    status: int | None = None,
    retry_after: float | None = None,
) -> errors.ProviderError:
    """An Anthropic error `type` (from a reply or a stream's error event) as the tree."""
    cls = _TYPE_ERRORS.get(etype or "") or (
        openai.error_class_for_status(status) if status else errors.UnavailableError
    )
    if cls is errors.BadRequestError and any(h in message.lower() for h in _CONTEXT_WINDOW_HINTS):
        cls = errors.ContextWindowExceededError
    return cls(message, provider=provider, code=etype, retry_after=retry_after, status=status)


# --- the I/O ------------------------------------------------------------------------


@dataclass(frozen=True)
class AnthropicProtocol(ExchangeProtocol):
    """`name` is the provider prefix; `default_base` is used when a deployment has no
    `api_base`."""

    name: str = "anthropic"
    default_base: str = DEFAULT_API_BASE

    def chat_exchange(
        self, deployment: Deployment, body: dict[str, Any], options: CallOptions
    ) -> Exchange:
        url, headers, payload = build_messages_request(
            self.name, deployment, body, self.default_base, options.drop_params
        )
        data = yield from openai.post_json(
            self.name, url, headers, payload, options.timeout, error_from_response
        )
        return parse_message(self.name, data, int(time.time()))

    def chat_stream(
        self, deployment: Deployment, body: dict[str, Any], options: CallOptions
    ) -> StreamCall:
        url, headers, payload = build_messages_request(
            self.name, deployment, body, self.default_base, options.drop_params
        )
        call = json_call(url, headers, {**payload, "stream": True}, options.timeout)
        error_for = functools.partial(error_for_type, self.name)
        events = MessageEvents(self.name, FINISH_REASONS, error_for, usage_from_anthropic)
        return StreamCall(call, events, error_from_response)

    def embed_exchange(
        self, deployment: Deployment, body: dict[str, Any], options: CallOptions
    ) -> Exchange:
        raise errors.BadRequestError(
            f"{self.name} has no embeddings endpoint; route embeddings to another provider",
            provider=self.name,
            code="unsupported_operation",
        )
