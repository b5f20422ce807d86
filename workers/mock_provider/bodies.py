"""The mock provider's request bodies: validated once, into what steers a call's
faults and how to build its success body."""

from __future__ import annotations

import hashlib
import math
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from models.mock_config import MockConfig

__all__ = ["Build", "Call", "Invalid", "parse_chat", "parse_embeddings"]

Json = dict[str, Any]
Build = Callable[[MockConfig, int], Json]


class Invalid(Exception):
    """A bad request body, carried up to one place that turns it into a 400."""

    def __init__(self, message: str, param: str | None) -> None:
        super().__init__(message)
        self.param = param


@dataclass(frozen=True)
class Call:
    """A validated request: what steers its faults and how to build its success body."""

    directive_text: str
    prompt_tokens: int
    build: Build
    #: A streamed reply, and with the usage chunk (`stream_options.include_usage`).
    stream: bool = False
    include_usage: bool = False


def _content_text(content: Any) -> str:
    """Join the text of a string content or of the "text" parts of a list content."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = [p.get("text") for p in content if isinstance(p, dict)]
        return " ".join(p for p in parts if isinstance(p, str))
    return ""


def _optional_int(body: Json, name: str, minimum: int) -> int | None:
    value = body.get(name)
    if value is not None and (type(value) is not int or value < minimum):  # rejects bools too
        raise Invalid(f"'{name}' must be an integer of at least {minimum}", name)
    return value


def _require_model(body: Any) -> str:
    if not isinstance(body, dict):
        raise Invalid("the request body must be a JSON object", None)
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise Invalid("'model' is required and must be a non-empty string", "model")
    return model


def parse_chat(body: Any) -> Call:
    model = _require_model(body)
    messages = body.get("messages")
    if not (isinstance(messages, list) and messages and all(isinstance(m, dict) for m in messages)):
        raise Invalid("'messages' must be a non-empty list of message objects", "messages")
    options = body.get("stream_options") or {}
    if not isinstance(options, dict):
        raise Invalid("'stream_options' must be an object", "stream_options")
    n = _optional_int(body, "n", 1) or 1
    limit = _optional_int(body, "max_completion_tokens", 1)
    limit = limit if limit is not None else _optional_int(body, "max_tokens", 1)
    texts = [_content_text(m.get("content")) for m in messages]
    users = [t for m, t in zip(messages, texts, strict=True) if m.get("role") == "user"]
    last_user = users[-1] if users else ""
    prompt_tokens = max(1, sum(len(t.split()) for t in texts))

    def build(config: MockConfig, number: int) -> Json:
        reply = f"Echo: {last_user}" if config.reply == "echo" else config.reply
        words = reply.split()
        finish = "stop"
        if limit is not None and len(words) > limit:
            reply, words, finish = " ".join(words[:limit]), words[:limit], "length"
        message = {"role": "assistant", "content": reply}
        choice = {"message": message, "finish_reason": finish, "logprobs": None}
        completion = len(words) * n
        usage = {"prompt_tokens": prompt_tokens, "completion_tokens": completion}
        return {
            "id": f"chatcmpl-mock-{number}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": model,
            "choices": [{"index": i, **choice} for i in range(n)],
            "usage": usage | {"total_tokens": prompt_tokens + completion},
            "system_fingerprint": None,
        }

    stream = bool(body.get("stream"))
    return Call(
        last_user, prompt_tokens, build, stream, stream and bool(options.get("include_usage"))
    )


def _vector(text: str) -> list[float]:
    """Eight unit-length floats from the text's hash: stable across runs and processes."""
    raw = struct.unpack("<8i", hashlib.sha256(text.encode()).digest())
    norm = math.sqrt(sum(x * x for x in raw)) or 1.0
    return [round(x / norm, 6) for x in raw]


def parse_embeddings(body: Any) -> Call:
    model = _require_model(body)
    given = body.get("input")
    inputs = [given] if isinstance(given, str) else given
    if not isinstance(inputs, list) or not inputs or not all(isinstance(t, str) for t in inputs):
        raise Invalid("'input' must be a string or a non-empty list of strings", "input")
    prompt_tokens = max(1, sum(len(t.split()) for t in inputs))

    def build(_config: MockConfig, _number: int) -> Json:
        data = [
            {"object": "embedding", "index": i, "embedding": _vector(t)}
            for i, t in enumerate(inputs)
        ]
        usage = {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens}
        return {"object": "list", "data": data, "model": model, "usage": usage}

    return Call(inputs[-1], prompt_tokens, build)
