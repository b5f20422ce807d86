"""The Gemini protocol against recorded-style replies, through httpx.MockTransport. What
we send validates with the google-genai SDK's own (extra="forbid") types, every recorded
reply parses with them, and every normalized reply parses with the openai SDK's types."""

from __future__ import annotations

import base64
import copy
import json
import struct
from pathlib import Path
from typing import Any

import httpx2 as httpx
import pydantic
import pytest
from google.genai import errors as genai_errors
from google.genai import types
from openai.types import CreateEmbeddingResponse
from openai.types.chat import ChatCompletion

from models.fleet_config import parse_fleet_config
from workers.providers import errors
from workers.providers.base import CallOptions, Usage
from workers.providers.gemini import GeminiProtocol, chat_response
from workers.providers.params import UnsupportedParamError

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "gemini"
BODY_KEYS = {"contents", "systemInstruction", "tools", "toolConfig", "generationConfig"}
URL = "https://generativelanguage.googleapis.com/v1beta/models/gemini-2.5-flash"
HI = [{"role": "user", "content": "hi"}]
CITY = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
WEATHER_TOOL = {"type": "function", "function": {"name": "get_weather", "parameters": CITY}}
TIME_TOOL = {"type": "function", "function": {"name": "get_time", "description": "Now"}}


def fixture(name: str) -> Any:
    return json.loads((FIXTURES / name).read_bytes())


def deployment() -> Any:
    litellm_params = {"model": "gemini/gemini-2.5-flash", "api_key": "g-test"}
    raw = {"model_list": [{"model_name": "gem", "litellm_params": litellm_params}]}
    return parse_fleet_config(raw, {}).model_list[0]


class Recorder:
    """A MockTransport handler answering with one canned reply, keeping what was sent."""

    def __init__(self, reply: Any) -> None:
        self.reply = reply
        self.requests: list[httpx.Request] = []
        self.bodies: list[dict[str, Any]] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        self.bodies.append(json.loads(request.content))
        return httpx.Response(200, json=self.reply)


def run(handler: Any, body: dict[str, Any], *, embed: bool = False, drop: bool = False) -> Any:
    options = CallOptions(timeout=5, drop_params=drop)
    with httpx.Client(transport=httpx.MockTransport(handler)) as client:
        call = GeminiProtocol().embed if embed else GeminiProtocol().chat
        return call(client, deployment(), body, options)


def validate_generate_body(body: dict[str, Any]) -> None:
    """Each part of a generateContent body, checked by the SDK's own models."""
    assert set(body) <= BODY_KEYS, set(body) - BODY_KEYS
    for content in body["contents"]:
        assert types.Content.model_validate(content).role in ("user", "model")
    if "systemInstruction" in body:
        types.Content.model_validate(body["systemInstruction"])
    for tool in body.get("tools", []):
        types.Tool.model_validate(tool)
    if "toolConfig" in body:
        types.ToolConfig.model_validate(body["toolConfig"])
    if "generationConfig" in body:
        types.GenerationConfig.model_validate(body["generationConfig"])


def sent(body: dict[str, Any]) -> dict[str, Any]:
    """The generateContent body sent for `body`, validated; `body` is left untouched."""
    before = copy.deepcopy(body)
    recorder = Recorder(fixture("generate_content_text.json"))
    run(recorder, body)
    assert body == before
    validate_generate_body(recorder.bodies[0])
    return recorder.bodies[0]


def test_text_request_and_reply() -> None:
    developer = {"role": "developer", "content": [{"type": "text", "text": "Be exact."}]}
    system = [{"role": "system", "content": "Be brief."}, developer]
    messages = [*system, {"role": "user", "content": "What is the capital of France?"}]
    recorder = Recorder(fixture("generate_content_text.json"))

    result = run(recorder, {"model": "gem", "messages": messages, "user": "end-user-1"})

    body, http = recorder.bodies[0], recorder.requests[0]
    validate_generate_body(body)
    assert str(http.url) == f"{URL}:generateContent"
    assert http.headers["x-goog-api-key"] == "g-test" and "authorization" not in http.headers
    assert body == {
        "systemInstruction": {"parts": [{"text": "Be brief."}, {"text": "Be exact."}]},
        "contents": [{"role": "user", "parts": [{"text": "What is the capital of France?"}]}],
    }
    completion = ChatCompletion.model_validate(result.response)
    assert completion.choices[0].message.content == "The capital of France is Paris."
    assert completion.choices[0].finish_reason == "stop"
    assert completion.model == "gemini-2.5-flash"
    assert result.usage == Usage(14, 7, 21)


GENERATION = [
    ("temperature", 0.2, "temperature", 0.2),
    ("top_p", 0.9, "topP", 0.9),
    ("max_tokens", 64, "maxOutputTokens", 64),
    ("max_completion_tokens", 65, "maxOutputTokens", 65),
    ("stop", "\n\n", "stopSequences", ["\n\n"]),
    ("stop", ["END", "STOP"], "stopSequences", ["END", "STOP"]),
    ("n", 2, "candidateCount", 2),
    ("seed", 7, "seed", 7),
    ("presence_penalty", 0.1, "presencePenalty", 0.1),
    ("frequency_penalty", -0.2, "frequencyPenalty", -0.2),
    ("response_format", {"type": "json_object"}, "responseMimeType", "application/json"),
]


@pytest.mark.parametrize(("key", "value", "gemini_key", "gemini_value"), GENERATION)
def test_generation_config(key: str, value: Any, gemini_key: str, gemini_value: Any) -> None:
    assert sent({"messages": HI, key: value})["generationConfig"] == {gemini_key: gemini_value}


def test_tools_request_and_function_call_reply() -> None:
    # Given a first turn offering two tools
    first = {"messages": HI, "tools": [WEATHER_TOOL, TIME_TOOL], "tool_choice": "auto"}
    recorder = Recorder(fixture("generate_content_function_call.json"))

    # When Gemini answers with a recorded pair of function calls
    reply = run(recorder, first)

    # Then the tools went out as declarations, their JSON Schema untouched
    validate_generate_body(recorder.bodies[0])
    declarations = [
        {"name": "get_weather", "parametersJsonSchema": CITY},
        {"name": "get_time", "description": "Now"},
    ]
    assert recorder.bodies[0]["tools"] == [{"functionDeclarations": declarations}]
    # and the functionCall parts came back as OpenAI tool calls
    choice = ChatCompletion.model_validate(reply.response).choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.content is None
    calls = reply.response["choices"][0]["message"]["tool_calls"]
    assert [c["function"]["name"] for c in calls] == ["get_weather", "get_time"]
    assert json.loads(calls[0]["function"]["arguments"]) == {"city": "Paris", "unit": "celsius"}
    assert calls[1]["id"] == "call_kK7vaPfWLJKqz7IPwsXK8Ao_0_1"
    assert (reply.usage.completion_tokens, reply.usage.reasoning_tokens) == (93, 55)


def test_tools_conversation_goes_back_to_gemini() -> None:
    # Given the assistant turn the function-call reply became, and the tool results
    reply = chat_response("gemini", fixture("generate_content_function_call.json"), "m", 0)
    assistant = reply.response["choices"][0]["message"]
    calls = assistant["tool_calls"]
    history = [
        {"role": "user", "content": "Weather and time in Paris?"},
        assistant,
        {"role": "tool", "tool_call_id": calls[0]["id"], "content": '{"temp_c": 18}'},
        {"role": "tool", "tool_call_id": calls[1]["id"], "content": "14:05"},
        {"role": "assistant", "content": "18 °C and 14:05 in Paris."},
        {"role": "user", "content": "And tomorrow?"},
    ]

    # When the conversation is sent on
    body = sent({"messages": history, "tools": [WEATHER_TOOL, TIME_TOOL]})

    # Then turns alternate, results are merged into one turn and named by their call
    assert [c["role"] for c in body["contents"]] == ["user", "model", "user", "model", "user"]
    recorded = fixture("generate_content_function_call.json")["candidates"][0]["content"]
    assert body["contents"][1]["parts"] == recorded["parts"]  # thought signature included
    assert body["contents"][2]["parts"] == [
        {"functionResponse": {"name": "get_weather", "response": {"content": {"temp_c": 18}}}},
        {"functionResponse": {"name": "get_time", "response": {"content": {"result": "14:05"}}}},
    ]


NAMED = {"type": "function", "function": {"name": "get_time"}}
CHOICES = [
    ("auto", {"mode": "AUTO"}),
    ("none", {"mode": "NONE"}),
    ("required", {"mode": "ANY"}),
    (NAMED, {"mode": "ANY", "allowedFunctionNames": ["get_time"]}),
]


@pytest.mark.parametrize(("choice", "expected"), CHOICES)
def test_tool_choice(choice: Any, expected: dict[str, Any]) -> None:
    body = sent({"messages": HI, "tools": [TIME_TOOL], "tool_choice": choice})
    assert body["toolConfig"] == {"functionCallingConfig": expected}


def test_tool_result_for_an_unknown_call_is_refused_before_sending() -> None:
    recorder = Recorder(fixture("generate_content_text.json"))
    messages = [{"role": "tool", "tool_call_id": "call_x", "content": "1"}]
    with pytest.raises(errors.BadRequestError, match="call_x"):
        run(recorder, {"messages": messages})
    assert recorder.requests == []


def test_response_format_json_schema() -> None:
    class City(pydantic.BaseModel):
        name: str
        population: int | None = None

    class Answer(pydantic.BaseModel):
        cities: list[City]

    schema = Answer.model_json_schema()  # `$defs` and `$ref`, as real clients send
    fmt = {"type": "json_schema", "json_schema": {"name": "answer", "schema": schema}}
    config = sent({"messages": HI, "response_format": fmt})["generationConfig"]
    assert config == {"responseMimeType": "application/json", "responseJsonSchema": schema}
    # Why `responseJsonSchema`: the OpenAPI-subset `responseSchema` cannot hold it.
    with pytest.raises(pydantic.ValidationError):
        types.Schema.model_validate(schema)


def test_images_inline_and_by_url() -> None:
    png = base64.b64encode(b"\x89PNG\r\n\x1a\n").decode()
    content = [
        {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{png}"}},
        {"type": "image_url", "image_url": {"url": "https://example.com/a/cat.webp?x=1"}},
        {"type": "image_url", "image_url": {"url": "https://example.com/render", "detail": "low"}},
    ]
    body = sent({"messages": [{"role": "user", "content": content}]})
    assert body["contents"][0]["parts"] == [
        {"inlineData": {"mimeType": "image/png", "data": png}},
        {"fileData": {"mimeType": "image/webp", "fileUri": "https://example.com/a/cat.webp?x=1"}},
        {"fileData": {"mimeType": "image/jpeg", "fileUri": "https://example.com/render"}},
    ]


UNSUPPORTED = [("logit_bias", {"50256": -100}), ("logprobs", True), ("parallel_tool_calls", 0)]


@pytest.mark.parametrize(("param", "value"), UNSUPPORTED)
def test_unsupported_param_fails_naming_it_or_is_dropped(param: str, value: Any) -> None:
    body = {"messages": HI, param: value}
    recorder = Recorder(fixture("generate_content_text.json"))
    with pytest.raises(UnsupportedParamError) as info:
        run(recorder, body)
    assert info.value.param == param and f"`{param}`" in info.value.message
    assert recorder.requests == []

    result = run(recorder, body, drop=True)
    validate_generate_body(recorder.bodies[0])
    assert "generationConfig" not in recorder.bodies[0]
    ChatCompletion.model_validate(result.response)


TOO_LONG = errors.ContextWindowExceededError
ERROR_CASES = [
    (400, "error_400.json", {}, errors.BadRequestError, (False, False, None)),
    (400, "error_400_too_many_tokens.json", {}, TOO_LONG, (False, False, None)),
    (400, "error_400_api_key.json", {}, errors.AuthenticationError, (False, True, None)),
    (400, "error_400_location.json", {}, errors.PermissionDeniedError, (False, True, None)),
    (403, "error_403.json", {}, errors.PermissionDeniedError, (False, True, None)),
    (404, "error_404.json", {}, errors.NotFoundError, (False, True, None)),
    (429, "error_429.json", {}, errors.RateLimitedError, (True, True, 13.0)),
    (429, "error_429.json", {"retry-after": "7"}, errors.RateLimitedError, (True, True, 7.0)),
    (500, "error_500.json", {}, errors.UnavailableError, (True, True, None)),
    (503, "error_503.json", {}, errors.UnavailableError, (True, True, None)),
    (504, None, {}, errors.UnavailableError, (True, True, None)),
]


@pytest.mark.parametrize(("status", "name", "headers", "cls", "flags"), ERROR_CASES)
def test_error_replies_map_to_the_error_tree(
    status: int, name: str | None, headers: dict[str, str], cls: type[Exception], flags: Any
) -> None:
    body = (FIXTURES / name).read_bytes() if name else b"<html>Gateway Timeout</html>"
    with pytest.raises(errors.ProviderError) as info:
        run(lambda _: httpx.Response(status, content=body, headers=headers), {"messages": HI})
    exc = info.value
    assert type(exc) is cls
    assert (exc.retryable, exc.cools_down, exc.retry_after) == flags  # (retryable, cools, wait)
    if name:
        sdk = genai_errors.APIError(status, json.loads(body))  # the SDK reads the same body
        assert (exc.message, exc.code) == (sdk.message, sdk.status)


def test_timeout_connection_and_garbage() -> None:
    def raising(exc: type[httpx.TransportError]) -> Any:
        def handler(request: httpx.Request) -> httpx.Response:
            raise exc("boom", request=request)

        return handler

    body = {"messages": HI}
    with pytest.raises(errors.ProviderTimeoutError) as info:
        run(raising(httpx.ReadTimeout), body)
    assert info.value.retryable and isinstance(info.value.__cause__, httpx.ReadTimeout)
    with pytest.raises(errors.ProviderConnectionError):
        run(raising(httpx.ConnectError), body)
    with pytest.raises(errors.MalformedResponseError):
        run(lambda _: httpx.Response(200, content=b"<html>oops"), body)
    for garbage in ({}, {"modelVersion": "gemini-2.5-flash"}, {"candidates": "x"}):
        with pytest.raises(errors.MalformedResponseError):
            run(Recorder(garbage), body)


def test_safety_blocks() -> None:
    with pytest.raises(errors.ContentPolicyError) as info:
        run(Recorder(fixture("generate_content_prompt_blocked.json")), {"messages": HI})
    assert "PROHIBITED_CONTENT" in info.value.message and info.value.code == "PROHIBITED_CONTENT"
    assert not info.value.retryable and not info.value.cools_down

    result = run(Recorder(fixture("generate_content_safety.json")), {"messages": HI})
    choice = ChatCompletion.model_validate(result.response).choices[0]
    assert (choice.finish_reason, choice.message.content) == ("content_filter", None)


def test_usage_with_cached_and_thinking_tokens() -> None:
    result = run(Recorder(fixture("generate_content_cached_thinking.json")), {"messages": HI})
    assert result.usage == Usage(4170, 324, 4494, cached_tokens=4096, reasoning_tokens=312)
    completion = ChatCompletion.model_validate(result.response)
    assert completion.usage and completion.usage.prompt_tokens_details
    assert completion.usage.prompt_tokens_details.cached_tokens == 4096
    assert result.response["usage"]["completion_tokens_details"] == {"reasoning_tokens": 312}
    answer = completion.choices[0].message.content  # the thought summary is left out
    assert answer == "Section 9 overrides the liability cap in section 4."


FINISH = [
    ("MAX_TOKENS", "length"),
    ("RECITATION", "content_filter"),
    ("SPII", "content_filter"),
    ("OTHER", "stop"),
    ("MALFORMED_FUNCTION_CALL", "stop"),
]


@pytest.mark.parametrize(("reason", "expected"), FINISH)
def test_finish_reason_table(reason: str, expected: str) -> None:
    candidate = {"content": {"role": "model", "parts": [{"text": "x"}]}, "finishReason": reason}
    reply = {"candidates": [candidate]}
    types.GenerateContentResponse.model_validate(reply)
    result = chat_response("gemini", reply, "gemini-2.5-flash", 0)
    assert result.response["choices"][0]["finish_reason"] == expected


def test_every_recorded_reply_parses_with_the_sdk() -> None:
    for path in sorted(FIXTURES.glob("generate_content_*.json")):
        types.GenerateContentResponse.model_validate(json.loads(path.read_bytes()))
    types.EmbedContentResponse.model_validate(fixture("batch_embed_contents.json"))
    types.ContentEmbedding.model_validate(fixture("embed_content.json")["embedding"])


def test_embed_one_input_and_refuse_token_arrays() -> None:
    recorder = Recorder(fixture("embed_content.json"))
    result = run(recorder, {"model": "gem", "input": "hi", "dimensions": 8}, embed=True)
    assert str(recorder.requests[0].url) == f"{URL}:embedContent"
    assert recorder.bodies[0] == {"content": {"parts": [{"text": "hi"}]}, "outputDimensionality": 8}
    types.Content.model_validate(recorder.bodies[0]["content"])
    embedding = CreateEmbeddingResponse.model_validate(result.response)
    assert embedding.data[0].embedding == fixture("embed_content.json")["embedding"]["values"]
    assert (embedding.usage.prompt_tokens, result.usage.total_tokens) == (0, 0)
    with pytest.raises(errors.BadRequestError) as info:  # Gemini embeds text, not tokens
        run(recorder, {"input": [[1, 2, 3]]}, embed=True)
    assert info.value.param == "input" and len(recorder.requests) == 1


def test_embed_a_list_as_base64() -> None:
    recorder = Recorder(fixture("batch_embed_contents.json"))
    result = run(recorder, {"input": ["a", "bb"], "encoding_format": "base64"}, embed=True)
    assert str(recorder.requests[0].url) == f"{URL}:batchEmbedContents"
    for item in recorder.bodies[0]["requests"]:
        assert set(item) == {"model", "content"} and item["model"] == "models/gemini-2.5-flash"
        types.Content.model_validate(item["content"])
    decoded = [base64.b64decode(d["embedding"]) for d in result.response["data"]]
    expected = [e["values"] for e in fixture("batch_embed_contents.json")["embeddings"]]
    assert [list(struct.unpack("<4f", d)) for d in decoded] == [pytest.approx(e) for e in expected]


def test_embed_a_long_list_in_batches_of_100() -> None:
    seen: list[int] = []

    def handler(request: httpx.Request) -> httpx.Response:
        texts = [r["content"]["parts"][0]["text"] for r in json.loads(request.content)["requests"]]
        seen.append(len(texts))
        reply = {"embeddings": [{"values": [len(t)]} for t in texts]}
        types.EmbedContentResponse.model_validate(reply)
        return httpx.Response(200, json=reply)

    texts = ["x" * (1 + i % 7) for i in range(150)]
    result = run(handler, {"input": texts}, embed=True)
    assert seen == [100, 50]
    data = CreateEmbeddingResponse.model_validate(result.response).data
    assert [(e.index, e.embedding) for e in data] == [(i, [len(t)]) for i, t in enumerate(texts)]
