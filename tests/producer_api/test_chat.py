"""/v1/chat/completions with the official `openai` SDK pointed at the API."""

from __future__ import annotations

import openai
import pytest

from tests.conftest import MASTER_KEY, Fleet


def sdk(fleet: Fleet, key: str = MASTER_KEY) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{fleet.api_url}/v1", api_key=key, max_retries=0)


def test_openai_sdk_chat_completion(clean_fleet: Fleet) -> None:
    completion = sdk(clean_fleet).chat.completions.create(
        model="mock-model",
        messages=[
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": "hi there"},
        ],
        temperature=0.2,
        max_tokens=50,
    )
    assert completion.object == "chat.completion"
    assert completion.choices[0].message.content == "Echo: hi there"
    assert completion.choices[0].finish_reason == "stop"
    assert completion.usage is not None and completion.usage.prompt_tokens == 4
    assert clean_fleet.mock_stats()["calls"] == 1


def test_openai_sdk_sees_provider_errors_as_its_own(clean_fleet: Fleet) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        sdk(clean_fleet).chat.completions.create(
            model="mock-model", messages=[{"role": "user", "content": "[mock:status=400]"}]
        )
    assert "refused by the mock provider" in info.value.message


def test_openai_sdk_wrong_key_and_unknown_model(clean_fleet: Fleet) -> None:
    with pytest.raises(openai.AuthenticationError):
        sdk(clean_fleet, key="nope").chat.completions.create(
            model="mock-model", messages=[{"role": "user", "content": "x"}]
        )
    with pytest.raises(openai.NotFoundError):
        sdk(clean_fleet).chat.completions.create(
            model="no-such-model", messages=[{"role": "user", "content": "x"}]
        )


def test_openai_sdk_embeddings(clean_fleet: Fleet) -> None:
    result = sdk(clean_fleet).embeddings.create(model="mock-model", input=["alpha", "beta gamma"])
    assert [d.index for d in result.data] == [0, 1]
    assert len(result.data[0].embedding) == 8
    assert result.data[0].embedding != result.data[1].embedding
    assert result.usage.prompt_tokens == 3


def test_openai_sdk_lists_nothing_it_cannot_serve(clean_fleet: Fleet) -> None:
    with pytest.raises(openai.BadRequestError):
        sdk(clean_fleet).embeddings.create(model="mock-model", input=[])
