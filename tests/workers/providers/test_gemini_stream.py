"""Gemini's `streamGenerateContent?alt=sse` against recorded events: each event checked
against the google-genai SDK's own `GenerateContentResponse`, the deltas assembled into
an answer that parses as openai's `ChatCompletion`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from google.genai import types
from openai.types.chat import ChatCompletion

from models.fleet_config import parse_fleet_config
from tests.support.provider_streams import Recorded, assemble, run_stream
from workers.providers import errors
from workers.providers.gemini import GeminiProtocol

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "gemini"
REQUEST = {"model": "gemini", "messages": [{"role": "user", "content": "Weather in Paris?"}]}


def recorded(name: str) -> bytes:
    body = (FIXTURES / name).read_bytes()
    for line in body.decode().splitlines():
        if line.startswith("data: "):
            types.GenerateContentResponse.model_validate(json.loads(line[len("data: ") :]))
    return body


def stream(handler: Any) -> list[Any]:
    params = {"model": "gemini/gemini-2.5-flash", "api_key": "g-key"}
    raw = {"model_list": [{"model_name": "gemini", "litellm_params": params}]}
    return run_stream(GeminiProtocol(), parse_fleet_config(raw, {}).model_list[0], REQUEST, handler)


def test_text_thoughts_and_a_function_call_stream_into_one_openai_answer() -> None:
    upstream = Recorded(recorded("stream_generate_content.sse"))

    whole, usages = assemble(stream(upstream))

    assert upstream.urls == [
        "https://generativelanguage.googleapis.com/v1beta/models/"
        "gemini-2.5-flash:streamGenerateContent?alt=sse"
    ]
    # the body is a whole call's, in the SDK's own shape
    (content,) = upstream.sent[0]["contents"]
    assert types.Content.model_validate(content).parts == [types.Part(text="Weather in Paris?")]
    completion = ChatCompletion.model_validate(whole)
    message = completion.choices[0].message
    assert message.content == "Let me look that up for Paris."  # the thought left out
    (call,) = message.tool_calls or []
    assert call.function.name == "get_weather"  # type: ignore[union-attr]
    assert json.loads(call.function.arguments) == {"city": "Paris", "unit": "celsius"}  # type: ignore[union-attr]
    assert completion.choices[0].finish_reason == "tool_calls"
    # the usage is the last event's total, thinking counted as completion
    (usage,) = usages
    assert (usage.prompt_tokens, usage.completion_tokens, usage.reasoning_tokens) == (118, 56, 29)


def test_a_blocked_prompt_and_a_cut_stream_map_to_the_error_tree() -> None:
    blocked = {"promptFeedback": {"blockReason": "SAFETY"}, "modelVersion": "gemini-2.5-flash"}
    with pytest.raises(errors.ContentPolicyError, match="SAFETY"):
        stream(Recorded(f"data: {json.dumps(blocked)}\r\n\r\n".encode()))
    events = recorded("stream_generate_content.sse").decode().split("\r\n\r\n")
    with pytest.raises(errors.ProviderConnectionError, match="before its last event"):
        stream(Recorded("\r\n\r\n".join(events[:2]).encode() + b"\r\n\r\n"))
