"""The Gemini API wire protocol (Google AI Studio, generativelanguage.googleapis.com).

Why native rather than Google's OpenAI-compatible endpoint: the native API reports
cached and thinking tokens, says why a prompt was blocked, and carries the thought
signatures Gemini 3 needs back on replayed function calls.

    chat        POST {base}/v1beta/models/{model}:generateContent
    embeddings  POST {base}/v1beta/models/{model}:embedContent        (one string)
                POST {base}/v1beta/models/{model}:batchEmbedContents  (a list, 100 a call)
    key         the `x-goog-api-key` header

Pure converters first (requests in `gemini_convert.py`, replies here), then the
error boundary, then the I/O.

Finish reasons (candidate.finishReason -> OpenAI finish_reason):

    STOP                                          stop
    MAX_TOKENS                                    length
    SAFETY, RECITATION, BLOCKLIST,                content_filter
    PROHIBITED_CONTENT, SPII, IMAGE_SAFETY,
    IMAGE_PROHIBITED_CONTENT
    anything else                                 stop
    any functionCall part in the candidate        tool_calls

A prompt blocked before generation (`promptFeedback.blockReason`, no candidates)
raises ContentPolicyError.

Errors (`{"error": {"code", "message", "status", "details"}}`) -> errors.py's tree:

    400 INVALID_ARGUMENT               BadRequestError
        "... exceeds the maximum number of tokens ..."   ContextWindowExceededError
        API key not valid (API_KEY_INVALID)               AuthenticationError
    400 FAILED_PRECONDITION            PermissionDeniedError (billing or region: the
                                       deployment is unusable until fixed)
    401 UNAUTHENTICATED                AuthenticationError
    403 PERMISSION_DENIED              PermissionDeniedError
    404 NOT_FOUND                      NotFoundError
    429 RESOURCE_EXHAUSTED             RateLimitedError; retry_after from `retry-after`,
                                       else RetryInfo.retryDelay ("13s")
    500, 503, 504                      UnavailableError
    timeout / connection / not JSON    as every protocol (shared with openai.py)
"""

from __future__ import annotations

import base64
import contextlib
import json
import struct
import time
import uuid
from collections.abc import Generator
from dataclasses import dataclass
from typing import Any

import httpx2 as httpx

from models.fleet_config import Deployment
from workers.providers import errors
from workers.providers import gemini_convert as convert
from workers.providers.base import CallOptions, ProviderResult, Usage, openai_usage
from workers.providers.exchange import Exchange, ExchangeProtocol, HttpCall, StreamCall, json_call
from workers.providers.gemini_convert import SIGNATURE_SEP
from workers.providers.openai import error_class_for_status, post_json, retry_after

__all__ = [
    "DEFAULT_API_BASE",
    "FINISH_REASONS",
    "GeminiProtocol",
    "chat_response",
    "embedding_values",
    "embeddings_response",
    "error_from_response",
    "tool_call",
    "usage_from_gemini",
]

DEFAULT_API_BASE = "https://generativelanguage.googleapis.com"
_RETRY_INFO = "type.googleapis.com/google.rpc.RetryInfo"
_TOO_MANY_TOKENS = ("exceeds the maximum number of tokens", "token count exceeds")


#: candidate.finishReason -> OpenAI finish_reason; anything else is "stop".
FINISH_REASONS: dict[str, str] = {
    "STOP": "stop",
    "MAX_TOKENS": "length",
    "SAFETY": "content_filter",
    "RECITATION": "content_filter",
    "BLOCKLIST": "content_filter",
    "PROHIBITED_CONTENT": "content_filter",
    "SPII": "content_filter",
    "IMAGE_SAFETY": "content_filter",
    "IMAGE_PROHIBITED_CONTENT": "content_filter",
}


def _malformed(provider: str, what: str) -> errors.MalformedResponseError:
    return errors.MalformedResponseError(f"Gemini reply {what}", provider=provider)


# --- generateContent reply -> OpenAI chat.completion ---------------------------------


def chat_response(provider: str, data: Any, model: str, created: int) -> ProviderResult:
    """A `chat.completion` with one choice per candidate. `created` is passed in so
    the conversion stays pure."""
    if not isinstance(data, dict):
        raise _malformed(provider, "is not a JSON object")
    candidates = data.get("candidates")
    if not candidates:
        feedback = data.get("promptFeedback")
        if isinstance(feedback, dict) and feedback.get("blockReason"):
            reason = str(feedback["blockReason"])
            detail = feedback.get("blockReasonMessage") or "the prompt was blocked"
            raise errors.ContentPolicyError(
                f"Gemini blocked the prompt ({reason}): {detail}", provider=provider, code=reason
            )
        raise _malformed(provider, "has no `candidates`")
    if not isinstance(candidates, list) or not all(isinstance(c, dict) for c in candidates):
        raise _malformed(provider, "has malformed `candidates`")
    response_id = str(data.get("responseId") or uuid.uuid4().hex)
    usage = usage_from_gemini(provider, data.get("usageMetadata"))
    response = {
        "id": f"chatcmpl-{response_id}",
        "object": "chat.completion",
        "created": created,
        "model": str(data.get("modelVersion") or model),
        "choices": [_choice(provider, c, i, response_id) for i, c in enumerate(candidates)],
        "usage": openai_usage(usage),
    }
    return ProviderResult(response=response, usage=usage)


def _choice(
    provider: str, candidate: dict[str, Any], position: int, response_id: str
) -> dict[str, Any]:
    content = candidate.get("content")
    parts = (content.get("parts") if isinstance(content, dict) else None) or []
    if not isinstance(parts, list) or not all(isinstance(p, dict) for p in parts):
        raise _malformed(provider, "has a candidate with malformed `parts`")
    index = candidate.get("index", position)  # proto JSON omits a zero index
    if not isinstance(index, int):
        raise _malformed(provider, "has a candidate with a malformed `index`")
    texts: list[str] = []
    calls: list[dict[str, Any]] = []
    for part in parts:
        if part.get("thought"):
            continue  # thought summaries are not the answer
        if "text" in part:
            texts.append(str(part["text"]))
        elif "functionCall" in part:
            call_id = f"call_{response_id}_{index}_{len(calls)}"
            calls.append(tool_call(provider, part, call_id))
    message: dict[str, Any] = {"role": "assistant", "content": "".join(texts) if texts else None}
    if calls:
        message["tool_calls"] = calls
    reason = "tool_calls" if calls else FINISH_REASONS.get(str(candidate.get("finishReason")))
    return {"index": index, "message": message, "finish_reason": reason or "stop", "logprobs": None}


def tool_call(provider: str, part: dict[str, Any], call_id: str) -> dict[str, Any]:
    call = part["functionCall"]
    if not isinstance(call, dict) or not call.get("name"):
        raise _malformed(provider, "has a functionCall without a name")
    if part.get("thoughtSignature"):
        call_id += SIGNATURE_SEP + str(part["thoughtSignature"])
    arguments = json.dumps(call.get("args") or {})
    return {
        "id": call_id,
        "type": "function",
        "function": {"name": call["name"], "arguments": arguments},
    }


def usage_from_gemini(provider: str, raw: Any) -> Usage:
    """usageMetadata as a normalized Usage: promptTokenCount already includes cached
    tokens; thinking tokens count as completion tokens, as OpenAI counts reasoning."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise _malformed(provider, "has a malformed `usageMetadata`")
    try:
        prompt = int(raw.get("promptTokenCount") or 0)
        thoughts = int(raw.get("thoughtsTokenCount") or 0)
        completion = int(raw.get("candidatesTokenCount") or 0) + thoughts
        total = int(raw.get("totalTokenCount") or prompt + completion)
        cached = int(raw.get("cachedContentTokenCount") or 0)
    except (TypeError, ValueError) as exc:
        raise _malformed(provider, "has a malformed `usageMetadata`") from exc
    return Usage(prompt, completion, total, cached_tokens=cached, reasoning_tokens=thoughts)


# --- embedContent / batchEmbedContents replies -> OpenAI embeddings list ------------


def embedding_values(provider: str, method: str, data: Any, expected: int) -> list[list[float]]:
    """The vectors of one embedContent / batchEmbedContents reply, in input order."""
    if not isinstance(data, dict):
        raise _malformed(provider, "is not a JSON object")
    items = [data.get("embedding")] if method == "embedContent" else data.get("embeddings")
    if not isinstance(items, list) or len(items) != expected:
        raise _malformed(provider, f"does not hold {expected} embedding(s)")
    try:
        return [[float(v) for v in item["values"]] for item in items]
    except (TypeError, KeyError, ValueError) as exc:
        raise _malformed(provider, "has a malformed embedding") from exc


def embeddings_response(
    model: str, vectors: list[list[float]], encoding_format: str
) -> ProviderResult:
    """An OpenAI embeddings `list`. base64 is OpenAI's: little-endian float32."""
    data = [
        {
            "object": "embedding",
            "index": i,
            "embedding": (
                base64.b64encode(struct.pack(f"<{len(v)}f", *v)).decode()
                if encoding_format == "base64"
                else v
            ),
        }
        for i, v in enumerate(vectors)
    ]
    # Gemini reports no token usage for embeddings: zeros, so nothing is billed by token.
    response = {
        "object": "list",
        "data": data,
        "model": model,
        "usage": {"prompt_tokens": 0, "total_tokens": 0},
    }
    return ProviderResult(response=response, usage=Usage(0, 0, 0))


# --- the error boundary ----------------------------------------------------------------


def error_from_response(provider: str, response: httpx.Response) -> errors.ProviderError:
    """Map a non-2xx reply to the error tree; the most specific class wins."""
    message, status, details = _error_fields(response)
    cls = _refine(error_class_for_status(response.status_code), message, status, details)
    wait = retry_after(response)
    if wait is None and cls is errors.RateLimitedError:
        wait = _retry_delay(details)
    return cls(
        message, provider=provider, code=status, retry_after=wait, status=response.status_code
    )


def _refine(
    cls: type[errors.ProviderError], message: str, status: str | None, details: list[Any]
) -> type[errors.ProviderError]:
    lowered = message.lower()
    reasons = {d.get("reason") for d in details if isinstance(d, dict)}
    if "API_KEY_INVALID" in reasons or "api key not valid" in lowered:
        return errors.AuthenticationError
    if status == "UNAUTHENTICATED":
        return errors.AuthenticationError
    if status in ("PERMISSION_DENIED", "FAILED_PRECONDITION"):
        return errors.PermissionDeniedError
    if cls is errors.BadRequestError and any(p in lowered for p in _TOO_MANY_TOKENS):
        return errors.ContextWindowExceededError
    return cls


def _error_fields(response: httpx.Response) -> tuple[str, str | None, list[Any]]:
    try:
        err = response.json().get("error")
    except (ValueError, AttributeError):
        err = None
    if not isinstance(err, dict):
        return f"provider answered HTTP {response.status_code}", None, []
    message = str(err.get("message") or f"provider answered HTTP {response.status_code}")
    status, details = err.get("status"), err.get("details")
    return (
        message,
        status if isinstance(status, str) else None,
        details if isinstance(details, list) else [],
    )


def _retry_delay(details: list[Any]) -> float | None:
    """Seconds from a google.rpc.RetryInfo detail: a Duration string such as "13s"."""
    for detail in details:
        if isinstance(detail, dict) and detail.get("@type") == _RETRY_INFO:
            with contextlib.suppress(ValueError):
                return float(str(detail.get("retryDelay", "")).removesuffix("s"))
    return None


# --- the I/O ---------------------------------------------------------------------------


@dataclass(frozen=True)
class GeminiProtocol(ExchangeProtocol):
    """`default_base` is used when a deployment has no `api_base`."""

    name: str = "gemini"
    default_base: str = DEFAULT_API_BASE

    def chat_exchange(
        self, deployment: Deployment, body: dict[str, Any], options: CallOptions
    ) -> Exchange:
        payload = convert.chat_body(self.name, body, options.drop_params)
        model = _model(deployment)
        data = yield from self._post(deployment, f"{model}:generateContent", payload, options)
        return chat_response(self.name, data, model, int(time.time()))

    def chat_stream(
        self, deployment: Deployment, body: dict[str, Any], options: CallOptions
    ) -> StreamCall:
        from workers.providers.gemini_stream import GeminiEvents  # it reads this module's

        payload = convert.chat_body(self.name, body, options.drop_params)
        model = _model(deployment)
        url, headers = self._target(deployment, f"{model}:streamGenerateContent?alt=sse")
        call = json_call(url, headers, payload, options.timeout)
        return StreamCall(call, GeminiEvents(self.name, model), error_from_response)

    def embed_exchange(
        self, deployment: Deployment, body: dict[str, Any], options: CallOptions
    ) -> Exchange:
        model = _model(deployment)
        plan = convert.plan_embeddings(self.name, model, body, options.drop_params)
        vectors: list[list[float]] = []
        for payload in plan.bodies:
            data = yield from self._post(deployment, f"{model}:{plan.method}", payload, options)
            expected = len(payload.get("requests", [payload]))
            vectors.extend(embedding_values(self.name, plan.method, data, expected))
        return embeddings_response(model, vectors, plan.encoding_format)

    def _post(
        self,
        deployment: Deployment,
        action: str,
        payload: dict[str, Any],
        options: CallOptions,
    ) -> Generator[HttpCall, httpx.Response, Any]:
        url, headers = self._target(deployment, action)
        return (
            yield from post_json(
                self.name, url, headers, payload, options.timeout, error_from_response
            )
        )

    def _target(self, deployment: Deployment, action: str) -> tuple[str, dict[str, str]]:
        params = deployment.litellm_params
        base = (params.api_base or self.default_base).rstrip("/")
        headers = {"Content-Type": "application/json"}
        if params.api_key is not None:
            headers["x-goog-api-key"] = params.api_key.get_secret_value()
        return f"{base}/v1beta/models/{action}", headers


def _model(deployment: Deployment) -> str:
    return deployment.litellm_params.provider_model.removeprefix("models/")
