"""`llmfleet flower`: Flower against the fleet's broker, behind basic auth.

Flower shows tasks from task events, which workers do not send by default (about
1 ms of CPU per task: docs/BENCHMARKS.md). Flower turns them on at start and every
5 s after (its `--enable_events` option broadcasts `enable_events`), so events flow
while someone watches; when this command ends it broadcasts `disable_events` (unless
`--keep-events`; another Flower still running turns them back on within 5 s).

The credentials reach Flower through its environment (`FLOWER_BASIC_AUTH`), not its
command line, where `ps` would show them to every user of the machine.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Mapping
from typing import Annotated

import typer
from celery import Celery

from models import fleet_name
from models.contract import broker_options
from models.settings import FlowerSettings

__all__ = ["disable_events", "flower", "flower_argv", "flower_env"]

MISSING_AUTH = (
    "LLMFLEET_FLOWER_USER and LLMFLEET_FLOWER_PASSWORD are not set, and Flower can "
    "revoke tasks and shut workers down. Set both, or pass --no-auth to run it without "
    "authentication on purpose."
)


def flower(
    port: Annotated[int, typer.Option(help="Port to serve on.")] = 5555,
    address: Annotated[str, typer.Option(help="Interface to bind (all by default).")] = "",
    no_auth: Annotated[
        bool, typer.Option("--no-auth", help="Serve without authentication (on purpose).")
    ] = False,
    keep_events: Annotated[
        bool, typer.Option("--keep-events", help="Leave task events on when Flower stops.")
    ] = False,
) -> None:
    """Run Flower (Celery's web monitor) against the fleet's broker, with basic auth.

    Turns task events on while it runs and off when it stops.

    Example: `LLMFLEET_FLOWER_USER=ops LLMFLEET_FLOWER_PASSWORD=... llmfleet flower --port 5555`
    """
    settings = FlowerSettings()
    try:
        env = flower_env(settings, no_auth, os.environ)
    except ValueError as exc:
        typer.echo(f"llmfleet flower: {exc}", err=True)
        raise typer.Exit(2) from None
    proc = subprocess.Popen(flower_argv(port, address), env=env)
    code = _wait_forwarding_signals(proc)
    if not keep_events:
        disable_events(settings)
    raise typer.Exit(code)


def flower_env(settings: FlowerSettings, no_auth: bool, base: Mapping[str, str]) -> dict[str, str]:
    """Flower's environment: the inherited one with the auth options set."""
    env = dict(base)
    if no_auth:
        env.pop("FLOWER_BASIC_AUTH", None)
        env["FLOWER_UNAUTHENTICATED_API"] = "true"
        return env
    credentials = settings.flower_basic_auth()
    if credentials is None:
        raise ValueError(MISSING_AUTH)
    env["FLOWER_BASIC_AUTH"] = credentials
    env.pop("FLOWER_UNAUTHENTICATED_API", None)
    return env


def flower_argv(port: int, address: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "celery",
        "-A",
        "workers.celery_app",
        "flower",
        f"--port={port}",
        f"--address={address}",
        "--enable_events=True",
    ]


def _wait_forwarding_signals(proc: subprocess.Popen[bytes]) -> int:
    """Wait for Flower; SIGTERM / SIGINT sent to this process go to it (docker stop)."""

    def forward(signum: int, _frame: object) -> None:
        proc.send_signal(signum)

    previous = {s: signal.signal(s, forward) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        return proc.wait()
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def disable_events(settings: FlowerSettings) -> bool:
    """Broadcast `disable_events` to every worker; False when the broker is away."""
    app = Celery("llmfleet-flower", broker=settings.broker_url)
    app.conf.update(broker_options(settings.visibility_timeout, fleet_name.current()))
    try:
        with app.connection_for_write() as conn:
            conn.ensure_connection(max_retries=1)
            app.control.disable_events(connection=conn)
    except Exception as exc:
        typer.echo(
            f"llmfleet flower: task events not turned off ({type(exc).__name__}); run "
            "`celery -A workers.celery_app control disable_events`",
            err=True,
        )
        return False
    finally:
        app.close()
    return True
