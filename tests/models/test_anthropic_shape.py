"""Anthropic Message Batches requests become job bodies, and job results become Messages.

Every Anthropic request used here is checked against the anthropic SDK's request type,
every converted body against openai's (and the fleet's own intake schema), and every
produced Message and error object against the anthropic SDK's response types. Both SDKs
describe requests as TypedDicts, which pydantic checks leniently (`Iterable` fields only
when iterated, unknown keys dropped): every check iterates everything, in strict mode,
and compares the result with what went in."""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from anthropic.types import ErrorResponse, Message
from anthropic.types.message_create_params import MessageCreateParamsNonStreaming
from anthropic.types.messages import MessageBatchIndividualResponse
from openai.types.chat import ChatCompletion
from openai.types.chat.completion_create_params import CompletionCreateParamsNonStreaming
from pydantic import BaseModel, TypeAdapter, ValidationError

from models.anthropic_shape import (
    AnthropicShapeError,
    anthropic_to_openai_request,
    openai_error_to_anthropic,
    openai_to_anthropic_message,
)
from models.fleet_config import parse_fleet_config
from models.schemas.chat import ChatCompletionRequest
from models.schemas.message_batches import MessageBatchCreate
from workers.providers.anthropic import build_messages_request, parse_message

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "anthropic"
ANTHROPIC_REQUEST: TypeAdapter[Any] = TypeAdapter(MessageCreateParamsNonStreaming)
OPENAI_REQUEST: TypeAdapter[Any] = TypeAdapter(CompletionCreateParamsNonStreaming)
SDK_KEYS = frozenset(MessageCreateParamsNonStreaming.__annotations__)
#: The SDK (2.x) types describe API version 2026-10-21, which removed the sampling
#: parameters; the fleet pins 2023-06-01, where they are valid, so they are set aside.
SAMPLING = frozenset({"temperature", "top_p", "top_k"})
MODEL = "claude-sonnet-4-5"
WEATHER = {
    "name": "get_weather",
    "description": "Current weather for a location.",
    "input_schema": {"type": "object", "properties": {"location": {"type": "string"}}},
}
PNG = "iVBORw0KGgo="
CITATION = {
    "type": "char_location",
    "cited_text": "Hi",
    "document_index": 0,
    "document_title": None,
    "start_char_index": 0,
    "end_char_index": 2,
}


def params(*messages: dict[str, Any], **extra: Any) -> dict[str, Any]:
    turns = list(messages) or [{"role": "user", "content": "Hi"}]
    return {"model": MODEL, "max_tokens": 256, "messages": turns, **extra}


def materialize(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: materialize(item) for key, item in value.items()}
    if isinstance(value, list | tuple | Iterator):
        return [materialize(item) for item in value]
    if isinstance(value, BaseModel):  # a union that also lists the response model chose it
        return materialize(value.model_dump(exclude_unset=True))
    return value


def assert_valid_anthropic_params(request: dict[str, Any]) -> None:
    set_aside = SAMPLING - SDK_KEYS
    checked = {key: value for key, value in request.items() if key not in set_aside}
    assert materialize(ANTHROPIC_REQUEST.validate_python(checked, strict=True)) == checked


def without_cache_control(value: Any) -> Any:
    """`cache_control` on content parts is the fleet's extension, unknown to openai."""
    if isinstance(value, dict):
        part = value.get("type") in ("text", "image_url")
        return {
            key: without_cache_control(item)
            for key, item in value.items()
            if not (part and key == "cache_control")
        }
    if isinstance(value, list):
        return [without_cache_control(item) for item in value]
    return value


def convert(request: dict[str, Any]) -> dict[str, Any]:
    """Check the Anthropic request, convert it, check the body; the input is untouched."""
    assert_valid_anthropic_params(request)
    before = copy.deepcopy(request)
    body = anthropic_to_openai_request(request)
    assert request == before
    expected = without_cache_control(body)
    assert materialize(OPENAI_REQUEST.validate_python(body, strict=True)) == expected
    assert ChatCompletionRequest.model_validate(body).provider_body() == body
    return body


def assert_no_extras(model: Any) -> None:
    if isinstance(model, list):
        for item in model:
            assert_no_extras(item)
    elif isinstance(model, BaseModel):
        assert not model.model_extra, f"{type(model).__name__} has extras {model.model_extra}"
        for name in model.model_fields_set:
            assert_no_extras(getattr(model, name))


def assert_valid_message(message: dict[str, Any]) -> Message:
    parsed = Message.model_validate(message)
    assert_no_extras(parsed)
    assert parsed.model_dump(mode="json", exclude_unset=True) == message
    line = {"custom_id": "req-1", "result": {"type": "succeeded", "message": message}}
    MessageBatchIndividualResponse.model_validate(line)
    return parsed


def completion(
    message: dict[str, Any], finish_reason: str | None = "stop", **usage: Any
) -> dict[str, Any]:
    choice = {"index": 0, "message": message, "finish_reason": finish_reason, "logprobs": None}
    data = {
        "id": "chatcmpl-abc123",
        "object": "chat.completion",
        "created": 1_700_000_000,
        "model": "gpt-4o-mini",
        "choices": [choice],
        "usage": usage or {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15},
    }
    if finish_reason is not None:
        ChatCompletion.model_validate(data)
    return data


def worker_payload(body: dict[str, Any]) -> dict[str, Any]:
    """The Anthropic body the fleet's Anthropic protocol would send for a job body."""
    raw = {
        "model_list": [{"model_name": "claude", "litellm_params": {"model": f"anthropic/{MODEL}"}}]
    }
    deployment = parse_fleet_config(raw, {}).model_list[0]
    _, _, payload = build_messages_request("anthropic", deployment, body, "http://x", False)
    return payload


def as_blocks(request: dict[str, Any]) -> dict[str, Any]:
    """String system and content as the equivalent list of one text block."""
    out = copy.deepcopy(request)
    if isinstance(out.get("system"), str):
        out["system"] = [{"type": "text", "text": out["system"]}]
    for turn in out["messages"]:
        if isinstance(turn["content"], str):
            turn["content"] = [{"type": "text", "text": turn["content"]}]
    return out


def fixture(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((FIXTURES / name).read_text())
    return data


# --- requests ----------------------------------------------------------------------


def test_system_as_a_string_leads_the_messages() -> None:
    body = convert(params(system="Answer in French."))
    assert body == {
        "model": MODEL,
        "max_tokens": 256,
        "messages": [
            {"role": "system", "content": "Answer in French."},
            {"role": "user", "content": "Hi"},
        ],
    }


def test_system_as_blocks() -> None:
    one = convert(params(system=[{"type": "text", "text": "Be brief."}]))
    assert one["messages"][0] == {"role": "system", "content": "Be brief."}

    cached = {"type": "text", "text": "A long contract...", "cache_control": {"type": "ephemeral"}}
    two = convert(params(system=[{"type": "text", "text": "Be brief."}, cached]))
    assert two["messages"][0] == {
        "role": "system",
        "content": [{"type": "text", "text": "Be brief."}, cached],
    }
    assert worker_payload(two)["system"] == [{"type": "text", "text": "Be brief."}, cached]


def test_a_tools_conversation_round_trips() -> None:
    # Given a conversation: question, the model's tool call, the tool's result and more
    question = {"role": "user", "content": "What's the weather in Paris?"}
    call = fixture("message_tool_use.json")
    answer = {"role": "assistant", "content": call["content"]}
    call_id = call["content"][1]["id"]
    result = {"type": "tool_result", "tool_use_id": call_id, "content": '{"temp_c": 18}'}
    follow_up = {"role": "user", "content": [result, {"type": "text", "text": "Umbrella?"}]}
    request = params(question, answer, follow_up, tools=[WEATHER], tool_choice={"type": "auto"})

    # When it becomes a job body
    body = convert(request)

    # Then the call is an assistant tool_call and the result a tool message before the text
    assert body["tools"] == [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "description": "Current weather for a location.",
                "parameters": WEATHER["input_schema"],
            },
        }
    ]
    assert body["tool_choice"] == "auto"
    arguments = json.dumps(call["content"][1]["input"])
    function = {"name": "get_weather", "arguments": arguments}
    assert body["messages"][1:] == [
        {
            "role": "assistant",
            "content": "I'll check the current weather in Paris for you.",
            "tool_calls": [{"id": call_id, "type": "function", "function": function}],
        },
        {"role": "tool", "tool_call_id": call_id, "content": '{"temp_c": 18}'},
        {"role": "user", "content": "Umbrella?"},
    ]

    # And an Anthropic deployment gets the very conversation that was asked for
    assert worker_payload(body) == {**as_blocks(request), "model": MODEL}

    # When Anthropic answers with the tool call, through the job's OpenAI result
    for name in ("message_tool_use.json", "message_final_answer.json"):
        original = fixture(name)
        job_result = parse_message("anthropic", original, 1_700_000_000).response
        message = openai_to_anthropic_message(job_result, original["model"])

        # Then the client gets the Message Anthropic sent, less what the job cannot keep
        assert_valid_message(message)
        kept = {key: original[key] for key in ("id", "model", "content", "stop_reason")}
        assert {key: message[key] for key in kept} == kept


def test_parallel_tool_results_become_one_tool_message_each() -> None:
    calls = [
        {
            "type": "tool_use",
            "id": f"toolu_{city}",
            "name": "get_weather",
            "input": {"location": city},
        }
        for city in ("Paris", "Oslo")
    ]
    results = [
        {"type": "tool_result", "tool_use_id": "toolu_Paris", "content": "18C"},
        {
            "type": "tool_result",
            "tool_use_id": "toolu_Oslo",
            "content": [{"type": "text", "text": "4C"}, {"type": "text", "text": "rain"}],
        },
    ]
    turns = ({"role": "assistant", "content": calls}, {"role": "user", "content": results})
    body = convert(params({"role": "user", "content": "Weather?"}, *turns, tools=[WEATHER]))
    assert body["messages"][1]["content"] is None
    assert [call["id"] for call in body["messages"][1]["tool_calls"]] == [
        "toolu_Paris",
        "toolu_Oslo",
    ]
    assert body["messages"][2:] == [
        {"role": "tool", "tool_call_id": "toolu_Paris", "content": "18C"},
        {"role": "tool", "tool_call_id": "toolu_Oslo", "content": "4C\nrain"},
    ]


def test_system_turns_in_messages_stay_in_place() -> None:
    # The SDK (2.x) types allow system turns among the messages; OpenAI's shape has them
    note = {"role": "system", "content": [{"type": "text", "text": "Now answer in French."}]}
    body = convert(params({"role": "user", "content": "Hi"}, note))
    assert body["messages"][1] == {"role": "system", "content": "Now answer in French."}


def test_images_become_image_url_parts() -> None:
    base64 = {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG}}
    url = {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.jpg"}}
    text = {"type": "text", "text": "Which is the cat?"}
    request = params({"role": "user", "content": [base64, url, text]})

    body = convert(request)

    assert body["messages"] == [
        {
            "role": "user",
            "content": [
                {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}"}},
                {"type": "image_url", "image_url": {"url": "https://example.com/cat.jpg"}},
                text,
            ],
        }
    ]
    assert worker_payload(body)["messages"] == request["messages"]


@pytest.mark.parametrize(
    ("tool_choice", "expected"),
    [
        ({"type": "auto"}, {"tool_choice": "auto"}),
        ({"type": "any"}, {"tool_choice": "required"}),
        ({"type": "none"}, {"tool_choice": "none"}),
        (
            {"type": "tool", "name": "get_weather"},
            {"tool_choice": {"type": "function", "function": {"name": "get_weather"}}},
        ),
        (
            {"type": "any", "disable_parallel_tool_use": True},
            {"tool_choice": "required", "parallel_tool_calls": False},
        ),
        ({"type": "auto", "disable_parallel_tool_use": False}, {"tool_choice": "auto"}),
    ],
)
def test_tool_choice(tool_choice: dict[str, Any], expected: dict[str, Any]) -> None:
    request = params(tools=[WEATHER], tool_choice=tool_choice)
    body = convert(request)
    carried = {key: body[key] for key in ("tool_choice", "parallel_tool_calls") if key in body}
    assert carried == expected
    # An Anthropic deployment gets the same choice back (an explicit false is the default)
    sent = {key: value for key, value in tool_choice.items() if value is not False}
    assert worker_payload(body)["tool_choice"] == sent


def test_stop_sequences_sampling_and_user() -> None:
    request = params(
        stop_sequences=["\n\nHuman:", "END"],
        temperature=0.3,
        top_p=0.9,
        metadata={"user_id": "user-42"},
    )
    body = convert(request)
    assert body["stop"] == ["\n\nHuman:", "END"]
    assert (body["temperature"], body["top_p"], body["user"]) == (0.3, 0.9, "user-42")
    assert {key: worker_payload(body)[key] for key in request} == as_blocks(request)


def test_the_body_shares_nothing_with_the_input() -> None:
    cached = {"type": "text", "text": "Context", "cache_control": {"type": "ephemeral"}}
    request = params({"role": "user", "content": [cached]}, tools=[WEATHER])
    before = copy.deepcopy(request)
    body = convert(request)
    body["messages"][0]["content"][0]["cache_control"]["ttl"] = "1h"
    body["tools"][0]["function"]["parameters"]["properties"].clear()
    assert request == before


@pytest.mark.parametrize(
    ("extra", "turn", "param"),
    [
        ({"top_k": 5}, None, "params.top_k"),
        ({"thinking": {"type": "enabled", "budget_tokens": 2048}}, None, "params.thinking"),
        ({"service_tier": "auto"}, None, "params.service_tier"),
        ({"cache_control": {"type": "ephemeral"}}, None, "params.cache_control"),
        (
            {"tools": [{"type": "web_search_20250305", "name": "web_search"}]},
            None,
            "params.tools[0].type",
        ),
        (
            {"tools": [{**WEATHER, "cache_control": {"type": "ephemeral"}}]},
            None,
            "params.tools[0].cache_control",
        ),
        ({"stop_sequences": ["a", "b", "c", "d", "e"]}, None, "params.stop_sequences"),
        (
            {},
            {
                "type": "document",
                "source": {"type": "text", "media_type": "text/plain", "data": "Hello"},
            },
            "params.messages[0].content[0].type",
        ),
        (
            {},
            {"type": "tool_result", "tool_use_id": "toolu_1", "content": "boom", "is_error": True},
            "params.messages[0].content[0].is_error",
        ),
        (
            {},
            {
                "type": "tool_result",
                "tool_use_id": "toolu_1",
                "content": [{"type": "image", "source": {"type": "url", "url": "https://x/y.png"}}],
            },
            "params.messages[0].content[0].content[0].type",
        ),
        (
            {},
            {
                "type": "tool_result",
                "tool_use_id": "toolu_1",
                "content": [{"type": "text", "text": "42", "cache_control": {"type": "ephemeral"}}],
            },
            "params.messages[0].content[0].content[0].cache_control",
        ),
        (
            {},
            {"type": "text", "text": "Hi", "citations": [CITATION]},
            "params.messages[0].content[0].citations",
        ),
    ],
)
def test_what_the_job_cannot_carry_is_refused_by_name(
    extra: dict[str, Any], turn: dict[str, Any] | None, param: str
) -> None:
    messages = [{"role": "user", "content": [turn]}] if turn else []
    request = params(*messages, **extra)
    assert_valid_anthropic_params(request)
    with pytest.raises(AnthropicShapeError) as caught:
        anthropic_to_openai_request(request)
    assert caught.value.param == param
    assert isinstance(caught.value, ValueError)
    assert str(caught.value).startswith(f"{param}: ")


@pytest.mark.parametrize(
    ("request_", "param"),
    [
        ({"model": MODEL, "messages": [{"role": "user", "content": "Hi"}]}, "params.max_tokens"),
        (params(max_tokens="256"), "params.max_tokens"),
        (params({"role": "tool", "content": "Hi"}), "params.messages[0].role"),
        (params(tool_choice={"type": "sometimes"}), "params.tool_choice.type"),
        (params(stream=True), "params.stream"),
    ],
)
def test_malformed_requests_are_refused_as_the_sdk_refuses_them(
    request_: dict[str, Any], param: str
) -> None:
    with pytest.raises(ValidationError):
        materialize(ANTHROPIC_REQUEST.validate_python(request_, strict=True))
    with pytest.raises(AnthropicShapeError) as caught:
        anthropic_to_openai_request(request_)
    assert caught.value.param == param


def test_an_empty_conversation_is_refused() -> None:
    with pytest.raises(AnthropicShapeError) as caught:
        anthropic_to_openai_request(params(messages=[]))
    assert caught.value.param == "params.messages"


# --- results -----------------------------------------------------------------------


def test_usage_with_cache_numbers() -> None:
    # Given the job's normalized usage for Anthropic's cached reply
    original = fixture("message_cache_usage.json")
    job_result = parse_message("anthropic", original, 1_700_000_000).response
    assert job_result["usage"]["prompt_tokens"] == 12 + 2051 + 248

    # When it goes back to the client
    message = openai_to_anthropic_message(job_result, original["model"])

    # Then Anthropic's split of the prompt tokens is restored
    assert_valid_message(message)
    keys = ("input_tokens", "output_tokens", "cache_read_input_tokens")
    expected = {key: original["usage"][key] for key in (*keys, "cache_creation_input_tokens")}
    assert message["usage"] == expected
    assert message["stop_reason"] == "max_tokens"


@pytest.mark.parametrize(
    ("usage", "expected"),
    [
        (
            {"prompt_tokens": 100, "completion_tokens": 7, "total_tokens": 107},
            (100, 7, 0, 0),
        ),
        (
            {
                "prompt_tokens": 1000,
                "completion_tokens": 20,
                "total_tokens": 1020,
                "prompt_tokens_details": {"cached_tokens": 900},
            },
            (100, 20, 900, 0),
        ),
        (
            {
                "prompt_tokens": 50,
                "completion_tokens": 1,
                "total_tokens": 51,
                "prompt_tokens_details": {"cached_tokens": 40, "cache_creation_tokens": 30},
            },
            (0, 1, 40, 30),
        ),
        (
            {
                "prompt_tokens": 500,
                "completion_tokens": 3,
                "total_tokens": 503,
                "prompt_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 400},
            },
            (100, 3, 0, 400),
        ),
    ],
)
def test_usage_from_openai_details(usage: dict[str, Any], expected: tuple[int, ...]) -> None:
    message = openai_to_anthropic_message(
        completion({"role": "assistant", "content": "ok"}, **usage), MODEL
    )
    assert_valid_message(message)
    keys = ("input_tokens", "output_tokens", "cache_read_input_tokens")
    assert tuple(message["usage"][key] for key in (*keys, "cache_creation_input_tokens")) == (
        expected
    )


@pytest.mark.parametrize(
    ("finish_reason", "stop_reason"),
    [
        ("stop", "end_turn"),
        ("length", "max_tokens"),
        ("tool_calls", "tool_use"),
        ("function_call", "tool_use"),
        ("content_filter", "refusal"),
        (None, "end_turn"),
        ("something_new", "end_turn"),
    ],
)
def test_finish_reason_table(finish_reason: str | None, stop_reason: str) -> None:
    data = completion({"role": "assistant", "content": "Done."})
    data["choices"][0]["finish_reason"] = finish_reason
    message = openai_to_anthropic_message(data, MODEL)
    assert_valid_message(message)
    assert (message["stop_reason"], message["stop_sequence"]) == (stop_reason, None)


def test_tool_calls_become_tool_use_blocks_whatever_the_finish_reason() -> None:
    call = {
        "id": "call_1",
        "type": "function",
        "function": {"name": "get_weather", "arguments": '{"location": "Paris"}'},
    }
    for finish_reason in ("tool_calls", "stop"):
        data = completion({"role": "assistant", "content": None, "tool_calls": [call]})
        data["choices"][0]["finish_reason"] = finish_reason
        message = openai_to_anthropic_message(data, MODEL)
        assert_valid_message(message)
        assert message["content"] == [
            {
                "type": "tool_use",
                "id": "call_1",
                "name": "get_weather",
                "input": {"location": "Paris"},
            }
        ]
        assert message["stop_reason"] == "tool_use"


def test_a_refusal_keeps_its_text() -> None:
    data = completion(
        {"role": "assistant", "content": None, "refusal": "I can't help with that."},
        "content_filter",
    )
    message = openai_to_anthropic_message(data, MODEL)
    assert_valid_message(message)
    assert message["content"] == [{"type": "text", "text": "I can't help with that."}]
    assert message["stop_reason"] == "refusal"


def test_message_ids_are_stable() -> None:
    data = completion({"role": "assistant", "content": "Hi"})
    assert openai_to_anthropic_message(data, MODEL)["id"] == "msg_chatcmpl-abc123"
    anonymous = {key: value for key, value in data.items() if key != "id"}
    first = openai_to_anthropic_message(anonymous, MODEL)["id"]
    assert first.startswith("msg_") and first == openai_to_anthropic_message(anonymous, MODEL)["id"]
    other = copy.deepcopy(anonymous)
    other["choices"][0]["message"]["content"] = "Hello"
    assert openai_to_anthropic_message(other, MODEL)["id"] != first


@pytest.mark.parametrize("arguments", ["{not json", "[1, 2]", '"a string"'])
def test_a_tool_call_without_an_object_of_arguments_is_refused(arguments: str) -> None:
    call = {"id": "call_1", "type": "function", "function": {"name": "f", "arguments": arguments}}
    data = completion({"role": "assistant", "content": None, "tool_calls": [call]}, "tool_calls")
    with pytest.raises(AnthropicShapeError) as caught:
        openai_to_anthropic_message(data, MODEL)
    assert caught.value.param == "completion.choices[0].message.tool_calls[0].function.arguments"


# --- errors ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("stored", "anthropic_type"),
    [
        (
            {"type": "invalid_request_error", "code": "invalid_value", "status_code": 400},
            "invalid_request_error",
        ),
        (
            {"type": "invalid_request_error", "code": "context_length_exceeded"},
            "invalid_request_error",
        ),
        ({"type": "authentication_error", "status_code": 502}, "authentication_error"),
        ({"type": "permission_error", "status_code": 502}, "permission_error"),
        ({"type": "not_found_error", "status_code": 502}, "not_found_error"),
        (
            {"type": "rate_limit_error", "code": "rate_limit_exceeded", "status_code": 429},
            "rate_limit_error",
        ),
        (
            {"type": "rate_limit_error", "code": "insufficient_quota", "status_code": 429},
            "billing_error",
        ),
        ({"type": "insufficient_quota", "status_code": 429}, "billing_error"),
        ({"type": "timeout_error", "status_code": 504}, "timeout_error"),
        ({"type": "api_error", "status_code": 502}, "api_error"),
        ({"type": "server_error", "status_code": 500}, "api_error"),
        ({"type": "api_error", "code": "overloaded_error", "status_code": 502}, "overloaded_error"),
        ({"type": "api_error", "code": "billing_error", "status_code": 502}, "billing_error"),
        ({"type": "invalid_request_error", "code": "request_too_large"}, "invalid_request_error"),
        ({"type": "api_error", "status_code": 529}, "overloaded_error"),
        ({"type": "invalid_request_error", "status_code": 402}, "billing_error"),
        ({"type": "conflict_error", "status_code": 409}, "invalid_request_error"),
        ({"type": "expired", "code": "job_expired", "status_code": 408}, "timeout_error"),
        ({"type": "something_new", "status_code": 404}, "not_found_error"),
        ({"type": "something_new", "status_code": 418}, "invalid_request_error"),
        ({"type": "something_new", "status_code": 503}, "api_error"),
        ({"type": "cancelled", "code": "job_cancelled"}, "api_error"),
        ({"type": None, "status_code": True}, "api_error"),
    ],
)
def test_error_mapping_table(stored: dict[str, Any], anthropic_type: str) -> None:
    error = {"message": "What went wrong.", "param": None, "code": None, **stored}
    converted = openai_error_to_anthropic(error)
    assert converted == {
        "type": "error",
        "error": {"type": anthropic_type, "message": "What went wrong."},
    }
    assert_no_extras(ErrorResponse.model_validate(converted))
    line = {"custom_id": "req-1", "result": {"type": "errored", "error": converted}}
    MessageBatchIndividualResponse.model_validate(line)


def test_an_error_without_a_message_still_says_something() -> None:
    converted = openai_error_to_anthropic({"type": "api_error", "message": None})
    assert converted["error"]["message"]
    ErrorResponse.model_validate(converted)


# --- the create body ---------------------------------------------------------------


def batch(*custom_ids: str) -> dict[str, Any]:
    return {"requests": [{"custom_id": cid, "params": params()} for cid in custom_ids]}


def test_a_batch_parses() -> None:
    create = MessageBatchCreate.model_validate(batch("req-1", "req_2", "A" * 64))
    assert [request.custom_id for request in create.requests] == ["req-1", "req_2", "A" * 64]
    assert create.requests[0].params == params()


def test_a_duplicate_custom_id_is_refused_with_its_index() -> None:
    with pytest.raises(ValidationError) as caught:
        MessageBatchCreate.model_validate(batch("a", "b", "c", "b"))
    message = str(caught.value)
    assert "requests[3].custom_id 'b' duplicates requests[1]" in message


@pytest.mark.parametrize("custom_id", ["", "a b", "a.b", "é", "x" * 65, "req/1"])
def test_an_invalid_custom_id_is_refused(custom_id: str) -> None:
    with pytest.raises(ValidationError) as caught:
        MessageBatchCreate.model_validate(batch("ok", custom_id))
    assert caught.value.errors()[0]["loc"] == ("requests", 1, "custom_id")


def test_batch_size_limits() -> None:
    with pytest.raises(ValidationError):
        MessageBatchCreate.model_validate({"requests": []})
    schema = MessageBatchCreate.model_json_schema()["properties"]["requests"]
    assert (schema["minItems"], schema["maxItems"]) == (1, 100_000)
    with pytest.raises(ValidationError):
        MessageBatchCreate.model_validate({**batch("a"), "extra": 1})
