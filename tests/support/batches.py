"""Batches through a fleet as a data team sends them: the official `openai` SDK."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import openai

from tests.support.fleet import MASTER_KEY, MiniFleet

ENDED = ("completed", "failed", "expired", "cancelled")


def sdk(f: MiniFleet) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{f.api_url}/v1", api_key=MASTER_KEY, max_retries=0)


def submit(f: MiniFleet, tmp_path: Path, n: int, prefix: str, window: str = "24h") -> str:
    path = tmp_path / f"{prefix}.jsonl"
    with path.open("w") as out:
        for i in range(n):
            body = {
                "model": "mock-model",
                "messages": [{"role": "user", "content": f"{prefix} {i}"}],
            }
            out.write(
                json.dumps(
                    {
                        "custom_id": f"{prefix}-{i}",
                        "method": "POST",
                        "url": "/v1/chat/completions",
                        "body": body,
                    }
                )
                + "\n"
            )
    client = sdk(f)
    file_id = client.files.create(file=path.open("rb"), purpose="batch").id
    batch = client.batches.create(
        input_file_id=file_id, endpoint="/v1/chat/completions", completion_window=window
    )
    assert batch.status == "in_progress", batch.errors
    return batch.id


def wait_ended(f: MiniFleet, batch_id: str, timeout: float = 120) -> Any:
    return wait_batch(sdk(f), batch_id, timeout)


def wait_batch(client: openai.OpenAI, batch_id: str, timeout: float = 120) -> Any:
    """The batch once it has ended, or as it is when `timeout` runs out."""
    until = time.monotonic() + timeout
    batch = client.batches.retrieve(batch_id)
    while batch.status not in ENDED and time.monotonic() < until:
        time.sleep(0.3)
        batch = client.batches.retrieve(batch_id)
    return batch


def lines(f: MiniFleet, file_id: str | None) -> list[dict[str, Any]]:
    if file_id is None:
        return []
    return [json.loads(x) for x in sdk(f).files.content(file_id).text.splitlines()]
