"""/v1/messages with the official `anthropic` SDK pointed at the fleet: on the project's
OpenAI-compatible mock, and on a provider speaking Anthropic's own protocol (recorded
replies served over HTTP)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anthropic
import pytest

from tests.conftest import migrated_database
from tests.support.fleet import MASTER_KEY, MiniFleet, deployment, mini_fleet
from tests.support.recorded_server import recorded_server

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "anthropic"
ASK = [{"role": "user", "content": "stream this please"}]


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MiniFleet]:
    """A fleet serving `mock-model` (the OpenAI-compatible mock) and `claude` (an
    Anthropic-protocol deployment answering recorded replies)."""
    whole = FIXTURES / "message_tool_use.json"
    streamed = FIXTURES / "message_stream_tool_use.sse"
    with (
        migrated_database("llmfleet_test_messages") as (url, engine),
        recorded_server("/v1/messages", whole, streamed) as claude,
    ):

        def config(mocks: dict[str, str]) -> dict[str, Any]:
            anthropic_protocol = {
                "model_name": "claude",
                "litellm_params": {
                    "model": "anthropic/claude-sonnet-4-5",
                    "api_base": claude,
                    "api_key": "sk-ant-test",
                },
            }
            return {
                "model_list": [deployment("m", mocks["m"]), anthropic_protocol],
                "router_settings": {"num_retries": 0, "timeout": 30},
            }

        log_dir = tmp_path_factory.mktemp("messages-fleet")
        mocks = {"m": ["--seed", "1"]}
        with mini_fleet(log_dir, url, engine, config, mocks, dbs=(12, 14)) as started:
            yield started


def sdk(fleet: MiniFleet) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=fleet.api_url, api_key=MASTER_KEY, max_retries=0)


def test_create_on_an_openai_compatible_provider(fleet: MiniFleet) -> None:
    message = sdk(fleet).messages.create(
        model="mock-model",
        max_tokens=50,
        system="be brief",
        messages=[{"role": "user", "content": "hi there"}],
    )
    assert [b.type for b in message.content] == ["text"]
    assert message.content[0].text == "Echo: hi there"  # type: ignore[union-attr]
    assert message.stop_reason == "end_turn"
    assert (message.usage.input_tokens, message.usage.output_tokens) == (4, 3)


def test_stream_on_an_openai_compatible_provider_arrives_as_sent(fleet: MiniFleet) -> None:
    arrivals = []
    with sdk(fleet).messages.stream(
        model="mock-model",
        max_tokens=50,
        messages=[{"role": "user", "content": "a b [mock:chunks=5] [mock:interval=0.3]"}],
    ) as stream:
        for _text in stream.text_stream:
            arrivals.append(time.monotonic())
        final = stream.get_final_message()

    assert len(arrivals) == 5
    assert arrivals[-1] - arrivals[0] > 0.9  # each piece as the provider sent it
    echoed = "Echo: a b [mock:chunks=5] [mock:interval=0.3]"  # 5 words: one a chunk
    assert final.content[0].text == echoed  # type: ignore[union-attr]
    assert final.stop_reason == "end_turn"
    assert final.usage.output_tokens == 5


def test_create_and_stream_on_the_anthropic_protocol(fleet: MiniFleet) -> None:
    client = sdk(fleet)
    tools: Any = [
        {"name": "get_weather", "input_schema": {"type": "object"}, "description": "Weather."}
    ]
    message = client.messages.create(model="claude", max_tokens=200, messages=ASK, tools=tools)
    recorded = json.loads((FIXTURES / "message_tool_use.json").read_bytes())
    uses = [b for b in message.content if b.type == "tool_use"]
    assert [(u.name, u.input) for u in uses] == [
        (b["name"], b["input"]) for b in recorded["content"] if b["type"] == "tool_use"
    ]
    assert message.stop_reason == "tool_use"

    with client.messages.stream(model="claude", max_tokens=200, messages=ASK, tools=tools) as s:
        final = s.get_final_message()
    text = "".join(b.text for b in final.content if b.type == "text")
    assert text == "Okay, let me check the weather in Paris."
    (use,) = [b for b in final.content if b.type == "tool_use"]
    assert (use.id, use.name) == ("toolu_01T1x1fJ34qAmk2tNTrN7Up6", "get_weather")
    assert use.input == {"location": "Paris, France", "unit": "celsius"}
    assert final.stop_reason == "tool_use"
    assert (final.usage.input_tokens, final.usage.cache_read_input_tokens) == (472, 128)
    assert final.usage.output_tokens == 89


def test_errors_come_in_anthropics_shape(fleet: MiniFleet) -> None:
    client = sdk(fleet)
    unauthorized = [{"role": "user", "content": "[mock:status=401]"}]
    with pytest.raises(anthropic.NotFoundError) as missing:
        client.messages.create(model="nope", max_tokens=5, messages=ASK)
    with pytest.raises(anthropic.BadRequestError) as refused:
        client.messages.create(
            model="mock-model", max_tokens=5, messages=ASK, extra_body={"top_k": 3}
        )
    with pytest.raises(anthropic.AuthenticationError) as provider:
        client.messages.create(model="mock-model", max_tokens=5, messages=unauthorized)
    bodies: list[Any] = [missing.value.body, refused.value.body, provider.value.body]
    assert [b["type"] for b in bodies] == ["error"] * 3
    assert [b["error"]["type"] for b in bodies] == [
        "not_found_error",
        "invalid_request_error",
        "authentication_error",
    ]
    assert bodies[1]["error"]["message"].startswith("top_k: ")  # the field, named
    assert "mock error 401" in bodies[2]["error"]["message"]  # the provider's own words


def test_count_tokens_is_an_estimate_of_the_prompt(fleet: MiniFleet) -> None:
    short = sdk(fleet).messages.count_tokens(model="mock-model", messages=ASK)
    long = sdk(fleet).messages.count_tokens(
        model="mock-model", messages=[{"role": "user", "content": "stream this please " * 20}]
    )
    assert 0 < short.input_tokens < long.input_tokens
