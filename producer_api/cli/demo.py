"""The demo run of `llmfleet up --demo N`: submit N jobs, show progress, print results."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn
from rich.table import Table

from producer_api.cli.client import ApiClient

__all__ = ["run_demo"]

TOPICS = ("queues", "retries", "deadlines", "routing", "billing", "workers", "batches")


def run_demo(
    url: str, api_key: str, count: int, console: Console, check_alive: Callable[[], None]
) -> bool:
    """True when every job succeeded. `check_alive` raises when a fleet process has
    died, so a broken fleet fails at once instead of waiting out the jobs."""
    with ApiClient(url, api_key) as api:
        ids = [
            api.create_job(
                {
                    "model": "mock-model",
                    "messages": [
                        {"role": "user", "content": f"Tell me about {TOPICS[i % len(TOPICS)]}"}
                    ],
                    "metadata": {"demo": str(i)},
                }
            )["id"]
            for i in range(count)
        ]
        jobs = _wait_all(api, ids, console, check_alive)
    table = Table(title=f"{count} demo jobs")
    for column in ("job", "status", "deployment", "tokens"):
        table.add_column(column, no_wrap=True)
    table.add_column("reply")
    for job in jobs:
        reply = (job.get("result") or {}).get("choices", [{}])[0].get("message", {})
        usage = job.get("usage") or {}
        table.add_row(
            job["id"],
            job["status"],
            job.get("deployment") or "-",
            f"{usage.get('prompt_tokens', '-')}+{usage.get('completion_tokens', '-')}",
            (reply.get("content") or (job.get("error") or {}).get("message", ""))[:60],
        )
    console.print(table)
    succeeded = sum(j["status"] == "succeeded" for j in jobs)
    console.print(f"{succeeded}/{count} succeeded")
    return succeeded == count


def _wait_all(
    api: ApiClient, ids: list[str], console: Console, check_alive: Callable[[], None]
) -> list[dict[str, Any]]:
    done: dict[str, dict[str, Any]] = {}
    columns = (*Progress.get_default_columns()[:1], BarColumn(), MofNCompleteColumn())
    with Progress(*columns, TimeElapsedColumn(), console=console) as progress:
        task = progress.add_task("running demo jobs", total=len(ids))
        until = time.monotonic() + 120
        for job_id in ids:
            job = api.get_job(job_id)
            while job["status"] in ("queued", "running") and time.monotonic() < until:
                check_alive()
                job = api.get_job(job_id, wait=2)
            done[job_id] = job
            progress.update(task, completed=len(done))
    return [done[i] for i in ids]
