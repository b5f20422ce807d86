"""Input past the border's limits (`models/wire.py`) is refused where it enters, with a
400 naming the field (and the line), and leaves nothing behind: no row, no count
against a key's limits, no listing that stops answering.

Each case here was once accepted (or answered 500) and did its damage later: a lone
surrogate crashed every claim of its job, a year-1 deadline broke every listing of the
owner's jobs, an oversized duration or integer answered 500, deep nesting in a batch
line overflowed the parser's stack, a typo on an admin route made a key that never
expires.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import text

from tests.conftest import Fleet
from tests.support.tenancy import make_key

SURROGATE = '"x \\ud800"'  # JSON text of a string holding a lone surrogate


def count(fleet: Fleet, table: str) -> int:
    with fleet.engine.connect() as conn:
        return int(conn.execute(text(f"SELECT count(*) FROM {table}")).scalar_one())


def post_raw(client: httpx.Client, path: str, raw: str, **params: str) -> httpx.Response:
    """A body sent as written: clients refuse to encode some of these values."""
    headers = {"content-type": "application/json"}
    return client.post(
        path, content=raw.encode("utf-8", "surrogatepass"), headers=headers, params=params
    )


def refused(response: httpx.Response, param: str, *words: str) -> dict[str, Any]:
    assert response.status_code == 400, response.text
    error: dict[str, Any] = response.json()["error"]
    assert error["type"] == "invalid_request_error"
    assert error["param"] == param, error
    for word in (param, *words):
        assert word in error["message"], error
    return error


def chat_raw(content: str, **extra: Any) -> str:
    rest = "".join(f", {json.dumps(k)}: {v}" for k, v in extra.items())
    return (
        f'{{"model": "mock-model", "messages": [{{"role": "user", "content": {content}}}]{rest}}}'
    )


def listings_answer(fleet: Fleet) -> None:
    with fleet.client() as client:
        for path in ("/v1/jobs", "/v1/keys", "/v1/batches", "/ui/api/jobs"):
            response = client.get(path)
            assert response.status_code in (200, 401), (path, response.text)
            assert response.status_code == 200 or path.startswith("/ui")


@pytest.mark.parametrize(
    ("path", "raw", "param"),
    [
        ("/v1/jobs", chat_raw(SURROGATE), "messages.0.content"),
        ("/v1/chat/completions", chat_raw(SURROGATE), "messages.0.content"),
        ("/v1/jobs", chat_raw('"ok"', metadata='{"k": "\\udfff"}'), "metadata.k"),
        ("/v1/jobs", chat_raw('"nul \\u0000 here"'), "messages.0.content"),
        ("/v1/embeddings", '{"model": "mock-model", "input": "\\ud83d"}', "input"),
        ("/v1/keys", '{"alias": "\\ud800"}', "alias"),
        ("/v1/jobs", chat_raw('"ok"', temperature="NaN"), "body"),
        ("/v1/jobs", chat_raw('"ok"', seed="1e400"), "seed"),
        ("/v1/jobs", chat_raw('"ok"', seed=str(2**62)), "seed"),
        ("/v1/jobs", chat_raw('"ok"', tools="[" * 70 + "]" * 70), "tools" + ".0" * 63),
        ("/v1/jobs", chat_raw('"ok"', tools="[" * 100_000 + "]" * 100_000), "body"),
    ],
)
def test_a_value_past_a_limit_is_refused_naming_its_field(
    clean_fleet: Fleet, path: str, raw: str, param: str
) -> None:
    with clean_fleet.client() as client:
        error = refused(post_raw(client, path, raw), param)
    assert error["code"] in ("invalid_value", "invalid_json")
    assert count(clean_fleet, "jobs") == 0 and count(clean_fleet, "api_keys") == 0
    listings_answer(clean_fleet)


@pytest.mark.parametrize(
    ("field", "value", "words"),
    [
        ("deadline", "0001-01-01T00:00:00+14:00", ["1970"]),
        ("deadline", "9999-12-31T23:59:59-14:00", ["9999"]),
        ("deadline", "2001-01-01T00:00:00Z", ["past"]),
        ("deadline", "2030-01-01T00:00:00", ["timezone"]),
        ("completion_window", "99999999999d", []),
        ("completion_window", "3000000d", ["365d"]),
        ("max_tokens", 2**62, ["out of range"]),
        ("max_tokens", 10**30, []),
        ("max_tokens", 2**31, ["1000000000"]),
        ("max_completion_tokens", 2**31, ["1000000000"]),
    ],
)
def test_dates_durations_and_token_counts_are_bounded_and_nothing_is_counted(
    clean_fleet: Fleet, field: str, value: Any, words: list[str]
) -> None:
    # Given a key whose rpm allows one job, and tpm a few thousand tokens
    key = make_key(clean_fleet.api_url, rpm=1, tpm=5000)
    body = {"model": "mock-model", "messages": [{"role": "user", "content": "hi"}]}
    with clean_fleet.client(key.key) as client:
        # When it sends the value, twice on one connection
        for _ in range(2):
            response = client.post("/v1/jobs", json={**body, field: value})
            refused(response, field, *words)
        # Then nothing was stored or counted: its one job a minute is still there
        assert count(clean_fleet, "jobs") == 0
        assert client.post("/v1/jobs", json={**body, "max_tokens": 10}).status_code == 202
    listings_answer(clean_fleet)


def test_key_dates_and_durations_are_bounded(clean_fleet: Fleet) -> None:
    with clean_fleet.client() as admin:
        refused(
            admin.post("/v1/keys", json={"expires_at": "0001-01-01T00:00:00+14:00"}),
            "expires_at",
            "1970",
        )
        refused(admin.post("/v1/keys", json={"duration": "3000000d"}), "duration", "3650d")
        refused(admin.post("/v1/keys", json={"duration": "99999999999d"}), "duration")
        key = make_key(clean_fleet.api_url, duration="30d")
        refused(
            admin.patch(f"/v1/keys/{key.id}", json={"expires_at": "0000-12-31T00:00:00Z"}),
            "expires_at",
        )
        assert admin.get(f"/v1/keys/{key.id}").json()["expires_at"] is not None
    assert count(clean_fleet, "api_keys") == 1
    listings_answer(clean_fleet)


@pytest.mark.parametrize(
    ("path", "body", "param"),
    [
        ("/v1/keys", {"expires": "30d"}, "expires"),
        ("/v1/keys", {"rpm": 10, "tmp": 5}, "tmp"),
        ("/v1/teams", {"name": "t", "budget": 5}, "budget"),
        ("/v1/customers", {"name": "c", "subscription": "s"}, "subscription"),
        ("/v1/budgets", {"scope": "key", "scope_id": "k", "max_spend": "1", "x": 1}, "x"),
    ],
)
def test_admin_bodies_refuse_unknown_fields(
    clean_fleet: Fleet, path: str, body: dict[str, Any], param: str
) -> None:
    with clean_fleet.client() as admin:
        error = refused(admin.post(path, json=body), param)
    assert "Extra inputs are not permitted" in error["message"]
    for table in ("api_keys", "teams", "customers", "budgets"):
        assert count(clean_fleet, table) == 0


def test_batch_windows_are_bounded(clean_fleet: Fleet, tmp_path: Path) -> None:
    upload = tmp_path / "in.jsonl"
    line = {
        "custom_id": "a",
        "method": "POST",
        "url": "/v1/chat/completions",
        "body": {"model": "mock-model", "messages": [{"role": "user", "content": "x"}]},
    }
    upload.write_text(json.dumps(line) + "\n")
    with clean_fleet.client() as client:
        file_id = client.post(
            "/v1/files", files={"file": upload.open("rb")}, data={"purpose": "batch"}
        ).json()["id"]
        for window in ("99999999999d", "3000000d"):
            body = {
                "input_file_id": file_id,
                "endpoint": "/v1/chat/completions",
                "completion_window": window,
            }
            refused(client.post("/v1/batches", json=body), "completion_window")
    assert count(clean_fleet, "batches") == 0


def bad_lines() -> list[tuple[str, str]]:
    """(line text, the param its error names)."""
    deep = '{"custom_id": "deep", "method": "POST", "url": "/v1/chat/completions", "body": ' + (
        '{"model": "mock-model", "messages": [{"role": "user", "content": "x"}], "tools": '
        + "[" * 100_000
        + "]" * 100_000
        + "}}"
    )

    def chat_line(custom_id: str, content: str, **extra: str) -> str:
        return (
            f'{{"custom_id": "{custom_id}", "method": "POST", "url": "/v1/chat/completions",'
            f' "body": {chat_raw(content, **extra)}}}'
        )

    return [
        (chat_line("ok", '"fine"'), ""),
        (chat_line("sur", SURROGATE), "body.messages.0.content"),
        (deep, ""),
        (chat_line("big", '"x"', max_tokens=str(2**62)), "body.max_tokens"),
        (chat_line("nan", '"x"', temperature="Infinity"), ""),
        (chat_line("key", '"x"', metadata='{"\\ud800": "v"}'), "body.metadata"),
    ]


@pytest.mark.parametrize("dry_run", [False, True])
def test_every_bad_batch_line_is_reported_with_its_line_and_field(
    clean_fleet: Fleet, tmp_path: Path, dry_run: bool
) -> None:
    lines = bad_lines()
    upload = tmp_path / "bad.jsonl"
    upload.write_bytes(b"\n".join(t.encode("utf-8", "surrogatepass") for t, _ in lines) + b"\n")
    with clean_fleet.client() as client:
        file_id = client.post(
            "/v1/files", files={"file": upload.open("rb")}, data={"purpose": "batch"}
        ).json()["id"]
        body = {"input_file_id": file_id, "endpoint": "/v1/chat/completions"}
        params = {"dry_run": "true"} if dry_run else {}
        response = client.post("/v1/batches", json=body, params=params)
    assert response.status_code == 200, response.text
    answer = response.json()
    if dry_run:
        assert answer["valid"] is False
    else:
        assert answer["status"] == "failed"
    errors = answer["errors"]["data"]
    assert [e["line"] for e in errors] == [2, 3, 4, 5, 6]
    for error, (_, param) in zip(errors, lines[1:], strict=True):
        if param:
            assert error["param"] == param, error
            assert param in error["message"]
    assert "nested deeper than 64" in errors[1]["message"]
    assert count(clean_fleet, "jobs") == 0
    listings_answer(clean_fleet)


def test_anthropic_batch_requests_are_held_to_the_same_limits(clean_fleet: Fleet) -> None:
    raw = (
        '{"requests": [{"custom_id": "a", "params": {"model": "mock-model", "max_tokens": 10,'
        ' "messages": [{"role": "user", "content": "x \\udc00"}]}}]}'
    )
    with clean_fleet.client() as client:
        refused(
            post_raw(client, "/v1/messages/batches", raw), "requests.0.params.messages.0.content"
        )
    assert count(clean_fleet, "batches") == 0 and count(clean_fleet, "jobs") == 0
