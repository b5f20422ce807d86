"""The Anthropic Messages protocol against recorded replies, through httpx.MockTransport.

Every body sent is checked against the anthropic SDK's own request types, every recorded
reply parses with its response types, and every normalized reply with openai's."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx2 as httpx
import pytest
from anthropic.types import ErrorResponse, Message
from anthropic.types.message_create_params import MessageCreateParamsNonStreaming
from openai.types.chat import ChatCompletion, ChatCompletionMessageFunctionToolCall
from pydantic import TypeAdapter

from models.fleet_config import Deployment, parse_fleet_config
from workers.providers import errors
from workers.providers.anthropic import AnthropicProtocol, build_messages_request
from workers.providers.base import CallOptions, ProviderResult
from workers.providers.params import UnsupportedParamError

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "anthropic"
ANTHROPIC_REQUEST: TypeAdapter[Any] = TypeAdapter(MessageCreateParamsNonStreaming)
SDK_KEYS = frozenset(MessageCreateParamsNonStreaming.__annotations__)
SAMPLING = frozenset({"temperature", "top_p"})
TOOLS: list[dict[str, Any]] = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Current weather for a location.",
            "parameters": {"type": "object", "properties": {"location": {"type": "string"}}},
        },
    }
]
HI = {"model": "claude", "messages": [{"role": "user", "content": "Hi"}]}
NO_TOOL_ID = {"type": "message", "content": [{"type": "tool_use"}], "usage": {}}
TOO_LARGE = {"type": "error", "error": {"type": "request_too_large", "message": "Too big."}}
Handler = Callable[[httpx.Request], httpx.Response]


def fixture(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


def deployment(**params: Any) -> Deployment:
    litellm_params = {"model": "anthropic/claude-sonnet-4-5", "api_key": "sk-ant-test", **params}
    raw = {"model_list": [{"model_name": "claude", "litellm_params": litellm_params}]}
    return parse_fleet_config(raw, {}).model_list[0]


class Upstream:
    """A recorded Anthropic: answers with the given replies in turn, keeps what it got."""

    def __init__(self, *replies: httpx.Response) -> None:
        self.replies = list(replies)
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        return self.replies.pop(0)

    def body(self) -> dict[str, Any]:
        sent: dict[str, Any] = json.loads(self.requests[-1].content)
        return sent


def reply(name: str, status: int = 200, **headers: str) -> httpx.Response:
    return httpx.Response(status, content=fixture(name), headers=headers)


def chat(
    handler: Handler, body: dict[str, Any], drop_params: bool = False, **params: Any
) -> ProviderResult:
    options = CallOptions(timeout=5, drop_params=drop_params)
    with httpx.Client(transport=httpx.MockTransport(handler)) as client:
        return AnthropicProtocol().chat(client, deployment(**params), body, options)


def materialize(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: materialize(item) for key, item in value.items()}
    if isinstance(value, list | tuple | Iterator):
        return [materialize(item) for item in value]
    return value


def assert_valid_anthropic_request(body: dict[str, Any]) -> None:
    """Pydantic checks the SDK's TypedDicts leniently (`Iterable` fields only when
    iterated, unknown keys dropped): iterate everything and compare with what was sent.
    The SDK (2.x) types describe API version 2026-10-21, which removed the sampling
    parameters; we pin 2023-06-01, where they are valid, so they are set aside here."""
    set_aside = SAMPLING - SDK_KEYS
    checked = {key: value for key, value in body.items() if key not in set_aside}
    assert materialize(ANTHROPIC_REQUEST.validate_python(checked)) == checked
    for key in set_aside & body.keys():
        assert isinstance(body[key], float | int) and 0 <= body[key] <= 1


def assert_valid_openai_completion(result: ProviderResult) -> ChatCompletion:
    completion = ChatCompletion.model_validate(result.response)
    assert completion.object == "chat.completion" and isinstance(completion.created, int)
    return completion


@pytest.mark.parametrize("name", sorted(p.name for p in FIXTURES.glob("*.json")))
def test_fixtures_parse_with_the_sdk_types(name: str) -> None:
    data = json.loads(fixture(name))
    model = ErrorResponse if name.startswith("error_") else Message
    model.model_validate(data)


def test_plain_request_and_text_reply() -> None:
    body = {
        "model": "claude",
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "developer", "content": [{"type": "text", "text": "Use English."}]},
            {"role": "user", "content": "Capital of France?"},
        ],
        "temperature": 0.2,
        "top_p": 0.9,
        "stop": "\n\nHuman:",
        "n": 1,
        "user": "customer-42",
    }
    before = copy.deepcopy(body)
    upstream = Upstream(reply("message_text.json"))

    result = chat(upstream, body)

    request, sent = upstream.requests[0], upstream.body()
    assert str(request.url) == "https://api.anthropic.com/v1/messages"
    assert request.headers["x-api-key"] == "sk-ant-test"
    assert request.headers["anthropic-version"] == "2023-06-01"
    assert request.headers["content-type"] == "application/json"
    assert_valid_anthropic_request(sent)
    assert sent == {
        "model": "claude-sonnet-4-5",
        "max_tokens": 4096,
        "system": [{"type": "text", "text": "Be brief."}, {"type": "text", "text": "Use English."}],
        "messages": [{"role": "user", "content": [{"type": "text", "text": "Capital of France?"}]}],
        "temperature": 0.2,
        "top_p": 0.9,
        "stop_sequences": ["\n\nHuman:"],
        "metadata": {"user_id": "customer-42"},
    }
    assert body == before  # the caller's body is not mutated
    completion = assert_valid_openai_completion(result)
    assert completion.id == "msg_01XFDUDYJgAACzvnptvVoYEL"
    assert completion.model == "claude-sonnet-4-5-20250929"
    assert completion.choices[0].message.content == "The capital of France is Paris."
    assert completion.choices[0].message.tool_calls is None
    assert completion.choices[0].finish_reason == "stop"
    assert (result.usage.prompt_tokens, result.usage.completion_tokens) == (21, 10)
    assert result.usage.total_tokens == 31


def test_a_tools_conversation_goes_there_and_back() -> None:
    # Given a user question with a function tool the model is told to consider
    question = {"role": "user", "content": "What's the weather in Paris?"}
    body = {"model": "claude", "messages": [question], "tools": TOOLS, "tool_choice": "auto"}
    upstream = Upstream(reply("message_tool_use.json"), reply("message_final_answer.json"))

    # When the model answers with a tool_use block
    first = chat(upstream, body)

    # Then the tools went out in Anthropic's shape and the call came back in OpenAI's
    sent = upstream.body()
    assert_valid_anthropic_request(sent)
    tool = {"name": "get_weather", "description": "Current weather for a location."}
    assert sent["tools"] == [{**tool, "input_schema": TOOLS[0]["function"]["parameters"]}]
    assert sent["tool_choice"] == {"type": "auto"}
    completion = assert_valid_openai_completion(first)
    choice = completion.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content == "I'll check the current weather in Paris for you."
    assert choice.message.tool_calls is not None
    call = choice.message.tool_calls[0]
    assert (call.id, call.type) == ("toolu_01A09q90qw90lq917835lq9", "function")
    assert isinstance(call, ChatCompletionMessageFunctionToolCall)
    assert call.function.name == "get_weather"
    arguments = json.loads(call.function.arguments)
    assert arguments == {"location": "Paris, France", "unit": "celsius"}

    # When the caller sends our own normalized message back with the tool's result
    assistant = first.response["choices"][0]["message"]
    result = {"role": "tool", "tool_call_id": call.id, "content": '{"temp_c": 18}'}
    follow_up = {**body, "messages": [question, assistant, result]}
    second = chat(upstream, follow_up)

    # Then Anthropic gets alternating turns with tool_use and tool_result blocks
    sent = upstream.body()
    assert_valid_anthropic_request(sent)
    assert [turn["role"] for turn in sent["messages"]] == ["user", "assistant", "user"]
    assert sent["messages"][1]["content"] == [
        {"type": "text", "text": "I'll check the current weather in Paris for you."},
        {"type": "tool_use", "id": call.id, "name": "get_weather", "input": arguments},
    ]
    assert sent["messages"][2]["content"] == [
        {"type": "tool_result", "tool_use_id": call.id, "content": '{"temp_c": 18}'}
    ]
    final = assert_valid_openai_completion(second).choices[0]
    assert final.finish_reason == "stop"
    assert final.message.content == "It is currently 18°C and partly cloudy in Paris."


def test_turns_merge_so_roles_alternate_and_images_convert() -> None:
    image = "data:image/png;base64,iVBOR"
    messages = [
        {"role": "user", "content": "Two pictures follow."},
        {
            "role": "user",
            "content": [
                {"type": "image_url", "image_url": {"url": image}},
                {"type": "image_url", "image_url": {"url": "https://example.com/cat.jpg"}},
            ],
        },
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {"id": "a", "type": "function", "function": {"name": "f", "arguments": "{}"}},
                {"id": "b", "type": "function", "function": {"name": "f", "arguments": ""}},
            ],
        },
        {"role": "tool", "tool_call_id": "a", "content": "A"},
        {"role": "tool", "tool_call_id": "b", "content": [{"type": "text", "text": "B"}]},
        {"role": "user", "content": "Compare them."},
    ]
    body = {"model": "claude", "messages": messages, "max_completion_tokens": 300}
    before = copy.deepcopy(body)

    _, _, sent = build_messages_request("anthropic", deployment(), body, "unused", drop=False)

    assert_valid_anthropic_request(sent)
    assert body == before
    assert sent["max_tokens"] == 300 and "system" not in sent
    user, assistant, results = sent["messages"]
    assert [user["role"], assistant["role"], results["role"]] == ["user", "assistant", "user"]
    assert user["content"][1:] == [
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBOR"}},
        {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.jpg"}},
    ]
    assert [block["input"] for block in assistant["content"]] == [{}, {}]
    assert results["content"] == [
        {"type": "tool_result", "tool_use_id": "a", "content": "A"},
        {"type": "tool_result", "tool_use_id": "b", "content": [{"type": "text", "text": "B"}]},
        {"type": "text", "text": "Compare them."},
    ]


@pytest.mark.parametrize(
    ("tool_choice", "parallel", "expected"),
    [
        ("auto", None, {"type": "auto"}),
        ("required", None, {"type": "any"}),
        ("none", None, {"type": "none"}),
        (
            {"type": "function", "function": {"name": "get_weather"}},
            None,
            {"type": "tool", "name": "get_weather"},
        ),
        ("required", False, {"type": "any", "disable_parallel_tool_use": True}),
        (None, False, {"type": "auto", "disable_parallel_tool_use": True}),
    ],
)
def test_tool_choice(tool_choice: Any, parallel: bool | None, expected: dict[str, Any]) -> None:
    body = {**HI, "tools": TOOLS, "tool_choice": tool_choice, "max_tokens": 50}
    body["parallel_tool_calls"] = parallel
    _, _, sent = build_messages_request("anthropic", deployment(), body, "unused", drop=False)
    assert_valid_anthropic_request(sent)
    assert sent["tool_choice"] == expected and sent["max_tokens"] == 50


@pytest.mark.parametrize(
    ("param", "value"),
    [
        ("seed", 7),
        ("presence_penalty", 0.5),
        ("frequency_penalty", 0.5),
        ("logit_bias", {"1234": -100}),
        ("logprobs", True),
        ("response_format", {"type": "json_schema", "json_schema": {"name": "x", "schema": {}}}),
        ("n", 2),
    ],
)
def test_unsupported_params_fail_by_name_or_are_dropped(param: str, value: Any) -> None:
    body = {**HI, param: value}
    upstream = Upstream(reply("message_text.json"))

    with pytest.raises(UnsupportedParamError) as info:
        chat(upstream, body)
    assert info.value.param == param and f"`{param}`" in info.value.message
    assert "anthropic" in info.value.message and upstream.requests == []

    chat(upstream, body, drop_params=True)
    assert_valid_anthropic_request(upstream.body())
    assert param not in upstream.body()


def test_cache_usage_lands_in_the_normalized_usage() -> None:
    result = chat(Upstream(reply("message_cache_usage.json")), HI)

    usage = result.usage
    assert (usage.prompt_tokens, usage.completion_tokens, usage.total_tokens) == (2311, 14, 2325)
    assert (usage.cached_tokens, usage.cache_creation_tokens) == (2051, 248)
    completion = assert_valid_openai_completion(result)
    assert completion.choices[0].finish_reason == "length"
    assert completion.usage is not None and completion.usage.prompt_tokens == 2311
    assert completion.usage.prompt_tokens_details is not None
    assert completion.usage.prompt_tokens_details.cached_tokens == 2051
    assert result.response["usage"]["prompt_tokens_details"]["cache_creation_tokens"] == 248


@pytest.mark.parametrize(
    ("status", "name", "cls", "retryable", "cools"),
    [
        (400, "error_400.json", errors.BadRequestError, False, False),
        (400, "error_400_prompt_too_long.json", errors.ContextWindowExceededError, False, False),
        (401, "error_401.json", errors.AuthenticationError, False, True),
        (403, "error_403.json", errors.PermissionDeniedError, False, True),
        (404, "error_404.json", errors.NotFoundError, False, True),
        (429, "error_429.json", errors.RateLimitedError, True, True),
        (500, "error_500.json", errors.UnavailableError, True, True),
        (529, "error_529.json", errors.UnavailableError, True, True),
    ],
)
def test_error_replies_map_to_the_error_tree(
    status: int, name: str, cls: type[errors.ProviderError], retryable: bool, cools: bool
) -> None:
    headers = {"retry-after": "7"} if status == 429 else {}
    with pytest.raises(errors.ProviderError) as info:
        chat(Upstream(reply(name, status, **headers)), HI)
    exc, recorded = info.value, json.loads(fixture(name))["error"]
    assert type(exc) is cls
    assert (exc.retryable, exc.cools_down) == (retryable, cools)
    assert (exc.message, exc.code) == (recorded["message"], recorded["type"])
    assert exc.provider == "anthropic"
    assert exc.retry_after == (7 if status == 429 else None)


@pytest.mark.parametrize(
    ("response", "cls"),
    [
        (httpx.Response(413, json=TOO_LARGE), errors.BadRequestError),
        (httpx.Response(502, content=b"<html>bad gateway</html>"), errors.UnavailableError),
        (httpx.Response(503, content=b""), errors.UnavailableError),
        (httpx.Response(200, content=b"{not json"), errors.MalformedResponseError),
        (httpx.Response(200, json={"type": "message"}), errors.MalformedResponseError),
        (httpx.Response(200, json=NO_TOOL_ID), errors.MalformedResponseError),
    ],
)
def test_other_replies(response: httpx.Response, cls: type[errors.ProviderError]) -> None:
    with pytest.raises(errors.ProviderError) as info:
        chat(Upstream(response), HI)
    assert type(info.value) is cls
    assert info.value.retryable == (cls is not errors.BadRequestError)


def test_timeout_and_connection_errors_are_chained() -> None:
    def timeout(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("slow", request=request)

    def refused(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    with pytest.raises(errors.ProviderTimeoutError) as info:
        chat(timeout, HI)
    assert info.value.retryable and info.value.cools_down
    assert isinstance(info.value.__cause__, httpx.ReadTimeout)
    with pytest.raises(errors.ProviderConnectionError):
        chat(refused, HI)


@pytest.mark.parametrize(
    "api_base",
    ["https://gw.example", "https://gw.example/v1", "https://gw.example/v1/messages/"],
)
def test_api_base_is_completed_not_doubled(api_base: str) -> None:
    upstream = Upstream(reply("message_text.json"))
    chat(upstream, HI, api_base=api_base)
    assert str(upstream.requests[0].url) == "https://gw.example/v1/messages"


def test_embeddings_are_refused_without_a_call() -> None:
    upstream = Upstream()
    with (
        httpx.Client(transport=httpx.MockTransport(upstream)) as client,
        pytest.raises(errors.BadRequestError) as info,
    ):
        AnthropicProtocol().embed(client, deployment(), {"input": "x"}, CallOptions(timeout=5))
    assert info.value.code == "unsupported_operation" and "anthropic" in info.value.message
    assert upstream.requests == []
