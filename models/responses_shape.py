"""OpenAI's Responses shape, translated to and from the job format (pure).

A response runs as a chat-completions job: `instructions` become the system message,
the conversation so far (`previous_response_id`) and the input items become the chat
messages, function tools and `text.format` become chat tools and `response_format`,
`max_output_tokens` the completion budget. The job's `chat.completion` becomes the
output items (a message with its text, a `function_call` per tool call), its usage the
Response usage. Input the chat shape cannot carry is refused naming its place
(`input[2].content[0].type`). Item ids are derived from the response's, so that the
items a stream announced are the items a later GET shows.
"""

from __future__ import annotations

from typing import Any

from models.schemas.responses import ResponseCreate

__all__ = [
    "FINISH_STATUS",
    "ResponsesShapeError",
    "assistant_message",
    "chat_body",
    "chat_messages",
    "input_items",
    "output_items",
    "response_object",
    "response_usage",
]

#: chat finish_reason -> (Response status, incomplete_details.reason).
FINISH_STATUS: dict[str, tuple[str, str | None]] = {
    "length": ("incomplete", "max_output_tokens"),
    "content_filter": ("incomplete", "content_filter"),
}
_ROLES = frozenset({"user", "system", "developer", "assistant"})
_TEXT_PARTS = frozenset({"input_text", "output_text"})


class ResponsesShapeError(ValueError):
    def __init__(self, param: str, message: str) -> None:
        super().__init__(f"{param}: {message}")
        self.param = param
        self.message = message


# --- in: input items -> chat messages --------------------------------------------------


def input_items(given: str | list[dict[str, Any]], ident: str) -> list[dict[str, Any]]:
    """The input as the items `input_items` lists, each with an id."""
    if isinstance(given, str):
        part = {"type": "input_text", "text": given}
        return [_message(f"msg_{ident}_in0", "user", [part])]
    return [_item(item, f"input[{i}]", f"{ident}_in{i}") for i, item in enumerate(given)]


def _item(item: dict[str, Any], path: str, ident: str) -> dict[str, Any]:
    kind = item.get("type", "message")
    if kind == "message":
        role = item.get("role")
        if role not in _ROLES:
            raise ResponsesShapeError(
                f"{path}.role", "must be user, system, developer or assistant"
            )
        content = item.get("content")
        text_type = "output_text" if role == "assistant" else "input_text"
        if isinstance(content, str):
            parts = [{"type": text_type, "text": content}]
        elif isinstance(content, list) and content:
            parts = [_part(p, f"{path}.content[{j}]") for j, p in enumerate(content)]
        else:
            raise ResponsesShapeError(f"{path}.content", "must be text or a list of parts")
        return _message(str(item.get("id") or f"msg_{ident}"), role, parts)
    if kind == "function_call":
        fields = {k: _text(item, k, path) for k in ("call_id", "name", "arguments")}
        call_id = str(item.get("id") or f"fc_{ident}")
        return {"id": call_id, "type": "function_call", **fields, "status": "completed"}
    if kind == "function_call_output":
        fields = {k: _text(item, k, path) for k in ("call_id", "output")}
        return {"id": f"fco_{ident}", "type": "function_call_output", **fields}
    raise ResponsesShapeError(
        f"{path}.type", f"{kind!r} items are not supported: use messages and function calls"
    )


def _part(part: Any, path: str) -> dict[str, Any]:
    kind = part.get("type") if isinstance(part, dict) else None
    if kind in _TEXT_PARTS:
        return {"type": kind, "text": _text(part, "text", path)}
    if kind == "input_image" and isinstance(part.get("image_url"), str):
        image = {"type": "input_image", "image_url": part["image_url"]}
        return image | ({"detail": part["detail"]} if part.get("detail") else {})
    raise ResponsesShapeError(f"{path}.type", f"{kind!r} parts are not supported")


def _text(obj: dict[str, Any], key: str, path: str) -> str:
    value = obj.get(key)
    if not isinstance(value, str):
        raise ResponsesShapeError(f"{path}.{key}", "is required and must be a string")
    return value


def _message(ident: str, role: str, parts: list[dict[str, Any]]) -> dict[str, Any]:
    return {"id": ident, "type": "message", "role": role, "status": "completed", "content": parts}


def chat_messages(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Normalized input items as chat messages; consecutive function calls are one
    assistant message's tool calls."""
    messages: list[dict[str, Any]] = []
    for item in items:
        if item["type"] == "function_call":
            call = {"name": item["name"], "arguments": item["arguments"]}
            tool_call = {"id": item["call_id"], "type": "function", "function": call}
            last = messages[-1] if messages else None
            if last is not None and last["role"] == "assistant" and "tool_calls" in last:
                last["tool_calls"].append(tool_call)
            else:
                messages.append({"role": "assistant", "content": None, "tool_calls": [tool_call]})
        elif item["type"] == "function_call_output":
            messages.append(
                {"role": "tool", "tool_call_id": item["call_id"], "content": item["output"]}
            )
        else:
            messages.append({"role": item["role"], "content": _chat_content(item["content"])})
    return messages


def _chat_content(parts: list[dict[str, Any]]) -> str | list[dict[str, Any]]:
    if all(p["type"] in _TEXT_PARTS for p in parts):
        return "".join(p["text"] for p in parts)
    out: list[dict[str, Any]] = []
    for part in parts:
        if part["type"] in _TEXT_PARTS:
            out.append({"type": "text", "text": part["text"]})
        else:
            image = {"url": part["image_url"]} | (
                {"detail": part["detail"]} if "detail" in part else {}
            )
            out.append({"type": "image_url", "image_url": image})
    return out


def chat_body(request: ResponseCreate, conversation: list[dict[str, Any]]) -> dict[str, Any]:
    """The job's chat-completions body for `request` continuing `conversation`."""
    system = [{"role": "system", "content": request.instructions}] if request.instructions else []
    body: dict[str, Any] = {"model": request.model, "messages": system + conversation}
    if request.tools:
        body["tools"] = [
            {"type": "function", "function": t.model_dump(exclude={"type"}, exclude_none=True)}
            for t in request.tools
        ]
    choice = request.tool_choice
    if isinstance(choice, dict):
        if choice.get("type") != "function" or not isinstance(choice.get("name"), str):
            raise ResponsesShapeError("tool_choice", "must be auto, none, required or a function")
        choice = {"type": "function", "function": {"name": choice["name"]}}
    if choice is not None:
        body["tool_choice"] = choice
    for key in ("parallel_tool_calls", "temperature", "top_p", "user"):
        if (value := getattr(request, key)) is not None:
            body[key] = value
    if request.max_output_tokens is not None:
        body["max_completion_tokens"] = request.max_output_tokens
    if request.reasoning is not None and request.reasoning.effort is not None:
        body["reasoning_effort"] = request.reasoning.effort
    fmt = request.text.format if request.text else None
    if fmt is not None and fmt.type == "json_object":
        body["response_format"] = {"type": "json_object"}
    elif fmt is not None and fmt.type == "json_schema":
        schema: dict[str, Any] = {"name": fmt.name, "schema": fmt.schema_}
        if fmt.strict is not None:
            schema["strict"] = fmt.strict
        if fmt.description is not None:
            schema["description"] = fmt.description
        body["response_format"] = {"type": "json_schema", "json_schema": schema}
    return body


# --- out: chat.completion -> output items and the Response object ------------------------


def assistant_message(completion: dict[str, Any]) -> dict[str, Any]:
    """A finished job's answer as the chat message a next response continues from."""
    message = (completion.get("choices") or [{}])[0].get("message") or {}
    out: dict[str, Any] = {"role": "assistant", "content": message.get("content")}
    if message.get("tool_calls"):
        out["tool_calls"] = message["tool_calls"]
    return out


def output_items(completion: dict[str, Any] | None, ident: str) -> list[dict[str, Any]]:
    """The output items of a job's `chat.completion`: its text as a message, then a
    `function_call` item for each tool call."""
    if not completion:
        return []
    message = (completion.get("choices") or [{}])[0].get("message") or {}
    items: list[dict[str, Any]] = []
    text = message.get("content")
    if text or not message.get("tool_calls"):
        part: dict[str, Any] = {"type": "output_text", "text": text or ""}
        part |= {"annotations": [], "logprobs": []}
        items.append(
            {
                "id": f"msg_{ident}",
                "type": "message",
                "role": "assistant",
                "status": "completed",
                "content": [part],
            }
        )
    for i, call in enumerate(message.get("tool_calls") or []):
        function = call.get("function") or {}
        items.append(
            {
                "id": f"fc_{ident}_{i}",
                "type": "function_call",
                "call_id": call.get("id") or f"call_{ident}_{i}",
                "name": function.get("name") or "",
                "arguments": function.get("arguments") or "",
                "status": "completed",
            }
        )
    return items


def response_usage(usage: dict[str, Any] | None) -> dict[str, Any] | None:
    """An OpenAI chat `usage` object as the Response usage."""
    if usage is None:
        return None
    prompt = usage.get("prompt_tokens_details") or {}
    completion = usage.get("completion_tokens_details") or {}
    return {
        "input_tokens": int(usage.get("prompt_tokens") or 0),
        "input_tokens_details": {
            "cached_tokens": int(prompt.get("cached_tokens") or 0),
            "cache_write_tokens": int(prompt.get("cache_creation_tokens") or 0),
        },
        "output_tokens": int(usage.get("completion_tokens") or 0),
        "output_tokens_details": {"reasoning_tokens": int(completion.get("reasoning_tokens") or 0)},
        "total_tokens": int(usage.get("total_tokens") or 0),
    }


def response_object(
    ident: str,
    request: dict[str, Any],
    created_at: int,
    status: str,
    *,
    output: list[dict[str, Any]] | None = None,
    usage: dict[str, Any] | None = None,
    error: dict[str, Any] | None = None,
    incomplete: str | None = None,
) -> dict[str, Any]:
    """The Response object of `request` (as stored) in `status`."""
    text = request.get("text") or {"format": {"type": "text"}}
    tools = [{**t, "strict": t.get("strict", True)} for t in request.get("tools") or []]
    return {
        "id": ident,
        "object": "response",
        "created_at": created_at,
        "status": status,
        "background": bool(request.get("background")),
        "error": error,
        "incomplete_details": {"reason": incomplete} if incomplete else None,
        "instructions": request.get("instructions"),
        "max_output_tokens": request.get("max_output_tokens"),
        "metadata": request.get("metadata") or {},
        "model": request["model"],
        "output": output or [],
        "parallel_tool_calls": request.get("parallel_tool_calls", True),
        "previous_response_id": request.get("previous_response_id"),
        "reasoning": {"effort": None, "summary": None} | (request.get("reasoning") or {}),
        "store": request.get("store", True),
        "temperature": request.get("temperature"),
        "text": text,
        "tool_choice": request.get("tool_choice") or "auto",
        "tools": tools,
        "top_p": request.get("top_p"),
        "truncation": "disabled",
        "usage": usage,
        "user": request.get("user"),
    }
