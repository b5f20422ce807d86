"""GET /v1/models through the official `openai` SDK: the groups a key may use."""

from __future__ import annotations

import openai
import pytest

from tests.conftest import MASTER_KEY, Fleet
from tests.support.tenancy import make_key


def sdk(fleet: Fleet, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{fleet.api_url}/v1", api_key=key, max_retries=0)


def test_models_lists_the_groups_a_key_may_use(clean_fleet: Fleet) -> None:
    allowed = make_key(clean_fleet.api_url, alias="mocks", models=["mock-*"])
    other = make_key(clean_fleet.api_url, alias="others", models=["gpt-4o*"])

    assert [m.id for m in sdk(clean_fleet, MASTER_KEY).models.list()] == ["mock-model"]
    listed = list(sdk(clean_fleet, allowed.key).models.list())
    assert [(m.id, m.object, m.owned_by) for m in listed] == [("mock-model", "model", "llmfleet")]
    assert list(sdk(clean_fleet, other.key).models.list()) == []

    assert sdk(clean_fleet, allowed.key).models.retrieve("mock-model").id == "mock-model"
    with pytest.raises(openai.NotFoundError):
        sdk(clean_fleet, other.key).models.retrieve("mock-model")
    with pytest.raises(openai.NotFoundError):
        sdk(clean_fleet, MASTER_KEY).models.retrieve("no-such-model")
    with pytest.raises(openai.AuthenticationError):
        sdk(clean_fleet, "sk-wrong").models.list()
