"""The demo run of `llmfleet up --demo N`: submit a batch of N lines, show its progress,
print the results."""

from __future__ import annotations

import json
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from producer_api.cli.batch_progress import END_STATES, ProgressView
from producer_api.cli.client import ApiClient

__all__ = ["run_demo"]

TOPICS = ("queues", "retries", "deadlines", "routing", "billing", "workers", "batches")
TIMEOUT_SECONDS = 180


def run_demo(
    url: str, api_key: str, count: int, console: Console, check_alive: Callable[[], None]
) -> bool:
    """True when every line succeeded. `check_alive` raises when a fleet process has
    died, so a broken fleet fails at once instead of waiting out the batch."""
    with (
        tempfile.TemporaryDirectory(prefix="llmfleet-demo-") as tmp,
        ApiClient(url, api_key) as api,
    ):
        requests = Path(tmp) / "demo.jsonl"
        requests.write_text("".join(json.dumps(_line(i)) + "\n" for i in range(count)))
        file_id = api.upload_file(requests)["id"]
        batch = api.create_batch(
            {
                "input_file_id": file_id,
                "endpoint": "/v1/chat/completions",
                "completion_window": "1h",
                "metadata": {"demo": "true"},
            }
        )
        batch = _follow(api, batch, console, check_alive)
        results = Path(tmp) / "results.jsonl"
        lines: list[dict[str, Any]] = []
        if batch.get("output_file_id"):
            api.download_file(batch["output_file_id"], results)
            lines = [json.loads(x) for x in results.read_text().splitlines() if x.strip()]
    lines.sort(key=lambda line: int(str(line["custom_id"]).rpartition("-")[2]))
    table = Table(title=f"demo batch {batch['id']}: {count} lines")
    for column in ("custom_id", "status", "model", "tokens"):
        table.add_column(column, no_wrap=True)
    table.add_column("reply")
    for line in lines:
        body = (line.get("response") or {}).get("body") or {}
        reply = (body.get("choices") or [{}])[0].get("message", {})
        usage = body.get("usage") or {}
        table.add_row(
            line["custom_id"],
            str((line.get("response") or {}).get("status_code", "-")),
            body.get("model") or "-",
            f"{usage.get('prompt_tokens', '-')}+{usage.get('completion_tokens', '-')}",
            (reply.get("content") or "")[:60],
        )
    console.print(table)
    counts = batch.get("request_counts") or {}
    succeeded = int(counts.get("completed") or 0)
    console.print(f"batch {batch['status']}: {succeeded}/{count} succeeded")
    return batch["status"] == "completed" and succeeded == count == len(lines)


def _line(i: int) -> dict[str, Any]:
    content = f"Tell me about {TOPICS[i % len(TOPICS)]}"
    return {
        "custom_id": f"demo-{i}",
        "method": "POST",
        "url": "/v1/chat/completions",
        "body": {"model": "mock-model", "messages": [{"role": "user", "content": content}]},
    }


def _follow(
    api: ApiClient, batch: dict[str, Any], console: Console, check_alive: Callable[[], None]
) -> dict[str, Any]:
    until = time.monotonic() + TIMEOUT_SECONDS
    with ProgressView(console) as view:
        while batch["status"] not in END_STATES and time.monotonic() < until:
            view.update(batch, time.time())
            check_alive()
            time.sleep(0.5)
            batch = api.get_batch(batch["id"])
        view.update(batch, time.time())
    return batch
