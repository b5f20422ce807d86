"""OpenAI chat messages, tools and tool choice as Anthropic Messages' (pure; used by
workers.providers.anthropic and never mutating their input)."""

from __future__ import annotations

import json
from typing import Any

from workers.providers import errors

__all__ = ["convert_messages", "convert_tool_choice", "convert_tools", "refused"]


def convert_messages(
    provider: str, messages: list[dict[str, Any]]
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """System text blocks, and turns that alternate: consecutive turns of one role
    (tool results are user turns) are merged, never padded with invented ones."""
    system: list[dict[str, Any]] = []
    turns: list[dict[str, Any]] = []
    for message in messages:
        role = message.get("role")
        if role in ("system", "developer"):
            system.extend(_content_blocks(provider, message.get("content")))
            continue
        if role == "user":
            blocks = _content_blocks(provider, message.get("content"))
        elif role == "assistant":
            blocks = _assistant_blocks(provider, message)
        elif role == "tool":
            role, blocks = "user", [_tool_result_block(provider, message)]
        else:
            raise refused(provider, f"messages with role {role!r} are not supported", "messages")
        if turns and turns[-1]["role"] == role:
            turns[-1]["content"].extend(blocks)
        else:
            turns.append({"role": role, "content": blocks})
    return system, turns


def _content_blocks(provider: str, content: Any) -> list[dict[str, Any]]:
    """OpenAI message content (a string or a list of parts) as Anthropic blocks; empty
    text is left out, as Anthropic refuses empty text blocks."""
    if content is None:
        return []
    if isinstance(content, str):
        return [{"type": "text", "text": content}] if content else []
    if not isinstance(content, list):
        raise refused(provider, "message `content` must be a string or a list", "messages")
    blocks = []
    for part in content:
        ptype = part.get("type") if isinstance(part, dict) else None
        if ptype == "text":
            if not part.get("text"):
                continue
            block: dict[str, Any] = {"type": "text", "text": part["text"]}
        elif ptype == "image_url":
            block = _image_block(provider, part.get("image_url"))
        else:
            raise refused(
                provider, f"content parts of type {ptype!r} are not supported", "messages"
            )
        if isinstance(part, dict) and part.get("cache_control"):
            block["cache_control"] = dict(part["cache_control"])
        blocks.append(block)
    return blocks


def _image_block(provider: str, image_url: Any) -> dict[str, Any]:
    url = image_url.get("url") if isinstance(image_url, dict) else image_url
    if not isinstance(url, str):
        raise refused(provider, "an `image_url` part needs a `url`", "messages")
    if url.startswith(("http://", "https://")):
        return {"type": "image", "source": {"type": "url", "url": url}}
    header, comma, data = url.partition(",")
    if not (header.startswith("data:") and header.endswith(";base64") and comma):
        raise refused(provider, "image URLs must be http(s) or base64 data: URLs", "messages")
    media_type = header.removeprefix("data:").removesuffix(";base64")
    return {"type": "image", "source": {"type": "base64", "media_type": media_type, "data": data}}


def _assistant_blocks(provider: str, message: dict[str, Any]) -> list[dict[str, Any]]:
    blocks = _content_blocks(provider, message.get("content"))
    for call in message.get("tool_calls") or []:
        function = call.get("function") or {}
        try:
            arguments = json.loads(function.get("arguments") or "{}")
        except (TypeError, ValueError) as exc:
            raise refused(
                provider, "tool call `arguments` must be a JSON object", "messages"
            ) from exc
        if not isinstance(arguments, dict):
            raise refused(provider, "tool call `arguments` must be a JSON object", "messages")
        blocks.append(
            {"type": "tool_use", "id": call["id"], "name": function["name"], "input": arguments}
        )
    return blocks


def _tool_result_block(provider: str, message: dict[str, Any]) -> dict[str, Any]:
    content = message.get("content")
    content = content if isinstance(content, str) else _content_blocks(provider, content)
    return {"type": "tool_result", "tool_use_id": message["tool_call_id"], "content": content}


def convert_tools(provider: str, tools: list[dict[str, Any]]) -> list[dict[str, Any]]:
    converted = []
    for tool in tools:
        function = tool.get("function")
        if tool.get("type") != "function" or not isinstance(function, dict):
            raise refused(provider, "only `function` tools are supported", "tools")
        entry: dict[str, Any] = {
            "name": function["name"],
            "input_schema": function.get("parameters") or {"type": "object", "properties": {}},
        }
        if function.get("description"):
            entry["description"] = function["description"]
        converted.append(entry)
    return converted


def convert_tool_choice(
    provider: str, choice: Any, parallel_tool_calls: bool | None
) -> dict[str, Any] | None:
    """OpenAI `tool_choice` (and `parallel_tool_calls: false`) as Anthropic's."""
    converted: dict[str, Any] | None
    if choice is None:
        converted = None if parallel_tool_calls is not False else {"type": "auto"}
    elif choice in ("auto", "required", "none"):
        converted = {"type": {"auto": "auto", "required": "any", "none": "none"}[choice]}
    elif isinstance(choice, dict) and isinstance(choice.get("function"), dict):
        converted = {"type": "tool", "name": choice["function"]["name"]}
    else:
        raise refused(provider, f"unsupported `tool_choice`: {choice!r}", "tool_choice")
    if converted is not None and parallel_tool_calls is False and converted["type"] != "none":
        converted["disable_parallel_tool_use"] = True
    return converted


def refused(provider: str, message: str, param: str) -> errors.BadRequestError:
    return errors.BadRequestError(
        f"{provider}: {message}", provider=provider, param=param, code="invalid_value"
    )
