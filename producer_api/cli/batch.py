"""`llmfleet batch submit|status|cancel|results`: a JSONL file of requests run as a
batch through the API's OpenAI Files and Batch endpoints.

stdout carries what a script wants (the batch id, the batch's state); the progress bar,
tables and summaries go to stderr. Exit codes: 0 done, 1 an error or a batch that did
not complete, 2 a usage error, 130 Ctrl-C while waiting (the batch keeps running).
"""

from __future__ import annotations

import datetime as dt
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from models.schemas.batches import BATCH_ENDPOINTS
from models.wire import parse_duration
from producer_api.cli.batch_progress import END_STATES, ProgressView, describe, measure
from producer_api.cli.client import ApiClient, ApiError, Download, resolve_api

__all__ = ["batch_app"]

batch_app = typer.Typer(
    help="Run a JSONL file of requests as a batch (OpenAI's Files and Batch API).",
    epilog="Examples: `llmfleet batch submit requests.jsonl` (follows it, downloads the "
    "results) · `llmfleet batch status batch_abc123` · `llmfleet batch results batch_abc123`",
    no_args_is_help=True,
    rich_markup_mode="markdown",
)

Url = Annotated[str | None, typer.Option(help="API URL (LLMFLEET_URL).")]
ApiKey = Annotated[str | None, typer.Option(help="API key (LLMFLEET_API_KEY).")]
Interval = Annotated[float, typer.Option(min=0.05, help="Seconds between polls while waiting.")]
JsonlFile = Annotated[
    Path,
    typer.Argument(
        exists=True,
        dir_okay=False,
        readable=True,
        help="JSONL: one request a line with custom_id, method, url and body.",
    ),
]

#: The Batch object's timestamps, in the order a batch lives through them.
_TIMESTAMPS = (
    "created_at",
    "in_progress_at",
    "finalizing_at",
    "completed_at",
    "failed_at",
    "cancelling_at",
    "cancelled_at",
    "expired_at",
    "expires_at",
)


def _endpoint(value: str) -> str:
    if value not in BATCH_ENDPOINTS:
        raise typer.BadParameter(f"must be one of {', '.join(BATCH_ENDPOINTS)}")
    return value


def _window(value: str) -> str:
    try:
        parse_duration(value)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None
    return value


def _metadata(items: list[str] | None) -> dict[str, str] | None:
    if not items:
        return None
    pairs = [item.partition("=") for item in items]
    bad = [item for item, (key, eq, _) in zip(items, pairs, strict=True) if not (key and eq)]
    if bad:
        raise typer.BadParameter(f"expected key=value, got {bad[0]!r}", param_hint="--metadata")
    return {key: value for key, _, value in pairs}


@batch_app.command()
def submit(
    file: JsonlFile,
    endpoint: Annotated[
        str, typer.Option(callback=_endpoint, help="The endpoint every line calls.")
    ] = "/v1/chat/completions",
    window: Annotated[
        str, typer.Option(callback=_window, help="Completion window: 90s, 30m, 24h, 7d…")
    ] = "24h",
    metadata: Annotated[
        list[str] | None, typer.Option(help="key=value stored with the batch; repeatable.")
    ] = None,
    wait: Annotated[
        bool, typer.Option("--wait/--no-wait", help="Follow the batch and download results.")
    ] = True,
    output: Annotated[
        Path | None, typer.Option(help="Output file (default: FILE.output.jsonl).")
    ] = None,
    errors: Annotated[
        Path | None, typer.Option(help="Error file (default: FILE.errors.jsonl).")
    ] = None,
    interval: Interval = 1.0,
    url: Url = None,
    api_key: ApiKey = None,
) -> None:
    """Upload FILE, create a batch, print its id; by default follow it with a progress
    bar and download the output and error files when it ends.

    Bad lines are all listed (exit 1). With --wait, exit 0 only if the batch completed
    (failed lines are in the error file). Ctrl-C stops waiting, not the batch.

    Example: `llmfleet batch submit requests.jsonl --window 1h --metadata team=search`
    """
    body: dict[str, Any] = {"endpoint": endpoint, "completion_window": window}
    if meta := _metadata(metadata):
        body["metadata"] = meta
    err = Console(stderr=True)
    with ApiClient(*resolve_api(url, api_key)) as api:
        with err.status(f"uploading {escape(str(file))}"):
            body["input_file_id"] = api.upload_file(file)["id"]
        batch = api.create_batch(body)
        typer.echo(batch["id"])
        if wait:
            batch = _follow(api, batch, err, interval)
        _exit_if_failed(batch, err)
        if not wait:
            err.print(
                f"{batch['status']}: follow it with `llmfleet batch status {batch['id']} --wait`",
                markup=False,
            )
            return
        output = output or file.with_name(f"{file.stem}.output.jsonl")
        errors = errors or file.with_name(f"{file.stem}.errors.jsonl")
        downloads = _download_results(api, batch, output, errors)
    _summarize(batch, downloads, err)
    _exit_unless_completed(batch)


@batch_app.command()
def status(
    batch_id: Annotated[str, typer.Argument(metavar="ID", help="The batch id.")],
    wait: Annotated[
        bool, typer.Option(help="Follow it with a progress bar until it ends.")
    ] = False,
    interval: Interval = 1.0,
    url: Url = None,
    api_key: ApiKey = None,
) -> None:
    """Print a batch: status, request counts, rate, timestamps, files, bad lines.

    With --wait, follow it until it ends; the exit code is then 0 only when it completed.

    Example: `llmfleet batch status batch_01J... --wait`
    """
    with ApiClient(*resolve_api(url, api_key)) as api:
        batch = api.get_batch(batch_id)
        if wait:
            batch = _follow(api, batch, Console(stderr=True), interval)
    _print_batch(batch, Console())
    if wait:
        _exit_unless_completed(batch)


@batch_app.command()
def cancel(
    batch_id: Annotated[str, typer.Argument(metavar="ID", help="The batch id.")],
    url: Url = None,
    api_key: ApiKey = None,
) -> None:
    """Cancel a batch: lines not yet run never run; running ones finish first.

    Example: `llmfleet batch cancel batch_01J...`
    """
    with ApiClient(*resolve_api(url, api_key)) as api:
        batch = api.cancel_batch(batch_id)
    typer.echo(f"{batch['id']} {batch['status']}")
    Console(stderr=True).print(describe(measure(batch, time.time())), markup=False)


@batch_app.command()
def results(
    batch_id: Annotated[str, typer.Argument(metavar="ID", help="The batch id.")],
    output: Annotated[
        Path | None,
        typer.Option(
            help="Where to write (default: ID.output.jsonl; errors: ID.output-errors.jsonl)."
        ),
    ] = None,
    partial: Annotated[
        bool, typer.Option(help="The lines finished so far, while the batch still runs.")
    ] = False,
    url: Url = None,
    api_key: ApiKey = None,
) -> None:
    """Download a batch's output file, and its error file beside it with an `-errors`
    suffix when there is one.

    Example: `llmfleet batch results batch_01J... --output answers.jsonl` (errors go to
    answers-errors.jsonl)
    """
    output = output or Path(f"{batch_id}.output.jsonl")
    errors = output.with_name(f"{output.stem}-errors{output.suffix}")
    with ApiClient(*resolve_api(url, api_key)) as api:
        batch = api.get_batch(batch_id)
        if not (partial or batch.get("output_file_id") or batch.get("error_file_id")):
            raise ApiError(
                f"batch {batch_id} is {batch['status']} and has no output file yet; "
                "--partial downloads the lines finished so far"
            )
        downloads = _download_results(api, batch, output, errors, partial=partial)
    _summarize(batch, downloads, Console(stderr=True))


def _follow(
    api: ApiClient, batch: dict[str, Any], console: Console, interval: float
) -> dict[str, Any]:
    """Poll until the batch ends. Ctrl-C stops waiting (exit 130), never the batch."""
    if batch["status"] in END_STATES:
        return batch
    try:
        with ProgressView(console) as view:
            while True:
                view.update(batch, time.time())
                if batch["status"] in END_STATES:
                    return batch
                time.sleep(interval)
                batch = api.get_batch(batch["id"])
    except KeyboardInterrupt:
        console.print(
            f"stopped waiting; batch {batch['id']} keeps running.\n"
            f"resume with: llmfleet batch status {batch['id']} --wait",
            markup=False,
        )
        raise typer.Exit(130) from None


def _download_results(
    api: ApiClient,
    batch: dict[str, Any],
    output: Path,
    errors: Path,
    partial: bool = False,
) -> list[Download]:
    found = []
    if partial:
        found.append(api.download_partial_output(batch["id"], output))
    elif batch.get("output_file_id"):
        found.append(api.download_file(batch["output_file_id"], output))
    if batch.get("error_file_id"):
        found.append(api.download_file(batch["error_file_id"], errors))
    return found


def _exit_if_failed(batch: dict[str, Any], console: Console) -> None:
    if batch["status"] != "failed":
        return
    bad = (batch.get("errors") or {}).get("data") or []
    if bad:
        console.print(_errors_table(bad))
    console.print(
        f"batch {batch['id']} failed: {len(bad)} bad line(s), nothing ran",
        style="red",
        markup=False,
    )
    raise typer.Exit(1)


def _errors_table(bad: list[dict[str, Any]]) -> Table:
    table = Table(title="bad lines")
    for column in ("line", "code", "param"):
        table.add_column(column, no_wrap=True)
    table.add_column("message")
    for error in bad:
        cells = (error.get(k) for k in ("line", "code", "param", "message"))
        table.add_row(*(Text("-" if cell is None else str(cell)) for cell in cells))
    return table


def _print_batch(batch: dict[str, Any], console: Console) -> None:
    rows = [
        ("batch", batch["id"]),
        ("status", batch["status"]),
        ("endpoint", str(batch.get("endpoint"))),
        ("requests", describe(measure(batch, time.time()))),
    ]
    for key in _TIMESTAMPS:
        if batch.get(key):
            when = dt.datetime.fromtimestamp(batch[key]).astimezone()
            rows.append((key.removesuffix("_at").replace("_", " "), when.isoformat(" ", "seconds")))
    rows += [
        (key.removesuffix("_id").replace("_", " "), batch[key])
        for key in ("output_file_id", "error_file_id")
        if batch.get(key)
    ]
    if batch.get("metadata"):
        rows.append(("metadata", " ".join(f"{k}={v}" for k, v in batch["metadata"].items())))
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold")
    grid.add_column()
    for label, value in rows:
        grid.add_row(label, Text(value))
    console.print(grid)
    if (batch.get("errors") or {}).get("data"):
        console.print(_errors_table(batch["errors"]["data"]))


def _summarize(batch: dict[str, Any], downloads: list[Download], console: Console) -> None:
    counts = batch.get("request_counts") or {}
    console.print(
        f"batch {batch['id']} {batch['status']}: {counts.get('completed', 0)} completed, "
        f"{counts.get('failed', 0)} failed of {counts.get('total', 0)}",
        markup=False,
    )
    for download in downloads:
        lines = f"{download.lines} line{'' if download.lines == 1 else 's'}"
        console.print(f"  {download.path} ({lines})", markup=False)
    if not downloads:
        console.print("  no output or error file")


def _exit_unless_completed(batch: dict[str, Any]) -> None:
    if batch["status"] != "completed":
        raise typer.Exit(1)
