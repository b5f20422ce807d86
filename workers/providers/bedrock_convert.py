"""Pure converters between OpenAI's chat shapes and Amazon Bedrock's Converse API. No
I/O and no clock here (bedrock.py signs, sends and stamps); the caller's body is never
mutated.

Converse wants strictly alternating user/assistant turns with content blocks, a
separate `system` list, tool calls as `toolUse` blocks and tool results as `toolResult`
blocks inside a user turn; OpenAI's flat message list is folded into that shape here.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import re
from collections.abc import Callable
from typing import Any

from workers.providers import errors
from workers.providers.base import ProviderResult, Usage, openai_usage
from workers.providers.params import UnsupportedParamError, check_params

__all__ = [
    "FINISH_REASONS",
    "bad",
    "build_converse_body",
    "malformed",
    "parse_converse_response",
    "usage_from_converse",
    "without_defaults",
]

log = logging.getLogger(__name__)

#: OpenAI chat parameters Converse can honour. `n: 1` and `stream: false` are what
#: Converse does anyway and count as unset; anything else goes through check_params.
CHAT_PARAMS = (
    "max_tokens",
    "max_completion_tokens",
    "temperature",
    "top_p",
    "stop",
    "tools",
    "tool_choice",
)
DEFAULTS = {"n": 1, "stream": False, "encoding_format": "float"}

#: Converse stopReason -> OpenAI finish_reason; anything unlisted is "stop".
FINISH_REASONS = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "guardrail_intervened": "content_filter",
    "content_filtered": "content_filter",
}

_DATA_URL = re.compile(r"data:image/(png|jpeg|jpg|gif|webp);base64,(.*)", re.DOTALL)
_EMPTY_SCHEMA = {"type": "object", "properties": {}}
_TOOL_CHOICES = {"auto": "auto", "required": "any"}

Blocks = list[dict[str, Any]]


def bad(provider: str, message: str, param: str | None = None) -> errors.BadRequestError:
    return errors.BadRequestError(message, provider=provider, param=param)


def malformed(provider: str, what: str) -> errors.MalformedResponseError:
    return errors.MalformedResponseError(f"bedrock reply has {what}", provider=provider)


def without_defaults(body: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in body.items() if not (k in DEFAULTS and v == DEFAULTS[k])}


def _unsupported(provider: str, drop: bool, param: str, what: str) -> None:
    """Drop a content part Converse cannot carry (with a warning), or fail naming it."""
    if drop:
        log.warning("%s: dropped %s from %s", provider, what, param)
        return
    raise UnsupportedParamError(
        f"{provider} does not support {what} in `{param}`; remove it, or set "
        "`drop_params: true` for the deployment to drop it",
        provider=provider,
        param=param,
        code="unsupported_parameter",
    )


# -- chat request ---------------------------------------------------------------------


def build_converse_body(body: dict[str, Any], provider: str, drop: bool) -> dict[str, Any]:
    """The Converse request body (without `modelId`, which travels in the URL)."""
    checked = check_params(without_defaults(body), CHAT_PARAMS, provider, drop)
    messages = checked.get("messages")
    if not isinstance(messages, list) or not messages:
        raise bad(provider, "`messages` must be a non-empty list", "messages")
    system, turns = convert_messages(messages, provider, drop)
    out: dict[str, Any] = {"messages": turns}
    if system:
        out["system"] = system
    inference = _inference_config(checked)
    if inference:
        out["inferenceConfig"] = inference
    tool_config = _tool_config(checked.get("tools"), checked.get("tool_choice"), provider)
    if tool_config:
        out["toolConfig"] = tool_config
    return out


def convert_messages(
    messages: list[Any], provider: str, drop: bool
) -> tuple[Blocks, list[dict[str, Any]]]:
    """System blocks and alternating turns; consecutive same-role turns are merged, so
    the results of several tool calls land in one user turn."""
    system: Blocks = []
    turns: list[dict[str, Any]] = []
    for i, message in enumerate(messages):
        role = message.get("role") if isinstance(message, dict) else None
        if role in ("system", "developer"):
            system += [{"text": t} for t in _texts(message.get("content"), i, provider)]
            continue
        convert = _ROLES.get(role) if isinstance(role, str) else None
        if convert is None:
            raise bad(provider, f"messages[{i}] has an unsupported role {role!r}", f"messages[{i}]")
        turn_role, blocks = convert(message, i, provider, drop)
        if not blocks:
            raise bad(provider, f"messages[{i}] has no content", f"messages[{i}].content")
        if turns and turns[-1]["role"] == turn_role:
            turns[-1] = {"role": turn_role, "content": [*turns[-1]["content"], *blocks]}
        else:
            turns.append({"role": turn_role, "content": blocks})
    return system, turns


def _texts(content: Any, i: int, provider: str) -> list[str]:
    """The non-blank texts of a text-only content (a string or a list of text parts)."""
    if content is None:
        return []
    if isinstance(content, str):
        return [content] if content.strip() else []
    if isinstance(content, list):
        texts = []
        for part in content:
            if not isinstance(part, dict) or part.get("type") not in ("text", "refusal"):
                raise bad(provider, f"messages[{i}].content may hold only text parts")
            text = part.get("text", part.get("refusal"))
            if isinstance(text, str) and text.strip():
                texts.append(text)
        return texts
    raise bad(provider, f"messages[{i}].content must be a string or a list", f"messages[{i}]")


def _user_turn(message: dict[str, Any], i: int, provider: str, drop: bool) -> tuple[str, Blocks]:
    content = message.get("content")
    if not isinstance(content, list):
        return "user", [{"text": t} for t in _texts(content, i, provider)]
    blocks: Blocks = []
    param = f"messages[{i}].content"
    for part in content:
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text":
            blocks += [{"text": t} for t in _texts([part], i, provider)]
        elif kind == "image_url":
            image = _image_block(part.get("image_url"), provider, drop, param)
            blocks += [image] if image else []
        else:
            _unsupported(provider, drop, param, f"content parts of type {kind!r}")
    return "user", blocks


def _image_block(image_url: Any, provider: str, drop: bool, param: str) -> dict[str, Any] | None:
    """A data: URL as an inline image; Converse cannot fetch URLs."""
    url = image_url.get("url") if isinstance(image_url, dict) else image_url
    match = _DATA_URL.fullmatch(url.strip()) if isinstance(url, str) else None
    if match is None:
        _unsupported(provider, drop, param, "image URLs (only base64 data: URLs)")
        return None
    fmt, data = match.groups()
    try:
        base64.b64decode(data, validate=True)
    except binascii.Error as exc:
        raise bad(provider, f"`{param}` holds an image that is not valid base64", param) from exc
    return {"image": {"format": "jpeg" if fmt == "jpg" else fmt, "source": {"bytes": data}}}


def _assistant_turn(
    message: dict[str, Any], i: int, provider: str, drop: bool
) -> tuple[str, Blocks]:
    blocks: Blocks = [{"text": t} for t in _texts(message.get("content"), i, provider)]
    for j, call in enumerate(message.get("tool_calls") or []):
        param = f"messages[{i}].tool_calls[{j}]"
        function = call.get("function") if isinstance(call, dict) else None
        if not isinstance(function, dict) or not call.get("id") or not function.get("name"):
            raise bad(provider, f"`{param}` needs an id and a function name", param)
        try:
            arguments = json.loads(function.get("arguments") or "{}")
        except (TypeError, ValueError) as exc:
            raise bad(
                provider, f"`{param}.function.arguments` is not JSON", f"{param}.function"
            ) from exc
        blocks.append(
            {"toolUse": {"toolUseId": call["id"], "name": function["name"], "input": arguments}}
        )
    return "assistant", blocks


def _tool_turn(message: dict[str, Any], i: int, provider: str, drop: bool) -> tuple[str, Blocks]:
    """A tool result, as JSON when it is a JSON object, else as text."""
    tool_use_id = message.get("tool_call_id")
    if not isinstance(tool_use_id, str) or not tool_use_id:
        raise bad(provider, f"messages[{i}] needs a `tool_call_id`", f"messages[{i}]")
    text = "\n".join(_texts(message.get("content"), i, provider))
    try:
        value = json.loads(text)
    except ValueError:
        value = None
    content = [{"json": value}] if isinstance(value, dict) else [{"text": text}]
    return "user", [{"toolResult": {"toolUseId": tool_use_id, "content": content}}]


_ROLES: dict[str, Callable[[dict[str, Any], int, str, bool], tuple[str, Blocks]]] = {
    "user": _user_turn,
    "assistant": _assistant_turn,
    "tool": _tool_turn,
}


def _inference_config(body: dict[str, Any]) -> dict[str, Any]:
    stop = body.get("stop")
    max_tokens = body.get("max_completion_tokens")
    if max_tokens is None:
        max_tokens = body.get("max_tokens")
    config = {
        "maxTokens": max_tokens,
        "temperature": body.get("temperature"),
        "topP": body.get("top_p"),
        "stopSequences": [stop] if isinstance(stop, str) else stop,
    }
    return {k: v for k, v in config.items() if v is not None}


def _tool_config(tools: Any, choice: Any, provider: str) -> dict[str, Any] | None:
    """`toolConfig`; Converse has no "none" choice, so `tool_choice: "none"` sends no
    tools at all."""
    if not tools or choice == "none":
        return None
    if not isinstance(tools, list):
        raise bad(provider, "`tools` must be a list", "tools")
    config: dict[str, Any] = {"tools": [_tool_spec(t, j, provider) for j, t in enumerate(tools)]}
    if isinstance(choice, str) and choice in _TOOL_CHOICES:
        config["toolChoice"] = {_TOOL_CHOICES[choice]: {}}
    elif isinstance(choice, dict) and isinstance(choice.get("function"), dict):
        config["toolChoice"] = {"tool": {"name": choice["function"].get("name")}}
    elif choice is not None:
        raise bad(provider, f"unsupported `tool_choice` {choice!r}", "tool_choice")
    return config


def _tool_spec(tool: Any, j: int, provider: str) -> dict[str, Any]:
    function = tool.get("function") if isinstance(tool, dict) else None
    if not isinstance(function, dict) or tool.get("type") != "function" or not function.get("name"):
        raise bad(provider, f"`tools[{j}]` must be a function with a name", f"tools[{j}]")
    spec: dict[str, Any] = {
        "name": function["name"],
        "inputSchema": {"json": function.get("parameters") or _EMPTY_SCHEMA},
    }
    if function.get("description"):
        spec["description"] = function["description"]
    if function.get("strict") is True:
        spec["strict"] = True
    return {"toolSpec": spec}


# -- chat response --------------------------------------------------------------------


def usage_from_converse(raw: Any, provider: str) -> Usage:
    """Converse counts cache reads and writes apart from `inputTokens`; the normalized
    prompt count includes them."""
    if not isinstance(raw, dict):
        raise malformed(provider, "no `usage`")
    try:
        read = int(raw.get("cacheReadInputTokens") or 0)
        write = int(raw.get("cacheWriteInputTokens") or 0)
        prompt = int(raw.get("inputTokens") or 0) + read + write
        completion = int(raw.get("outputTokens") or 0)
    except (TypeError, ValueError) as exc:
        raise malformed(provider, "a malformed `usage`") from exc
    return Usage(
        prompt, completion, prompt + completion, cached_tokens=read, cache_creation_tokens=write
    )


def parse_converse_response(
    provider: str, data: Any, *, model: str, response_id: str, created: int
) -> ProviderResult:
    """A Converse reply as an OpenAI `chat.completion`."""
    output = data.get("output") if isinstance(data, dict) else None
    message = output.get("message") if isinstance(output, dict) else None
    content = message.get("content") if isinstance(message, dict) else None
    if not isinstance(content, list) or not all(isinstance(b, dict) for b in content):
        raise malformed(provider, "no `output.message.content` list")
    usage = usage_from_converse(data.get("usage"), provider)
    texts = [b["text"] for b in content if isinstance(b.get("text"), str)]
    reply: dict[str, Any] = {"role": "assistant", "content": "".join(texts) or None}
    tool_calls = [_tool_call(b["toolUse"], provider) for b in content if "toolUse" in b]
    if tool_calls:
        reply["tool_calls"] = tool_calls
    choice = {
        "index": 0,
        "message": reply,
        "finish_reason": FINISH_REASONS.get(data.get("stopReason"), "stop"),
        "logprobs": None,
    }
    response = {
        "id": response_id,
        "object": "chat.completion",
        "created": created,
        "model": model,
        "choices": [choice],
        "usage": openai_usage(usage),
    }
    return ProviderResult(response=response, usage=usage)


def _tool_call(block: Any, provider: str) -> dict[str, Any]:
    if not isinstance(block, dict) or not block.get("toolUseId") or not block.get("name"):
        raise malformed(provider, "a `toolUse` block without an id or name")
    return {
        "id": block["toolUseId"],
        "type": "function",
        "function": {"name": block["name"], "arguments": json.dumps(block.get("input") or {})},
    }
