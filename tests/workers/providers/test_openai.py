"""The OpenAI protocol against recorded replies, through httpx.MockTransport."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx2 as httpx
import pytest
from openai.types.chat import ChatCompletion
from openai.types.chat.completion_create_params import CompletionCreateParamsNonStreaming
from pydantic import TypeAdapter

from models.fleet_config import parse_fleet_config
from workers.providers import REGISTRY, check_providers, errors
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
    assert check_providers(parse_fleet_config(raw, {})) == [
        "model_list[0].litellm_params.api_base: required for hosted_vllm"
    ]


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
