"""Model access patterns, and what batch validation makes of a key's model access and
of a line's `cache` option (pure: no database, no Redis)."""

from __future__ import annotations

import json

import pytest

from models.batch_lines import BatchLine, LineError, parse_lines, validate_file
from models.tenancy import model_allowed

ENDPOINT = "/v1/chat/completions"


def line(custom_id: str, model: str, **extra: object) -> bytes:
    body = {"model": model, "messages": [{"role": "user", "content": "x"}], **extra}
    item = {"custom_id": custom_id, "method": "POST", "url": ENDPOINT, "body": body}
    return json.dumps(item).encode()


@pytest.mark.parametrize(
    ("patterns", "names", "allowed"),
    [
        (None, ("anything",), True),
        ([], ("gpt-4o",), False),
        (["gpt-4o*"], ("gpt-4o-mini",), True),
        (["gpt-4o*"], ("GPT-4o-mini",), False),
        (["gpt-4o*", "mock-model"], ("mock-model",), True),
        (["mock-model"], ("mock",), False),
        (["openai/*"], ("openai/gpt-4.1",), True),
        (["gpt-4o"], ("gpt4", "gpt-4o"), True),  # an alias is allowed by its target
        (["gpt-4o"], ("gpt4", ""), False),
    ],
)
def test_model_patterns(patterns: list[str] | None, names: tuple[str, ...], allowed: bool) -> None:
    assert model_allowed(patterns, *names) is allowed


def test_a_line_for_a_model_the_key_may_not_use_is_its_own_error() -> None:
    lines = [line("a", "mock-model"), line("b", "gpt-4o"), line("c", "unknown")]
    report = validate_file(
        lines, 0, ENDPOINT, lambda m: m != "unknown", lambda m: m in ("mock-model", "unknown")
    )
    assert [(e.line, e.code) for e in report.errors] == [
        (2, "model_not_allowed"),
        (3, "model_not_found"),
    ]
    assert "gpt-4o" in report.errors[0].message


def test_a_lines_cache_option_is_kept_apart_from_the_provider_body() -> None:
    parsed = list(parse_lines([line("a", "m", cache={"ttl": 60}), line("b", "m")], ENDPOINT, bool))
    first, second = parsed
    assert isinstance(first, BatchLine) and isinstance(second, BatchLine)
    assert first.cache_ttl == 60 and "cache" not in first.body
    assert second.cache_ttl is None
    [bad] = list(parse_lines([line("a", "m", cache={"ttl": -1})], ENDPOINT, bool))
    assert isinstance(bad, LineError) and bad.param == "body.cache.ttl"
