"""Anthropic's Messages stream against recorded events: every event checked against
the anthropic SDK's own stream event types, the deltas assembled into an answer that
parses as openai's `ChatCompletion`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from anthropic.types import RawMessageStreamEvent
from anthropic.types.message_create_params import MessageCreateParamsStreaming
from openai.types.chat import ChatCompletion
from pydantic import TypeAdapter

from models.fleet_config import Deployment, parse_fleet_config
from tests.support.provider_streams import Recorded, assemble, run_stream
from workers.providers import errors
from workers.providers.anthropic import AnthropicProtocol

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "anthropic"
EVENT: TypeAdapter[Any] = TypeAdapter(RawMessageStreamEvent)
REQUEST = {"model": "claude", "messages": [{"role": "user", "content": "Weather in Paris?"}]}


def recorded(name: str) -> bytes:
    """A recorded stream, each event's data checked against the SDK's types."""
    body = (FIXTURES / name).read_bytes()
    for line in body.decode().splitlines():
        if line.startswith("data: "):
            event = json.loads(line[len("data: ") :])
            if event["type"] not in ("ping", "error"):
                EVENT.validate_python(event)
    return body


def deployment() -> Deployment:
    params = {"model": "anthropic/claude-sonnet-4-5", "api_key": "sk-ant-test"}
    raw = {"model_list": [{"model_name": "claude", "litellm_params": params}]}
    return parse_fleet_config(raw, {}).model_list[0]


def stream(handler: Any) -> list[Any]:
    return run_stream(AnthropicProtocol(), deployment(), REQUEST, handler)


def test_text_and_a_tool_call_stream_into_one_openai_answer_with_its_usage() -> None:
    upstream = Recorded(recorded("message_stream_tool_use.sse"))

    whole, usages = assemble(stream(upstream))

    # Then: the body asked for a stream, in the SDK's own streaming request shape
    (sent,) = upstream.sent
    TypeAdapter(MessageCreateParamsStreaming).validate_python(sent)
    assert sent["stream"] is True
    assert upstream.urls == ["https://api.anthropic.com/v1/messages"]
    # ... and the deltas add up to the text, the tool call and the finish reason
    completion = ChatCompletion.model_validate(whole)
    message = completion.choices[0].message
    assert message.content == "Okay, let me check the weather in Paris."
    (call,) = message.tool_calls or []
    assert call.id == "toolu_01T1x1fJ34qAmk2tNTrN7Up6"
    assert call.function.name == "get_weather"  # type: ignore[union-attr]
    assert json.loads(call.function.arguments) == {  # type: ignore[union-attr]
        "location": "Paris, France",
        "unit": "celsius",
    }
    assert completion.choices[0].finish_reason == "tool_calls"
    # ... with Anthropic's usage normalized: cache reads counted in the prompt
    (usage,) = usages
    assert (usage.prompt_tokens, usage.cached_tokens, usage.completion_tokens) == (600, 128, 89)


def test_an_error_event_mid_stream_is_the_error_tree_and_a_cut_stream_is_a_reset() -> None:
    with pytest.raises(errors.UnavailableError, match="Overloaded"):
        stream(Recorded(recorded("message_stream_overloaded.sse")))
    whole = recorded("message_stream_tool_use.sse").decode()
    cut = whole[: whole.index("event: message_delta")].encode()
    with pytest.raises(errors.ProviderConnectionError, match="before its last event"):
        stream(Recorded(cut))
    refused = Recorded((FIXTURES / "error_401.json").read_bytes(), "application/json", 401)
    with pytest.raises(errors.AuthenticationError):
        stream(refused)
