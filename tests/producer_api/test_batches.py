"""The OpenAI Files + Batch API, driven by the official `openai` SDK against the API,
executed by the real worker fleet."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import openai
from sqlalchemy import text

from tests.conftest import MASTER_KEY, Fleet
from tests.support.batches import wait_batch
from tests.support.webhooks import Receiver, verify


def sdk(fleet: Fleet) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{fleet.api_url}/v1", api_key=MASTER_KEY, max_retries=0)


def line(custom_id: str, content: str, model: str = "mock-model", **body: Any) -> dict[str, Any]:
    return {
        "custom_id": custom_id,
        "method": "POST",
        "url": "/v1/chat/completions",
        "body": {"model": model, "messages": [{"role": "user", "content": content}], **body},
    }


def write_jsonl(path: Path, rows: list[Any]) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def test_openai_sdk_batch_round_trip(clean_fleet: Fleet, tmp_path: Path) -> None:
    client = sdk(clean_fleet)
    rows = [line(f"req-{i}", f"question {i}") for i in range(25)]
    rows.append(line("bad-one", "[mock:status=400]"))
    path = write_jsonl(tmp_path / "in.jsonl", rows)

    uploaded = client.files.create(file=path.open("rb"), purpose="batch")
    assert uploaded.bytes == path.stat().st_size
    batch = client.batches.create(
        input_file_id=uploaded.id,
        endpoint="/v1/chat/completions",
        completion_window="24h",
        metadata={"team": "data"},
    )
    assert batch.status == "in_progress" and batch.request_counts.total == 26
    batch = wait_batch(client, batch.id)

    assert batch.status == "completed"
    assert (batch.request_counts.completed, batch.request_counts.failed) == (25, 1)
    assert batch.metadata == {"team": "data"} and batch.model == "mock-model"
    assert batch.usage is not None and batch.usage.input_tokens > 0
    assert batch.id in [b.id for b in client.batches.list(limit=5)]
    output = [json.loads(x) for x in client.files.content(batch.output_file_id).text.splitlines()]
    errors = [json.loads(x) for x in client.files.content(batch.error_file_id).text.splitlines()]
    answers = {
        o["custom_id"]: o["response"]["body"]["choices"][0]["message"]["content"] for o in output
    }
    assert answers == {f"req-{i}": f"Echo: question {i}" for i in range(25)}
    assert [e["custom_id"] for e in errors] == ["bad-one"]
    assert errors[0]["response"]["status_code"] == 400
    assert "refused by the mock" in errors[0]["response"]["body"]["error"]["message"]
    assert client.files.retrieve(batch.output_file_id).purpose == "batch_output"


def test_every_bad_line_is_reported_and_nothing_runs(clean_fleet: Fleet, tmp_path: Path) -> None:
    client = sdk(clean_fleet)
    rows: list[Any] = [
        line("ok-1", "fine"),
        "{not json",
        {"method": "POST", "url": "/v1/chat/completions", "body": {}},
        line("ok-1", "duplicate id"),
        {**line("get", "x"), "method": "GET"},
        {**line("url", "x"), "url": "/v1/embeddings"},
        line("temp", "x", temperature=9),
        line("model", "x", model="no-such-model"),
    ]
    path = write_jsonl(tmp_path / "bad.jsonl", rows)
    file_id = client.files.create(file=path.open("rb"), purpose="batch").id
    batch = client.batches.create(
        input_file_id=file_id, endpoint="/v1/chat/completions", completion_window="24h"
    )
    assert batch.status == "failed"
    assert batch.errors is not None
    found = [(e.line, e.code, e.param) for e in batch.errors.data]
    assert found == [
        (2, "invalid_json", None),
        (3, "missing_custom_id", "custom_id"),
        (4, "duplicate_custom_id", "custom_id"),
        (5, "invalid_method", "method"),
        (6, "mismatched_url", "url"),
        (7, "invalid_body", "body.temperature"),
        (8, "model_not_found", "body.model"),
    ]
    with clean_fleet.engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM jobs")).scalar_one() == 0


def test_empty_file_and_wrong_purpose(clean_fleet: Fleet, tmp_path: Path) -> None:
    client = sdk(clean_fleet)
    empty = client.files.create(
        file=write_jsonl(tmp_path / "e.jsonl", []).open("rb"), purpose="batch"
    )
    batch = client.batches.create(
        input_file_id=empty.id, endpoint="/v1/chat/completions", completion_window="1h"
    )
    assert batch.status == "failed" and batch.errors and batch.errors.data[0].code == "empty_file"
    try:
        client.files.create(
            file=write_jsonl(tmp_path / "x.jsonl", []).open("rb"), purpose="assistants"
        )
        raise AssertionError("purpose assistants was accepted")
    except openai.BadRequestError as exc:
        assert "purpose" in exc.message


def test_partial_output_dry_run_and_file_management(clean_fleet: Fleet, tmp_path: Path) -> None:
    client = sdk(clean_fleet)
    rows = [line(f"r{i}", f"slow {i} [mock:latency={0.1 if i < 3 else 3}]") for i in range(6)]
    path = write_jsonl(tmp_path / "in.jsonl", rows)
    file_id = client.files.create(file=path.open("rb"), purpose="batch").id

    with clean_fleet.client() as http:
        dry = http.post(
            "/v1/batches",
            params={"dry_run": "true"},
            json={"input_file_id": file_id, "endpoint": "/v1/chat/completions"},
        ).json()
        assert dry["valid"] is True and dry["request_count"] == 6
        assert dry["estimated_input_tokens"] > 0
        batch = client.batches.create(
            input_file_id=file_id, endpoint="/v1/chat/completions", completion_window="1h"
        )
        until = time.monotonic() + 30
        partial: list[str] = []
        while len(partial) < 3 and time.monotonic() < until:
            time.sleep(0.3)
            response = http.get(f"/v1/batches/{batch.id}/output", params={"partial": "true"})
            partial = response.text.splitlines()
        assert sorted(json.loads(x)["custom_id"] for x in partial) == ["r0", "r1", "r2"]
        assert http.get(f"/v1/batches/{batch.id}/output").status_code == 409
    assert wait_batch(client, batch.id).status == "completed"
    assert client.files.content(file_id).content == path.read_bytes()
    assert client.files.delete(file_id).deleted is True
    try:
        client.files.retrieve(file_id)
        raise AssertionError("a deleted file is still there")
    except openai.NotFoundError:
        pass


def test_batch_end_sends_a_signed_webhook(
    clean_fleet: Fleet, tmp_path: Path, receiver: Callable[..., Receiver]
) -> None:
    hook = receiver()
    client = sdk(clean_fleet)
    path = write_jsonl(tmp_path / "in.jsonl", [line("a", "one"), line("b", "two")])
    file_id = client.files.create(file=path.open("rb"), purpose="batch").id
    batch = client.batches.create(
        input_file_id=file_id,
        endpoint="/v1/chat/completions",
        completion_window="1h",
        extra_body={"webhook_url": hook.url},
    )
    assert wait_batch(client, batch.id).status == "completed"
    [received] = hook.wait_for(1)
    event = verify(received)
    assert event["type"] == "batch.completed" and event["data"] == {"id": batch.id}
