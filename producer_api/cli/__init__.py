"""The `llmfleet` command line.

Long-running parts (API, workers, beat, mock provider) are started by module path so
that this package imports no worker or provider code.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path
from typing import Annotated

import typer

from models.contract import WORKER_QUEUES
from models.metrics import MULTIPROC_ENV
from producer_api.cli import client, flower, keys, up
from producer_api.cli.batch import batch_app

__all__ = ["app", "main"]

app = typer.Typer(
    name="llmfleet",
    help="Durable LLM completion jobs on a fleet of router-aware Celery workers.",
    epilog="Examples: `llmfleet up --demo 20` (the whole fleet on this machine, a demo "
    'batch) · `llmfleet submit "Say hello" --model mock-model` · '
    "`llmfleet batch submit requests.jsonl` · `llmfleet keys create --team search --rpm 60`",
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode="markdown",
)
app.command("up")(up.up)
app.command("submit")(client.submit)
app.command("flower")(flower.flower)
app.add_typer(batch_app, name="batch")
keys.install(app)  # keys, teams, customers


@app.command()
def api(
    host: Annotated[str, typer.Option(help="Interface to bind.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8000,
    workers: Annotated[int, typer.Option(help="uvicorn worker processes.")] = 1,
) -> None:
    """Run the producer API (settings from the environment).

    Example: `DATABASE_URL=postgresql://... LLMFLEET_CONFIG=fleet.yaml
    LLMFLEET_MASTER_KEY=sk-... llmfleet api --port 8000`
    """
    import uvicorn

    if workers > 1:  # /metrics then adds up every process's counters
        os.environ.setdefault(MULTIPROC_ENV, tempfile.mkdtemp(prefix="llmfleet-metrics-"))
    uvicorn.run("producer_api.app:create_app", factory=True, host=host, port=port, workers=workers)


@app.command()
def worker(
    concurrency: Annotated[
        int | None, typer.Option("--concurrency", "-c", help="Calls held at once.")
    ] = None,
    name: Annotated[str, typer.Option(help="Worker node name.")] = "execute@%h",
    loglevel: Annotated[str, typer.Option(help="Log level.")] = "INFO",
    events: Annotated[
        bool, typer.Option("--events", help="Send task events (for Flower; ~1 ms CPU a task).")
    ] = False,
    queues: Annotated[
        str | None,
        typer.Option(help="Comma-separated queues to consume instead of all of them."),
    ] = None,
) -> None:
    """Run an execute worker consuming every priority queue, interactive first.

    Example: `LLMFLEET_CONFIG=fleet.yaml llmfleet worker --concurrency 300`; a pool that
    only serves interactive work: `llmfleet worker --queues llmfleet.high`
    """
    os.execv(sys.executable, worker_argv(concurrency, name, loglevel, events, queues))


def worker_argv(
    concurrency: int | None,
    name: str,
    loglevel: str,
    events: bool = False,
    queues: str | None = None,
) -> list[str]:
    concurrency = concurrency or int(os.environ.get("LLMFLEET_WORKER_CONCURRENCY", "200"))
    return [
        sys.executable,
        "-m",
        "celery",
        "-A",
        "workers.celery_app",
        "worker",
        "-P",
        "threads",
        "-c",
        str(concurrency),
        "-Q",
        queues or ",".join(WORKER_QUEUES),
        "-n",
        name,
        "--loglevel",
        loglevel,
        # Gossip (every worker consuming every other's events) and mingle (asking them
        # all for revoked tasks at start) serve nothing here: a job is cancelled through
        # the database, not by a revoke. Off, a worker's broker traffic stays its own
        # and a reconnection restarts fewer consumers. Heartbeats (Flower's "online")
        # and remote control (`celery inspect`, `control`) stay on.
        "--without-gossip",
        "--without-mingle",
        *(["-E"] if events else []),
    ]


@app.command()
def beat(
    schedule: Annotated[Path, typer.Option(help="Beat schedule file.")] = Path(
        "celerybeat-schedule"
    ),
) -> None:
    """Run the periodic-task scheduler (one per fleet): re-publishes lost jobs.

    Example: `llmfleet beat --schedule /var/lib/llmfleet/beat`
    """
    os.execv(sys.executable, beat_argv(schedule))


def beat_argv(schedule: Path) -> list[str]:
    return [
        sys.executable,
        "-m",
        "celery",
        "-A",
        "workers.celery_app",
        "beat",
        "-s",
        str(schedule),
        "--loglevel",
        "INFO",
    ]


@app.command()
def migrate(
    url: Annotated[str | None, typer.Option(help="Database URL (default: DATABASE_URL).")] = None,
    revision: Annotated[str, typer.Option(help="Target revision.")] = "head",
    down: Annotated[bool, typer.Option("--down", help="Downgrade to the revision.")] = False,
) -> None:
    """Apply (or with --down, revert) the database migrations.

    Example: `DATABASE_URL=postgresql://localhost/llmfleet llmfleet migrate`
    """
    from models import migrate as migrations
    from models.settings import CommonSettings

    target = url or CommonSettings().database_url
    if down:
        migrations.downgrade(target, "base" if revision == "head" else revision)
    else:
        migrations.upgrade(target, revision)
    typer.echo(f"database at revision {'base' if down else revision}")


@app.command(
    "mock-provider",
    # Every option, --help included, is the mock's own (workers.mock_provider).
    context_settings={
        "allow_extra_args": True,
        "ignore_unknown_options": True,
        "help_option_names": [],
    },
    add_help_option=False,
)
def mock_provider(ctx: typer.Context) -> None:
    """Run the OpenAI-compatible mock provider (its options: `llmfleet mock-provider --help`).

    Example: `llmfleet mock-provider --port 9100 --latency uniform:1,3 --rate-429 0.1`
    """
    os.execv(sys.executable, [sys.executable, "-m", "workers.mock_provider", *ctx.args])


def main() -> None:
    app()
