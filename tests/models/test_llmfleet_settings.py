"""The fleet config's own section: `llmfleet_settings` (hooks by import path)."""

from __future__ import annotations

from typing import Any

import pytest

from models.fleet_config import ConfigError, parse_fleet_config

BASE: dict[str, Any] = {
    "model_list": [{"model_name": "m", "litellm_params": {"model": "openai/gpt-4o-mini"}}]
}


def test_hooks_are_read_in_order() -> None:
    config = parse_fleet_config(
        {
            **BASE,
            "llmfleet_settings": {
                "pre_call_hooks": ["workers.hooks_examples:redact_emails", "pkg.mod:Cls.check"],
                "post_call_hooks": ["pkg.mod:redact"],
            },
        },
        {},
    )
    settings = config.llmfleet_settings
    assert settings.pre_call_hooks == ("workers.hooks_examples:redact_emails", "pkg.mod:Cls.check")
    assert settings.post_call_hooks == ("pkg.mod:redact",)


def test_no_section_means_no_hooks() -> None:
    settings = parse_fleet_config(BASE, {}).llmfleet_settings
    assert settings.pre_call_hooks == () and settings.post_call_hooks == ()


@pytest.mark.parametrize(
    ("section", "error"),
    [
        ({"pre_call_hook": ["a:b"]}, "llmfleet_settings.pre_call_hook: unknown key"),
        ({"pre_call_hooks": ["a.b"]}, "not import paths"),
        ({"post_call_hooks": ["a:b c"]}, "not import paths"),
        (["a:b"], "llmfleet_settings: must be a mapping"),
    ],
)
def test_bad_sections_are_errors(section: Any, error: str) -> None:
    with pytest.raises(ConfigError, match=error):
        parse_fleet_config({**BASE, "llmfleet_settings": section}, {})
