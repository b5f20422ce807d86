"""Every llmfleet service of docker-compose.yml, started here by its own command line
(the image's entrypoint is `llmfleet`) with the compose environment pointed at this
machine's services, then checked by its own healthcheck command: what `docker compose
up` would run, without a Docker engine."""

from __future__ import annotations

import functools
import os
import re
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
import yaml

from tests.conftest import recreate_database
from tests.support.brokers import REDIS_BASE
from tests.support.processes import REPO, Proc, free_port

#: The compose services that run the llmfleet image, in the order compose starts them.
SERVICES = ("mock-provider", "api", "worker", "post-call-worker", "beat", "flower")
FIXED_PORTS = ("9100", "8000", "5555")
STATE_DB, BROKER_DB = 2, 2


def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((REPO / "docker-compose.yml").read_text())
    return loaded["services"]


@pytest.fixture(scope="module")
def here(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """What the compose names become on this machine: hosts, ports, paths."""
    root = tmp_path_factory.mktemp("compose")
    ports = {port: str(free_port()) for port in FIXED_PORTS}
    config = (REPO / "deploy" / "fleet.yaml").read_text()
    config = config.replace("mock-provider:9100", f"127.0.0.1:{ports['9100']}")
    (root / "fleet.yaml").write_text(config)
    db_url = recreate_database("llmfleet_test_compose")
    redis.Redis.from_url(f"{REDIS_BASE}/{STATE_DB}").flushdb()
    yield {
        **ports,
        "root": str(root),
        "database": db_url,
        "redis": f"{REDIS_BASE}/{STATE_DB}",
    }
    redis.Redis.from_url(f"{REDIS_BASE}/{STATE_DB}").flushdb()


def local(value: str, here: dict[str, str]) -> str:
    """A compose value (command word, variable, path) as it is on this machine."""
    value = value.replace("/etc/llmfleet/fleet.yaml", f"{here['root']}/fleet.yaml")
    value = value.replace("/var/lib/llmfleet", f"{here['root']}/var")
    for port in FIXED_PORTS:
        value = re.sub(rf"(?<![0-9]){port}(?![0-9])", here[port], value)
    return value


def environment(service: dict[str, Any], here: dict[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LLMFLEET_", "MOCK_"))}
    for name, value in service.get("environment", {}).items():
        text = str(value)
        text = re.sub(r"\$\{([A-Z_]+):-([^}]*)\}", r"\2", text)  # defaults of ${NAME:-x}
        env[name] = local(text, here)
    if "LLMFLEET_METRICS_PORT" in env:  # each container has its own network
        env["LLMFLEET_METRICS_PORT"] = str(free_port())
    env |= {
        "DATABASE_URL": here["database"],
        "REDIS_URL": here["redis"],
        "BROKER_URL": here["redis"],
        "LLMFLEET_MASTER_KEY": "sk-compose",
        "LLMFLEET_FLOWER_PASSWORD": "pw",
        # In a container $HOSTNAME is the host name Celery's %h expands to.
        "HOSTNAME": socket.gethostname(),
        "PYTHONUNBUFFERED": "1",
    }
    return env


def healthcheck(service: dict[str, Any], env: dict[str, str], here: dict[str, str]) -> bool:
    """Run the service's healthcheck as compose would (CMD or CMD-SHELL)."""
    test = [local(word, here) for word in service["healthcheck"]["test"]]
    shell = test[0] == "CMD-SHELL"
    argv = ["sh", "-c", test[1].replace("$$", "$")] if shell else test[1:]
    bin_dir = str(Path(sys.executable).parent)  # the image's python and celery
    run_env = {**env, "PATH": f"{bin_dir}:{env.get('PATH', '')}"}
    done = subprocess.run(argv, env=run_env, cwd=REPO, capture_output=True, timeout=30)
    return done.returncode == 0


def test_every_service_starts_from_its_compose_command_and_passes_its_healthcheck(
    here: dict[str, str], tmp_path: Path
) -> None:
    services = compose()
    llmfleet = shutil.which("llmfleet", path=str(Path(sys.executable).parent))
    assert llmfleet is not None
    # The one-off first: it migrates and exits 0
    migrate = services["migrate"]
    done = subprocess.run(
        [llmfleet, *migrate["command"]],
        env=environment(migrate, here),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    (Path(here["root"]) / "var" / "beat").mkdir(parents=True, exist_ok=True)
    started: list[Proc] = []
    try:
        for name in SERVICES:
            service = services[name]
            env = environment(service, here)
            argv = [llmfleet, *(local(str(word), here) for word in service["command"])]
            proc = Proc(name, argv, env, tmp_path)
            started.append(proc)
            healthy = functools.partial(healthcheck, service, env, here)
            proc.wait_for("its healthcheck", healthy, 90)
    finally:
        for proc in reversed(started):
            proc.stop()
