"""/v1/chat/completions with the official `openai` SDK pointed at the API."""

from __future__ import annotations

import time
from pathlib import Path

import openai
import pytest

from tests.conftest import MASTER_KEY, Fleet
from tests.support.processes import start_api


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


@pytest.mark.parametrize(
    ("directive", "error"),
    [
        ("[mock:status=401]", openai.AuthenticationError),
        ("[mock:status=404]", openai.NotFoundError),
        ("[mock:status=500]", openai.InternalServerError),
    ],
)
def test_a_provider_that_keeps_failing_is_answered_within_seconds(
    clean_fleet: Fleet, directive: str, error: type[openai.APIStatusError]
) -> None:
    # Given a provider that answers every call with the same error
    started = time.monotonic()
    with pytest.raises(error) as info:
        sdk(clean_fleet).chat.completions.create(
            model="mock-model", messages=[{"role": "user", "content": directive}]
        )
    # Then the call answers its status after the fleet's retries, not at the job's deadline
    assert time.monotonic() - started < 15
    assert info.value.status_code == int(directive[-4:-1])
    calls = clean_fleet.mock_stats()["calls"]
    assert calls == 2  # num_retries 1 and two deployments: one more try, on the other one


def test_a_sync_call_waits_for_capacity_only_so_long(clean_fleet: Fleet, tmp_path: Path) -> None:
    # Given an API whose sync calls wait at most 3 s for capacity
    env = {**clean_fleet.env, "LLMFLEET_SYNC_CAPACITY_WAIT": "3"}
    api, api_url = start_api(env, tmp_path, "api-short-wait")
    try:
        client = openai.OpenAI(base_url=f"{api_url}/v1", api_key=MASTER_KEY, max_retries=0)
        started = time.monotonic()
        # When every deployment answers 429
        with pytest.raises(openai.RateLimitError) as info:
            client.chat.completions.create(
                model="mock-model", messages=[{"role": "user", "content": "[mock:status=429]"}]
            )
    finally:
        api.stop()
    # Then the call is refused with 429 soon after the bound, saying why
    assert 3 <= time.monotonic() - started < 20
    assert info.value.code == "no_capacity"
    assert int(info.value.response.headers["retry-after"]) >= 1
