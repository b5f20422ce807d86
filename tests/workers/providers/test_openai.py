"""The OpenAI protocol against recorded replies, through httpx.MockTransport."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx2 as httpx
import pytest
from openai.types.chat import ChatCompletion, ChatCompletionChunk
from openai.types.chat.completion_create_params import CompletionCreateParamsNonStreaming
from pydantic import TypeAdapter

from models.fleet_config import ConfigError, parse_fleet_config
from models.provider_names import PROVIDERS
from models.stream_events import Delta
from tests.support.provider_streams import Recorded, assemble, run_stream
from workers.providers import REGISTRY, errors
from workers.providers.azure import AzureProtocol
from workers.providers.base import CallOptions
from workers.providers.openai import OpenAIProtocol

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "openai"
REQUEST = {
    "model": "gpt-4o-mini",
    "messages": [{"role": "user", "content": "What is the capital of France?"}],
    "temperature": 0.1,
}


def fixture(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


def deployment(**params: Any) -> Any:
    litellm_params = {"model": "openai/gpt-4o-mini-2024-07-18", "api_key": "sk-test", **params}
    raw = {"model_list": [{"model_name": "gpt-4o-mini", "litellm_params": litellm_params}]}
    return parse_fleet_config(raw, {}).model_list[0]


def call(handler: Any, **params: Any) -> Any:
    with httpx.Client(transport=httpx.MockTransport(handler)) as client:
        return OpenAIProtocol("openai").chat(
            client, deployment(**params), REQUEST, CallOptions(timeout=5)
        )


def test_request_is_a_valid_openai_request_and_reply_parses() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, content=fixture("chat_completion.json"))

    result = call(handler, api_base="https://gw.example/v1/")

    sent = json.loads(seen[0].content)
    TypeAdapter(CompletionCreateParamsNonStreaming).validate_python(sent)
    assert str(seen[0].url) == "https://gw.example/v1/chat/completions"
    assert seen[0].headers["authorization"] == "Bearer sk-test"
    assert sent["model"] == "gpt-4o-mini-2024-07-18"  # the provider's model name
    assert REQUEST["model"] == "gpt-4o-mini"  # the caller's body is not mutated
    ChatCompletion.model_validate(result.response)
    assert (result.usage.prompt_tokens, result.usage.completion_tokens) == (24, 8)
    assert result.usage.total_tokens == 32


def test_usage_details_are_normalized() -> None:
    reply = json.loads(fixture("chat_completion.json"))
    reply["usage"]["prompt_tokens_details"]["cached_tokens"] = 16
    reply["usage"]["completion_tokens_details"]["reasoning_tokens"] = 3
    usage = call(lambda _: httpx.Response(200, json=reply)).usage
    assert (usage.cached_tokens, usage.reasoning_tokens, usage.cache_creation_tokens) == (16, 3, 0)


def test_azure_url_version_and_key_header() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, content=fixture("chat_completion.json"))

    raw = {
        "model_list": [
            {
                "model_name": "gpt",
                "litellm_params": {
                    "model": "azure/my-gpt4o",
                    "api_base": "https://res.openai.azure.com/",
                    "api_key": "az-key",
                    "api_version": "2025-01-01-preview",
                },
            }
        ]
    }
    dep = parse_fleet_config(raw, {}).model_list[0]
    with httpx.Client(transport=httpx.MockTransport(handler)) as client:
        AzureProtocol().chat(client, dep, REQUEST, CallOptions(timeout=5))
    assert str(seen[0].url) == (
        "https://res.openai.azure.com/openai/deployments/my-gpt4o/chat/completions"
        "?api-version=2025-01-01-preview"
    )
    assert seen[0].headers["api-key"] == "az-key"
    assert "authorization" not in seen[0].headers


def test_compatible_vendors_are_registry_entries_of_the_openai_protocol() -> None:
    for prefix, base in [
        ("groq", "https://api.groq.com/openai/v1"),
        ("xai", "https://api.x.ai/v1"),
    ]:
        provider = REGISTRY[prefix]
        assert isinstance(provider, OpenAIProtocol) and provider.default_base == base
    raw = {"model_list": [{"model_name": "m", "litellm_params": {"model": "hosted_vllm/llama"}}]}
    with pytest.raises(ConfigError) as caught:
        parse_fleet_config(raw, {})
    assert "model_list[0].litellm_params.api_base: required for hosted_vllm" in str(caught.value)


def test_the_config_loader_knows_every_provider_of_the_registry() -> None:
    assert set(REGISTRY) == PROVIDERS


@pytest.mark.parametrize(
    ("status", "name", "headers", "cls", "retryable", "cools"),
    [
        (400, "error_400.json", {}, errors.BadRequestError, False, False),
        (400, "error_400_context.json", {}, errors.ContextWindowExceededError, False, False),
        (401, "error_401.json", {}, errors.AuthenticationError, False, True),
        (404, "error_404.json", {}, errors.NotFoundError, False, True),
        (429, "error_429.json", {"retry-after": "7"}, errors.RateLimitedError, True, True),
        (500, "error_500.json", {}, errors.UnavailableError, True, True),
        (503, None, {}, errors.UnavailableError, True, True),
    ],
)
def test_error_replies_map_to_the_error_tree(
    status: int,
    name: str | None,
    headers: dict[str, str],
    cls: type[errors.ProviderError],
    retryable: bool,
    cools: bool,
) -> None:
    body = fixture(name) if name else b"<html>bad gateway</html>"
    with pytest.raises(errors.ProviderError) as info:
        call(lambda _: httpx.Response(status, content=body, headers=headers))
    exc = info.value
    assert type(exc) is cls
    assert (exc.retryable, exc.cools_down) == (retryable, cools)
    if name:
        assert exc.message == json.loads(body)["error"]["message"]
    if status == 429:
        assert exc.retry_after == 7


def test_timeout_connection_and_garbage() -> None:
    def timeout(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("slow", request=request)

    def refused(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    with pytest.raises(errors.ProviderTimeoutError) as info:
        call(timeout)
    assert info.value.retryable and isinstance(info.value.__cause__, httpx.ReadTimeout)
    with pytest.raises(errors.ProviderConnectionError):
        call(refused)
    with pytest.raises(errors.MalformedResponseError):
        call(lambda _: httpx.Response(200, content=b"{not json"))
    with pytest.raises(errors.MalformedResponseError):
        call(lambda _: httpx.Response(200, json={"id": "x", "object": "chat.completion"}))


def test_error_on_the_job_is_openai_shaped_with_status() -> None:
    with pytest.raises(errors.ProviderError) as info:
        call(lambda _: httpx.Response(400, content=fixture("error_400.json")))
    assert info.value.to_error() == {
        "message": "Invalid value for 'temperature': must be between 0 and 2.",
        "type": "invalid_request_error",
        "param": "temperature",
        "code": "invalid_value",
        "status_code": 400,
    }


# Streaming: the recorded events decoded into the fleet's deltas, through httpx.


def sse_events(name: str) -> list[str]:
    """The data of each event of a recorded stream, every chunk checked against the
    `openai` SDK's own `ChatCompletionChunk`."""
    data = [line[len("data: ") :] for line in fixture(name).decode().splitlines() if line]
    for item in data[:-1]:
        ChatCompletionChunk.model_validate_json(item)
    assert data[-1] == "[DONE]"
    return data


def stream(handler: Any, protocol: Any = None, **params: Any) -> list[Any]:
    return run_stream(protocol or OpenAIProtocol("openai"), deployment(**params), REQUEST, handler)


def sse_reply(name: str) -> Recorded:
    return Recorded(fixture(name))


@pytest.mark.parametrize("name", ["chat_stream_text.sse", "chat_stream_tool_calls.sse"])
def test_recorded_streams_decode_into_deltas_that_assemble_the_whole_answer(name: str) -> None:
    # Given: a recorded stream, and the answer its chunks add up to (by the SDK's rules)
    chunks = [ChatCompletionChunk.model_validate_json(d) for d in sse_events(name)[:-1]]
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    arguments: dict[int, str] = {}
    for c in chunks:
        for call in (c.choices[0].delta.tool_calls or []) if c.choices else []:
            arguments[call.index] = arguments.get(call.index, "") + (call.function.arguments or "")  # type: ignore[union-attr]

    handler = sse_reply(name)
    whole, usages = assemble(stream(handler))

    # Then: the call asked for a stream with usage, and its deltas assemble the answer
    assert handler.sent[0]["stream"] is True
    assert handler.sent[0]["stream_options"] == {"include_usage": True}
    assert [u.total_tokens for u in usages] == [chunks[-1].usage.total_tokens]  # type: ignore[union-attr]
    completion = ChatCompletion.model_validate(whole)
    message = completion.choices[0].message
    assert (message.content or "") == text
    assert [json.loads(c.function.arguments) for c in message.tool_calls or []] == [  # type: ignore[union-attr]
        json.loads(arguments[i]) for i in sorted(arguments)
    ]
    assert completion.choices[0].finish_reason == chunks[-2].choices[0].finish_reason


def test_a_stream_error_event_a_cut_stream_and_a_non_stream_map_to_the_error_tree() -> None:
    events = sse_events("chat_stream_text.sse")
    error = {"error": {"message": "The server had an error", "type": "server_error", "code": None}}

    def body(lines: list[str]) -> bytes:
        return "".join(f"data: {line}\n\n" for line in lines).encode()

    with pytest.raises(errors.UnavailableError, match="The server had an error"):
        stream(Recorded(body([*events[:3], json.dumps(error)])))
    with pytest.raises(errors.ProviderConnectionError, match="before its last event"):
        stream(Recorded(body(events[:3])))
    with pytest.raises(errors.MalformedResponseError, match="not an event stream"):
        stream(Recorded(fixture("chat_completion.json"), "application/json"))
    with pytest.raises(errors.AuthenticationError):
        stream(Recorded(fixture("error_401.json"), "application/json", 401))


def test_azure_streams_the_same_events_at_its_own_url() -> None:
    handler = sse_reply("chat_stream_text.sse")
    params = {"model": "azure/gpt4o-prod", "api_base": "https://res.openai.azure.com"}
    items = stream(handler, AzureProtocol(), **params)
    assert "".join(i.content or "" for i in items if isinstance(i, Delta)) == (
        "The capital of France is Paris."
    )
