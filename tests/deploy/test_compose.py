"""docker-compose.yml, checked by a real Compose implementation (`docker compose config`,
or Debian's `docker-compose`; neither needs a Docker engine to validate), then read for
what the operations guide promises: healthchecks, start order, the measured pool."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
BASE = ("docker-compose.yml",)
RABBITMQ = ("docker-compose.yml", "deploy/compose.rabbitmq.yml")
#: Services that run the llmfleet image with the fleet's environment.
FLEET = ("migrate", "mock-provider", "api", "worker", "post-call-worker", "beat", "flower")
USES_BROKER = ("api", "worker", "post-call-worker", "beat", "flower")


def compose_command() -> list[str] | None:
    docker = shutil.which("docker")
    if (
        docker
        and subprocess.run([docker, "compose", "version"], capture_output=True).returncode == 0
    ):
        return [docker, "compose"]
    legacy = shutil.which("docker-compose")
    return [legacy] if legacy else None


COMPOSE = compose_command()
pytestmark = pytest.mark.skipif(
    COMPOSE is None, reason="needs `docker compose` or Debian's docker-compose"
)


def config(files: tuple[str, ...], **env: str) -> subprocess.CompletedProcess[str]:
    assert COMPOSE is not None
    argv = [*COMPOSE, *(a for f in files for a in ("-f", f)), "config"]
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("LLMFLEET_", "RABBITMQ_"))}
    return subprocess.run(
        argv, cwd=REPO, env={**clean, **env}, capture_output=True, text=True, timeout=60
    )


def services(files: tuple[str, ...]) -> dict[str, Any]:
    done = config(files, LLMFLEET_MASTER_KEY="sk-compose", LLMFLEET_FLOWER_PASSWORD="pw")
    assert done.returncode == 0, done.stderr
    parsed: dict[str, Any] = yaml.safe_load(done.stdout)["services"]
    return parsed


@pytest.mark.parametrize("files", [BASE, RABBITMQ], ids=["redis", "rabbitmq"])
def test_every_service_is_healthchecked_and_starts_in_order(files: tuple[str, ...]) -> None:
    found = services(files)
    assert set(FLEET) | {"postgres", "redis"} <= set(found)
    for name, service in found.items():
        if name != "migrate":
            assert service.get("healthcheck", {}).get("test"), f"{name} has no healthcheck"
        for dep, how in service.get("depends_on", {}).items():
            expected = "service_completed_successfully" if dep == "migrate" else "service_healthy"
            if name == "flower" and dep == "worker":
                expected = "service_started"
            assert how["condition"] == expected, (name, dep, how)
    assert found["migrate"]["restart"] == "no"
    assert found["migrate"]["depends_on"] == {"postgres": {"condition": "service_healthy"}}
    for name in ("api", "worker", "post-call-worker", "beat"):
        assert found[name]["depends_on"]["migrate"]["condition"] == "service_completed_successfully"


def test_redis_never_evicts_and_workers_hold_the_measured_calls() -> None:
    found = services(BASE)
    redis_cmd = found["redis"]["command"]
    assert redis_cmd[redis_cmd.index("--maxmemory-policy") + 1] == "noeviction"
    worker = found["worker"]
    assert worker["command"] == ["worker"]
    assert worker["environment"]["LLMFLEET_WORKER_CONCURRENCY"] == "1000"
    assert "llmfleet.post_call" in found["post-call-worker"]["command"]
    assert found["flower"]["command"] == ["flower", "--port", "5555"]
    assert {"LLMFLEET_FLOWER_USER", "LLMFLEET_FLOWER_PASSWORD"} <= set(
        found["flower"]["environment"]
    )
    for name in FLEET:
        mounts = [str(v) for v in found[name]["volumes"]]
        assert any("/etc/llmfleet/fleet.yaml" in m and m.endswith(":ro") for m in mounts), name


def test_rabbitmq_override_moves_only_the_broker() -> None:
    found = services(RABBITMQ)
    assert found["rabbitmq"]["healthcheck"]["test"]
    for name in USES_BROKER:
        env = found[name]["environment"]
        assert env["BROKER_URL"].startswith("amqp://"), name
        assert env["REDIS_URL"] == "redis://redis:6379/0", name
        assert found[name]["depends_on"]["rabbitmq"] == {"condition": "service_healthy"}
    [conf] = [str(v) for v in found["rabbitmq"]["volumes"] if "rabbitmq.conf" in str(v)]
    assert Path(conf.split(":")[0]) == REPO / "deploy" / "rabbitmq.conf"


def test_compose_refuses_to_start_without_the_secrets() -> None:
    done = config(BASE, LLMFLEET_FLOWER_PASSWORD="pw")
    assert done.returncode != 0 and "LLMFLEET_MASTER_KEY" in done.stderr
    done = config(BASE, LLMFLEET_MASTER_KEY="sk-compose")
    assert done.returncode != 0 and "LLMFLEET_FLOWER_PASSWORD" in done.stderr
