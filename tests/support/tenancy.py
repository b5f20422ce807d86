"""Virtual keys for tests: minted through the admin API of a running fleet."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

MASTER_KEY = "sk-test-master-key"


@dataclass(frozen=True)
class Minted:
    id: str
    key: str
    body: dict[str, Any]


def make_key(api_url: str, **fields: Any) -> Minted:
    """A new virtual key with `fields` (KeyCreate's) set."""
    response = httpx.post(
        f"{api_url}/v1/keys", json=fields, headers={"Authorization": f"Bearer {MASTER_KEY}"}
    )
    assert response.status_code == 201, response.text
    body = response.json()
    return Minted(body["id"], body["key"], body)


def chat(content: str, model: str = "mock-model", **extra: Any) -> dict[str, Any]:
    return {"model": model, "messages": [{"role": "user", "content": content}], **extra}


def batch_file(path: Path, lines: list[dict[str, Any]]) -> Path:
    """A batch input file of chat-completions request bodies, custom ids r1, r2, ..."""
    rows = [
        {"custom_id": f"r{i}", "method": "POST", "url": "/v1/chat/completions", "body": body}
        for i, body in enumerate(lines, start=1)
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def wait_batch(client: httpx.Client, batch_id: str, timeout: float = 60) -> dict[str, Any]:
    until = time.monotonic() + timeout
    while True:
        batch: dict[str, Any] = client.get(f"/v1/batches/{batch_id}").json()
        if batch["status"] in ("completed", "failed", "expired", "cancelled"):
            return batch
        assert time.monotonic() < until, batch
        time.sleep(0.2)


def wait_job(client: httpx.Client, job_id: str, timeout: float = 60) -> dict[str, Any]:
    job: dict[str, Any] = client.get(f"/v1/jobs/{job_id}", params={"wait": timeout}).json()
    return job
