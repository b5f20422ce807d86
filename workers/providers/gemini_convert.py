"""Pure converters from OpenAI's chat and embeddings requests to the Gemini API's
(generativelanguage v1beta) request bodies. No I/O; nothing here mutates its input.
The replies, the finish-reason table, the error boundary and the I/O are in `gemini.py`."""

from __future__ import annotations

import copy
import json
import mimetypes
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlparse

from workers.providers import errors
from workers.providers.params import check_params

__all__ = [
    "CHAT_PARAMS",
    "EMBED_BATCH_LIMIT",
    "EMBED_PARAMS",
    "SIGNATURE_SEP",
    "EmbedPlan",
    "chat_body",
    "convert_messages",
    "plan_embeddings",
]

#: OpenAI chat parameters this protocol translates. `user` (an end-user id for abuse
#: monitoring) has no Gemini counterpart and changes no output: accepted and ignored.
CHAT_PARAMS = frozenset(
    {
        "temperature",
        "top_p",
        "max_tokens",
        "max_completion_tokens",
        "stop",
        "n",
        "seed",
        "presence_penalty",
        "frequency_penalty",
        "response_format",
        "tools",
        "tool_choice",
        "user",
    }
)
EMBED_PARAMS = frozenset({"dimensions", "encoding_format", "user"})
#: batchEmbedContents takes at most 100 requests per call.
EMBED_BATCH_LIMIT = 100

#: Joins a tool call id and the Gemini thought signature carried inside it, so the
#: signature comes back with the tool result (Gemini 3 refuses a function call replayed
#: without its signature). Split at the first separator: the part before it is ours.
SIGNATURE_SEP = "__sig__"

_GENERATION_KEYS = {
    "temperature": "temperature",
    "top_p": "topP",
    "n": "candidateCount",
    "seed": "seed",
    "presence_penalty": "presencePenalty",
    "frequency_penalty": "frequencyPenalty",
}
_TOOL_MODES = {"auto": "AUTO", "none": "NONE", "required": "ANY"}


def _bad(provider: str, message: str, param: str) -> errors.BadRequestError:
    return errors.BadRequestError(message, provider=provider, param=param)


# --- OpenAI chat request -> generateContent body -------------------------------------


def chat_body(provider: str, body: dict[str, Any], drop: bool) -> dict[str, Any]:
    """The generateContent body for an OpenAI chat request."""
    request = check_params(body, CHAT_PARAMS, provider, drop)
    system, contents = convert_messages(provider, request.get("messages") or [])
    out: dict[str, Any] = {"contents": contents}
    if system:
        out["systemInstruction"] = {"parts": system}
    if request.get("tools"):
        out["tools"] = [
            {"functionDeclarations": [_declaration(provider, t) for t in request["tools"]]}
        ]
        if request.get("tool_choice") is not None:
            mode = _tool_choice(provider, request["tool_choice"])
            out["toolConfig"] = {"functionCallingConfig": mode}
    config = _generation_config(provider, request)
    if config:
        out["generationConfig"] = config
    return out


def convert_messages(
    provider: str, messages: list[Any]
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """System parts, and contents with consecutive same-role turns merged."""
    system: list[dict[str, Any]] = []
    contents: list[dict[str, Any]] = []
    names: dict[str, str] = {}  # tool_call_id -> function name, from assistant turns
    for i, message in enumerate(messages):
        role = message.get("role") if isinstance(message, dict) else None
        if role in ("system", "developer"):
            system.extend(_content_parts(provider, message.get("content"), i))
            continue
        if role == "user":
            turn, parts = "user", _content_parts(provider, message.get("content"), i)
        elif role == "assistant":
            turn, parts = "model", _assistant_parts(provider, message, i, names)
        elif role in ("tool", "function"):
            turn, parts = "user", [_tool_result(provider, message, i, names)]
        else:
            raise _bad(provider, f"messages[{i}]: unsupported role {role!r}", "messages")
        if not parts:
            continue  # Gemini refuses a turn without parts
        if contents and contents[-1]["role"] == turn:
            contents[-1]["parts"].extend(parts)
        else:
            contents.append({"role": turn, "parts": parts})
    return system, contents


def _content_parts(provider: str, content: Any, i: int) -> list[dict[str, Any]]:
    if content is None or content == "":
        return []
    if isinstance(content, str):
        return [{"text": content}]
    if not isinstance(content, list):
        raise _bad(provider, f"messages[{i}].content must be a string or a list", "messages")
    return [_content_part(provider, part, i) for part in content]


def _content_part(provider: str, part: Any, i: int) -> dict[str, Any]:
    kind = part.get("type") if isinstance(part, dict) else None
    if kind in ("text", "refusal"):
        return {"text": str(part.get(kind) or "")}
    if kind == "image_url":
        image = part.get("image_url")
        url = image.get("url") if isinstance(image, dict) else image
        return _media_part(provider, str(url or ""), "image/jpeg", i)
    if kind == "input_audio":
        audio = part.get("input_audio") or {}
        mime = f"audio/{audio.get('format') or 'wav'}"
        return {"inlineData": {"mimeType": mime, "data": str(audio.get("data") or "")}}
    if kind == "file":
        file = part.get("file") or {}
        data = str(file.get("file_data") or "")
        if data.startswith("data:"):
            return _media_part(provider, data, "application/pdf", i)
        guessed = mimetypes.guess_type(str(file.get("filename") or ""))[0]
        if data and guessed:
            return {"inlineData": {"mimeType": guessed, "data": data}}
    raise _bad(provider, f"messages[{i}]: unsupported content part {kind!r}", "messages")


def _media_part(provider: str, url: str, default_mime: str, i: int) -> dict[str, Any]:
    """A data: URL inlined, or an http(s) URL passed by reference."""
    if url.startswith("data:"):
        header, comma, data = url[5:].partition(",")
        mime = header.split(";")[0]
        if comma and mime and header.endswith(";base64"):
            return {"inlineData": {"mimeType": mime, "data": data}}
        raise _bad(provider, f"messages[{i}]: a data URL must be base64", "messages")
    parsed = urlparse(url)
    if parsed.scheme in ("http", "https"):
        mime = mimetypes.guess_type(parsed.path)[0] or default_mime
        return {"fileData": {"mimeType": mime, "fileUri": url}}
    raise _bad(provider, f"messages[{i}]: media must be a data: or http(s) URL", "messages")


def _assistant_parts(
    provider: str, message: dict[str, Any], i: int, names: dict[str, str]
) -> list[dict[str, Any]]:
    parts = _content_parts(provider, message.get("content"), i)
    calls = list(message.get("tool_calls") or [])
    if message.get("function_call"):  # the legacy single-call field
        calls.append({"id": "", "function": message["function_call"]})
    for call in calls:
        function = call.get("function") if isinstance(call, dict) else None
        name = function.get("name") if isinstance(function, dict) else None
        if not isinstance(function, dict) or not name:
            raise _bad(provider, f"messages[{i}]: a tool call needs a function name", "messages")
        call_id = str(call.get("id") or "")
        names[call_id] = name
        args = _arguments(provider, function.get("arguments"), i)
        part: dict[str, Any] = {"functionCall": {"name": name, "args": args}}
        signature = call_id.partition(SIGNATURE_SEP)[2]
        if signature:
            part["thoughtSignature"] = signature
        parts.append(part)
    return parts


def _arguments(provider: str, raw: Any, i: int) -> dict[str, Any]:
    if isinstance(raw, dict):
        return copy.deepcopy(raw)
    try:
        args = json.loads(raw) if raw else {}
    except (TypeError, ValueError):
        args = None
    if not isinstance(args, dict):
        raise _bad(
            provider, f"messages[{i}]: tool call arguments must be a JSON object", "messages"
        )
    return args


def _tool_result(
    provider: str, message: dict[str, Any], i: int, names: dict[str, str]
) -> dict[str, Any]:
    call_id = str(message.get("tool_call_id") or "")
    name = names.get(call_id) or message.get("name")
    if not name:
        raise _bad(
            provider,
            f"messages[{i}]: tool_call_id {call_id!r} matches no earlier assistant tool call",
            "messages",
        )
    text = "".join(p.get("text", "") for p in _content_parts(provider, message.get("content"), i))
    try:
        value: Any = json.loads(text)
    except ValueError:
        value = {"result": text}
    return {"functionResponse": {"name": name, "response": {"content": value}}}


def _declaration(provider: str, tool: Any) -> dict[str, Any]:
    """OpenAI parameters are JSON Schema, which `parametersJsonSchema` takes as is;
    `parameters` takes only an OpenAPI subset (no `$ref`, `$defs`, type lists)."""
    kind = tool.get("type", "function") if isinstance(tool, dict) else None
    function = tool.get("function") if isinstance(tool, dict) else None
    if kind != "function" or not isinstance(function, dict):
        raise _bad(provider, "Gemini supports only `function` tools", "tools")
    if not function.get("name"):
        raise _bad(provider, "a function tool needs a `name`", "tools")
    declaration: dict[str, Any] = {"name": function["name"]}
    if function.get("description"):
        declaration["description"] = function["description"]
    if function.get("parameters"):
        declaration["parametersJsonSchema"] = copy.deepcopy(function["parameters"])
    return declaration


def _tool_choice(provider: str, choice: Any) -> dict[str, Any]:
    if isinstance(choice, str) and choice in _TOOL_MODES:
        return {"mode": _TOOL_MODES[choice]}
    function = choice.get("function") if isinstance(choice, dict) else None
    if isinstance(function, dict) and function.get("name"):
        return {"mode": "ANY", "allowedFunctionNames": [function["name"]]}
    raise _bad(provider, f"unsupported tool_choice {choice!r}", "tool_choice")


def _generation_config(provider: str, request: Mapping[str, Any]) -> dict[str, Any]:
    config = {
        gemini: request[key]
        for key, gemini in _GENERATION_KEYS.items()
        if request.get(key) is not None
    }
    max_tokens = request.get("max_completion_tokens") or request.get("max_tokens")
    if max_tokens is not None:
        config["maxOutputTokens"] = max_tokens
    stop = request.get("stop")
    if stop:
        config["stopSequences"] = [stop] if isinstance(stop, str) else list(stop)
    config.update(_response_format(provider, request.get("response_format")))
    return config


def _response_format(provider: str, fmt: Any) -> dict[str, Any]:
    """json_schema goes to `responseJsonSchema` (JSON Schema as is); `responseSchema`
    takes only the OpenAPI subset, which most real schemas are not."""
    kind = fmt.get("type") if isinstance(fmt, dict) else fmt
    if kind is None or kind == "text":
        return {}
    if kind == "json_object":
        return {"responseMimeType": "application/json"}
    if kind == "json_schema":
        spec = fmt.get("json_schema")
        schema = spec.get("schema") if isinstance(spec, dict) else None
        out: dict[str, Any] = {"responseMimeType": "application/json"}
        if schema:
            out["responseJsonSchema"] = copy.deepcopy(schema)
        return out
    raise _bad(provider, f"unsupported response_format {kind!r}", "response_format")


# --- embeddings -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class EmbedPlan:
    """The calls one OpenAI embeddings request takes: `method` is `embedContent` (one
    string) or `batchEmbedContents` (a list, at most 100 inputs per body)."""

    method: str
    bodies: tuple[dict[str, Any], ...]
    encoding_format: str


def plan_embeddings(provider: str, model: str, body: dict[str, Any], drop: bool) -> EmbedPlan:
    request = check_params(body, EMBED_PARAMS, provider, drop)
    raw = request.get("input")
    extra = {}
    if request.get("dimensions") is not None:
        extra["outputDimensionality"] = request["dimensions"]
    encoding = str(request.get("encoding_format") or "float")
    if isinstance(raw, str):
        one = {"content": {"parts": [{"text": raw}]}, **extra}
        return EmbedPlan("embedContent", (one,), encoding)
    if not isinstance(raw, list) or not raw or not all(isinstance(x, str) for x in raw):
        raise _bad(provider, "Gemini embeds text: `input` must be a string or strings", "input")
    requests = [
        {"model": f"models/{model}", "content": {"parts": [{"text": text}]}, **extra}
        for text in raw
    ]
    bodies = tuple(
        {"requests": requests[i : i + EMBED_BATCH_LIMIT]}
        for i in range(0, len(requests), EMBED_BATCH_LIMIT)
    )
    return EmbedPlan("batchEmbedContents", bodies, encoding)
