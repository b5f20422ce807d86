"""Anthropic's Message Batches shape, translated to and from the job format.

Why: every job stores an OpenAI chat-completions request and an OpenAI `chat.completion`,
whichever provider serves it, but `POST /v1/messages/batches` speaks Anthropic Messages.
The API turns each request's `params` into a job body on the way in, and each finished
job into an Anthropic Message or error object on the way out. The converters are pure,
never mutate their input and share nothing mutable with it.

Nothing is silently weakened: what the OpenAI shape cannot carry (`top_k`, thinking,
server tools, an `is_error` tool result, ...) raises `AnthropicShapeError` naming its path
(`params.top_k`, `params.messages[2].content[0].type`). Null-valued keys count as unset.

`cache_control` on text and image blocks rides on the OpenAI content part, the fleet's
(and LiteLLM's) extension that `workers/providers/anthropic.py` reads back; elsewhere it
has no carrier and is refused. `STOP_REASONS` inverts that module's finish-reason table;
`stop_sequence` is always null, as a job result does not say which sequence matched.
"""

from __future__ import annotations

import copy
import hashlib
import json
from collections.abc import Mapping
from typing import Any

__all__ = [
    "ERROR_TYPES",
    "STOP_REASONS",
    "AnthropicShapeError",
    "anthropic_to_openai_request",
    "anthropic_usage",
    "openai_error_to_anthropic",
    "openai_to_anthropic_message",
]

#: OpenAI finish_reason -> Anthropic stop_reason; absent or unknown is end_turn (tool_use
#: when the message holds tool calls, as some servers finish those with "stop").
STOP_REASONS: dict[str, str] = {
    "stop": "end_turn",
    "length": "max_tokens",
    "tool_calls": "tool_use",
    "function_call": "tool_use",
    "content_filter": "refusal",
}
#: The Anthropic error types the anthropic SDK's `ErrorObject` union accepts.
ERROR_TYPES = frozenset(
    {"invalid_request_error", "authentication_error", "billing_error", "permission_error"}
    | {"not_found_error", "rate_limit_error", "timeout_error", "api_error", "overloaded_error"}
)
#: Stored error type or code -> Anthropic type: those, OpenAI's, the fleet's, and
#: `request_too_large` (HTTP 413 of a whole request; the SDK's union lacks it).
_ERROR_NAMES: dict[str, str] = {name: name for name in ERROR_TYPES} | {
    "insufficient_quota": "billing_error",
    "server_error": "api_error",
    "conflict_error": "invalid_request_error",
    "request_too_large": "invalid_request_error",
}
_STATUS_ERRORS: dict[int, str] = {
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    408: "timeout_error",
    429: "rate_limit_error",
    504: "timeout_error",
    529: "overloaded_error",
}
_TOP_LEVEL = frozenset(
    {"model", "max_tokens", "messages", "system", "stop_sequences", "temperature", "top_p"}
    | {"metadata", "tools", "tool_choice", "stream"}
)
#: The content blocks each place may hold (Anthropic allows more; these can be carried).
_BLOCKS: dict[str, frozenset[str]] = {
    "system": frozenset({"text"}),
    "user": frozenset({"text", "image", "tool_result"}),
    "assistant": frozenset({"text", "tool_use"}),
    "tool_result": frozenset({"text"}),
}
_Dicts = list[dict[str, Any]]
_NOT_CARRIED = "is not supported: the OpenAI-shaped job cannot carry it"
#: OpenAI's `stop` (and the job schema) holds at most four sequences.
MAX_STOP_SEQUENCES = 4


class AnthropicShapeError(ValueError):
    """An Anthropic request the job format cannot carry; `param` is its path."""

    def __init__(self, param: str, message: str) -> None:
        super().__init__(f"{param}: {message}")
        self.param = param
        self.message = message


# --- in: Anthropic Messages params -> OpenAI chat completions -----------------------


def anthropic_to_openai_request(
    params: Mapping[str, Any], root: str = "params", streamed: bool = False
) -> dict[str, Any]:
    """The job body for Anthropic Messages `params` (a batch request's, at `root`, or a
    `POST /v1/messages` body at root ""); `stream` only where the caller is `streamed`."""
    _only(params, _TOP_LEVEL, root)
    if params.get("stream") and not streamed:
        raise AnthropicShapeError(_at(root, "stream"), "batch requests are not streamed")
    body: dict[str, Any] = {
        "model": _get(params, "model", str, root, required=True),
        "max_tokens": _get(params, "max_tokens", int, root, required=True),
    }
    messages = []
    if (system := _get(params, "system", str | list, root)) is not None:
        if isinstance(system, list):
            system = _collapse(_split(system, _at(root, "system"), "system")[0])
        messages.append({"role": "system", "content": system})
    turns = _get(params, "messages", list, root, required=True)
    if not turns:
        raise AnthropicShapeError(_at(root, "messages"), "must hold at least one message")
    for index, turn in enumerate(turns):
        messages.extend(_convert_turn(turn, _at(root, f"messages[{index}]")))
    body["messages"] = messages
    if stop := _get(params, "stop_sequences", list, root):
        if len(stop) > MAX_STOP_SEQUENCES or not all(isinstance(s, str) for s in stop):
            raise AnthropicShapeError(_at(root, "stop_sequences"), "must be at most four strings")
        body["stop"] = list(stop)
    for key in ("temperature", "top_p"):
        if (value := _get(params, key, int | float, root)) is not None:
            body[key] = value
    if (tools := _get(params, "tools", list, root)) is not None:
        path = _at(root, "tools")
        body["tools"] = [_convert_tool(tool, f"{path}[{i}]") for i, tool in enumerate(tools)]
    if (choice := _get(params, "tool_choice", dict, root)) is not None:
        body.update(_convert_tool_choice(choice, _at(root, "tool_choice")))
    metadata = _get(params, "metadata", dict, root) or {}
    _only(metadata, frozenset({"user_id"}), _at(root, "metadata"))
    if (user := _get(metadata, "user_id", str, _at(root, "metadata"))) is not None:
        body["user"] = user
    return body


def _at(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _only(obj: Mapping[str, Any], allowed: frozenset[str], path: str) -> None:
    """Refuse the first key (with a non-null value) outside `allowed`."""
    for key, value in obj.items():
        if key not in allowed and value is not None:
            raise AnthropicShapeError(_at(path, key), _NOT_CARRIED)


def _get(obj: Mapping[str, Any], key: str, kind: Any, path: str, required: bool = False) -> Any:
    """`obj[key]` checked against `kind`; None when absent or null and not required."""
    value = obj.get(key)
    if value is None:
        if required:
            raise AnthropicShapeError(_at(path, key), "is required")
        return None
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
        raise AnthropicShapeError(_at(path, key), f"has the wrong type ({type(value).__name__})")
    return value


def _convert_turn(turn: Any, path: str) -> list[dict[str, Any]]:
    """One turn as OpenAI messages; a user turn's tool results go first, as `tool` ones."""
    if not isinstance(turn, Mapping):
        raise AnthropicShapeError(path, "must be an object")
    _only(turn, frozenset({"role", "content"}), path)
    role = turn.get("role")
    if role not in ("user", "assistant", "system"):
        raise AnthropicShapeError(f"{path}.role", "must be user, assistant or system")
    content = _get(turn, "content", str | list, path, required=True)
    if isinstance(content, str):
        return [{"role": role, "content": content}]
    if not content:
        raise AnthropicShapeError(f"{path}.content", "must not be empty")
    parts, calls, results = _split(content, f"{path}.content", role)
    if role != "assistant":
        return [*results, {"role": role, "content": _collapse(parts)}] if parts else results
    message = {"role": "assistant", "content": _collapse(parts) if parts else None}
    return [{**message, "tool_calls": calls} if calls else message]


def _split(blocks: list[Any], path: str, place: str) -> tuple[_Dicts, _Dicts, _Dicts]:
    """Content parts, tool calls and tool messages, each in order, from `blocks`."""
    parts: _Dicts = []
    calls: _Dicts = []
    results: _Dicts = []
    for index, item in enumerate(blocks):
        bpath = f"{path}[{index}]"
        kind = item.get("type") if isinstance(item, Mapping) else None
        if kind not in _BLOCKS[place]:
            msg = f"{kind!r} blocks are not supported in {place} content"
            raise AnthropicShapeError(f"{bpath}.type", msg)
        if kind == "text":
            _only(item, frozenset({"type", "text", "cache_control"}), bpath)
            part = {"type": "text", "text": _get(item, "text", str, bpath, required=True)}
        elif kind == "image":
            part = _image_part(item, bpath)
        elif kind == "tool_use":
            calls.append(_tool_call(item, bpath))
            continue
        else:
            results.append(_tool_message(item, bpath))
            continue
        if item.get("cache_control") is not None:
            part["cache_control"] = copy.deepcopy(item["cache_control"])
        parts.append(part)
    return parts, calls, results


def _collapse(parts: list[dict[str, Any]]) -> str | list[dict[str, Any]]:
    """One plain text part is sent as a string; anything else as a list of parts."""
    if len(parts) == 1 and parts[0].keys() == {"type", "text"} and parts[0]["type"] == "text":
        return str(parts[0]["text"])
    return parts


def _image_part(block: Mapping[str, Any], path: str) -> dict[str, Any]:
    _only(block, frozenset({"type", "source", "cache_control"}), path)
    source = _get(block, "source", dict, path, required=True)
    spath = f"{path}.source"
    if source.get("type") == "base64":
        _only(source, frozenset({"type", "media_type", "data"}), spath)
        media = _get(source, "media_type", str, spath, required=True)
        url = f"data:{media};base64,{_get(source, 'data', str, spath, required=True)}"
    elif source.get("type") == "url":
        _only(source, frozenset({"type", "url"}), spath)
        url = _get(source, "url", str, spath, required=True)
    else:
        raise AnthropicShapeError(f"{spath}.type", "only base64 and url images are supported")
    return {"type": "image_url", "image_url": {"url": url}}


def _tool_call(block: Mapping[str, Any], path: str) -> dict[str, Any]:
    _only(block, frozenset({"type", "id", "name", "input"}), path)
    name = _get(block, "name", str, path, required=True)
    arguments = json.dumps(_get(block, "input", dict, path, required=True))
    call_id = _get(block, "id", str, path, required=True)
    return {"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}}


def _tool_message(block: Mapping[str, Any], path: str) -> dict[str, Any]:
    """A tool message is a string: a tool result's text blocks are joined by newlines."""
    _only(block, frozenset({"type", "tool_use_id", "content", "is_error"}), path)
    if block.get("is_error"):
        raise AnthropicShapeError(f"{path}.is_error", "OpenAI tool messages cannot flag errors")
    content = _get(block, "content", str | list, path) or ""
    if isinstance(content, list):
        parts = _split(content, f"{path}.content", "tool_result")[0]
        if cached := [i for i, part in enumerate(parts) if "cache_control" in part]:
            raise AnthropicShapeError(f"{path}.content[{cached[0]}].cache_control", _NOT_CARRIED)
        content = "\n".join(part["text"] for part in parts)
    call_id = _get(block, "tool_use_id", str, path, required=True)
    return {"role": "tool", "tool_call_id": call_id, "content": content}


def _convert_tool(tool: Any, path: str) -> dict[str, Any]:
    if not isinstance(tool, Mapping) or tool.get("type") not in ("custom", None):
        raise AnthropicShapeError(f"{path}.type", "only custom tools are supported")
    _only(tool, frozenset({"type", "name", "description", "input_schema", "strict"}), path)
    function: dict[str, Any] = {
        "name": _get(tool, "name", str, path, required=True),
        "parameters": copy.deepcopy(_get(tool, "input_schema", dict, path, required=True)),
    }
    for key, kind in (("description", str), ("strict", bool)):
        if (value := _get(tool, key, kind, path)) is not None:
            function[key] = value
    return {"type": "function", "function": function}


def _convert_tool_choice(choice: Mapping[str, Any], path: str) -> dict[str, Any]:
    """`tool_choice` and, from `disable_parallel_tool_use`, `parallel_tool_calls`."""
    _only(choice, frozenset({"type", "name", "disable_parallel_tool_use"}), path)
    kind = choice.get("type")
    if kind == "tool":
        name = _get(choice, "name", str, path, required=True)
        out: dict[str, Any] = {"tool_choice": {"type": "function", "function": {"name": name}}}
    elif kind in ("auto", "any", "none"):
        out = {"tool_choice": "required" if kind == "any" else kind}
    else:
        raise AnthropicShapeError(f"{path}.type", "must be auto, any, tool or none")
    if _get(choice, "disable_parallel_tool_use", bool, path):
        out["parallel_tool_calls"] = False
    return out


# --- out: OpenAI chat.completion and stored error -> Anthropic Message and error ----


def openai_to_anthropic_message(completion: Mapping[str, Any], model: str) -> dict[str, Any]:
    """A finished job's `chat.completion` as the Anthropic Message `model` returned."""
    choices = completion.get("choices")
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], Mapping):
        raise AnthropicShapeError("completion.choices", "must hold at least one choice")
    message = choices[0].get("message") or {}
    content: list[dict[str, Any]] = []
    if isinstance(text := message.get("content") or message.get("refusal"), str):
        content.append({"type": "text", "text": text})
    content.extend(_tool_use_blocks(message.get("tool_calls") or []))
    stop_reason = STOP_REASONS.get(str(choices[0].get("finish_reason")), "end_turn")
    if stop_reason == "end_turn" and any(b["type"] == "tool_use" for b in content):
        stop_reason = "tool_use"
    return {
        "id": _message_id(completion),
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": stop_reason,
        "stop_sequence": None,
        "usage": anthropic_usage(completion.get("usage")),
    }


def _tool_use_blocks(calls: list[Any]) -> list[dict[str, Any]]:
    """Tool calls as tool_use blocks; malformed arguments cannot become `input`."""
    blocks = []
    for index, call in enumerate(calls):
        path = f"completion.choices[0].message.tool_calls[{index}]"
        function = call.get("function") if isinstance(call, Mapping) else None
        if not isinstance(function, Mapping) or call.get("type", "function") != "function":
            raise AnthropicShapeError(path, "only function tool calls can be returned")
        try:
            arguments = json.loads(function.get("arguments") or "{}")
        except (TypeError, ValueError):
            arguments = None
        if not isinstance(arguments, dict):
            raise AnthropicShapeError(f"{path}.function.arguments", "is not a JSON object")
        name = _get(function, "name", str, f"{path}.function", required=True)
        call_id = _get(call, "id", str, path, required=True)
        blocks.append({"type": "tool_use", "id": call_id, "name": name, "input": arguments})
    return blocks


def _message_id(completion: Mapping[str, Any]) -> str:
    """The same id for the same completion; an Anthropic-served job keeps its `msg_` id."""
    stable = completion.get("id")
    if not isinstance(stable, str) or not stable:
        canonical = json.dumps(completion, sort_keys=True, default=str).encode()
        stable = hashlib.sha256(canonical).hexdigest()[:24]
    return stable if stable.startswith("msg_") else f"msg_{stable}"


def anthropic_usage(usage: Any) -> dict[str, int]:
    """OpenAI's `prompt_tokens` includes cache reads and writes (the fleet's
    `cache_creation_tokens`, else OpenAI's `cache_write_tokens`); `input_tokens` neither."""
    usage = usage if isinstance(usage, Mapping) else {}
    details = usage.get("prompt_tokens_details")
    details = details if isinstance(details, Mapping) else {}
    cached = int(details.get("cached_tokens") or 0)
    written = int(details.get("cache_creation_tokens") or details.get("cache_write_tokens") or 0)
    prompt = int(usage.get("prompt_tokens") or 0)
    return {
        "input_tokens": max(prompt - cached - written, 0),
        "output_tokens": int(usage.get("completion_tokens") or 0),
        "cache_read_input_tokens": cached,
        "cache_creation_input_tokens": written,
    }


def openai_error_to_anthropic(error: Mapping[str, Any]) -> dict[str, Any]:
    """A failed job's stored error as an `errored` result's `error`. Most specific first: an
    Anthropic type in `code` (where the Anthropic protocol keeps it), 402/529, `type`, status."""
    status = error.get("status_code")
    status = status if isinstance(status, int) and not isinstance(status, bool) else 0
    kind = _ERROR_NAMES.get(str(error.get("code")))
    if kind is None and status in (402, 529):
        kind = _STATUS_ERRORS[status]
    kind = kind or _ERROR_NAMES.get(str(error.get("type"))) or _STATUS_ERRORS.get(status)
    if kind is None:
        kind = "invalid_request_error" if 400 <= status < 500 else "api_error"
    message = error.get("message")
    message = message if isinstance(message, str) and message else "the request failed"
    return {"type": "error", "error": {"type": kind, "message": message}}
