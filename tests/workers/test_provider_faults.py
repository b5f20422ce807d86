"""Provider faults: first how each one reaches the worker over a real socket (a
retryable error that cools the deployment), then the mock's faults against real worker
processes: 429 storms with Retry-After, 5xx bursts, hangs past the timeout, connection
resets and malformed JSON. No job fails while some deployment has capacity before its
deadline."""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import httpx2
import pytest
from sqlalchemy import Engine, text

from models.fleet_config import Deployment, parse_fleet_config
from tests.conftest import migrated_database
from tests.support.fleet import MiniFleet, deployment
from tests.support.processes import start_mock
from tests.workers.conftest import Fleet
from workers.providers import CallOptions, errors
from workers.providers.openai import OpenAIProtocol

FAULT_KINDS = ("server_error", "hang", "reset", "malformed")
HEALTHY = {"rate_429": 0, "error_rate": 0, "hang_rate": 0, "reset_rate": 0, "malformed_rate": 0}


def _chat(api_base: str, content: str = "hi") -> Any:
    """One call as a worker makes it, through the OpenAI protocol."""
    raw = {"model_list": [deployment("d", api_base.removesuffix("/v1"))]}
    dep: Deployment = parse_fleet_config(raw, {}).model_list[0]
    body = {"model": "mock-model", "messages": [{"role": "user", "content": content}]}
    with httpx2.Client() as client:
        return OpenAIProtocol("openai_compatible").chat(client, dep, body, CallOptions(timeout=2))


def _serve_once(reply: bytes) -> str:
    """A server that reads one whole request, sends `reply` and closes: faults that no
    well-behaved HTTP server can be made to produce."""
    server = socket.create_server(("127.0.0.1", 0))

    def run() -> None:
        conn, _ = server.accept()
        with conn, server:
            data = b""
            while b"\r\n\r\n" not in data:
                data += conn.recv(65536)
            head, _, body = data.partition(b"\r\n\r\n")
            length = next(
                int(line.split(b":")[1])
                for line in head.split(b"\r\n")
                if line.lower().startswith(b"content-length:")
            )
            while len(body) < length:
                body += conn.recv(65536)
            conn.sendall(reply)

    threading.Thread(target=run, daemon=True).start()
    return f"http://127.0.0.1:{server.getsockname()[1]}/v1"


CUT_SHORT = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 900\r\n\r\n{"


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        (CUT_SHORT, errors.ProviderConnectionError),
        (b'HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\n{"i', errors.MalformedResponseError),
        (b"garbage\r\n\r\n", errors.ProviderConnectionError),
    ],
    ids=["reply-cut-short", "malformed-json", "not-http"],
)
def test_a_broken_reply_is_a_retryable_fault_that_cools_the_deployment(
    reply: bytes, expected: type[errors.ProviderError]
) -> None:
    with pytest.raises(expected) as info:
        _chat(_serve_once(reply))

    assert type(info.value) is expected
    assert info.value.retryable and info.value.cools_down


def test_a_close_before_any_reply_is_retried_without_blame() -> None:
    # What a kept-alive connection the server just closed looks like from the client.
    with pytest.raises(errors.StaleConnectionError) as info:
        _chat(_serve_once(b""))

    assert info.value.retryable and not info.value.cools_down


def test_the_mocks_reset_and_malformed_reply_cool_the_deployment(tmp_path: Path) -> None:
    proc, url = start_mock(dict(os.environ), tmp_path)
    try:
        with pytest.raises(errors.ProviderConnectionError) as reset:
            _chat(f"{url}/v1", "hi [mock:reset]")
        with pytest.raises(errors.MalformedResponseError) as malformed:
            _chat(f"{url}/v1", "hi [mock:malformed]")
        stats = httpx.get(f"{url}/_mock/stats").json()
    finally:
        proc.stop()
    assert reset.value.retryable and reset.value.cools_down
    assert malformed.value.retryable and malformed.value.cools_down
    assert stats["faults"] == {"reset": 1, "malformed": 1}


@pytest.fixture(scope="module")
def database() -> Iterator[tuple[str, Engine]]:
    with migrated_database("llmfleet_test_provider_faults") as (url, engine):
        yield url, engine


def _config(urls: dict[str, str]) -> dict[str, Any]:
    """One model group on three mocks; a call that hangs is abandoned after 1 s."""
    return {
        "model_list": [deployment(name, url, timeout=1) for name, url in urls.items()],
        "router_settings": {
            "num_retries": 3,
            "allowed_fails": 3,
            "cooldown_time": 1,
            "timeout": 5,
        },
    }


def _attempts(f: MiniFleet) -> dict[str, list[str | None]]:
    """Per job, the error class of each provider call it made (None: a success)."""
    with f.engine.connect() as conn:
        rows = conn.execute(text("SELECT job_id, error_class FROM job_attempts ORDER BY id"))
        out: dict[str, list[str | None]] = {}
        for job_id, error_class in rows:
            out.setdefault(str(job_id), []).append(error_class)
    return out


def _jobs(client: httpx.Client, *status: str) -> list[dict[str, Any]]:
    """Every job of the fleet (with one of these statuses), through the list endpoint."""
    jobs: list[dict[str, Any]] = []
    params: dict[str, Any] = {"limit": 100, "status": list(status)}
    while True:
        page = client.get("/v1/jobs", params=params).json()
        jobs += page["data"]
        if not page["has_more"]:
            return jobs
        params["after"] = page["last_id"]


def _wait_all(f: MiniFleet, timeout: float) -> dict[str, dict[str, Any]]:
    """Every job by id, once none is queued or running: a few list calls rather than
    hundreds of single reads, which would add seconds to every run."""
    until = time.monotonic() + timeout
    with f.client() as client:
        while _jobs(client, "queued", "running") and time.monotonic() < until:
            time.sleep(0.5)
        return {j["id"]: j for j in _jobs(client)}


def _assert_each_succeeded_once(
    f: MiniFleet, jobs: dict[str, dict[str, Any]], prompts: dict[str, str]
) -> None:
    assert jobs.keys() == prompts.keys()
    failed = [
        (j["id"], j["status"], j["error"]) for j in jobs.values() if j["status"] != "succeeded"
    ]
    assert not failed, failed[:5]
    for job_id, prompt in prompts.items():
        assert jobs[job_id]["result"]["choices"][0]["message"]["content"] == f"Echo: {prompt}"
    successes = {job_id: calls.count(None) for job_id, calls in _attempts(f).items()}
    assert successes == dict.fromkeys(prompts, 1)


def test_every_job_succeeds_through_faults_on_two_of_three_deployments(own_fleet: Fleet) -> None:
    mocks = {
        "storm": ["--rate-429", "0.9", "--retry-after", "2"],
        "flaky": [
            *("--seed", "11", "--error-rate", "0.15", "--reset-rate", "0.15"),
            *("--malformed-rate", "0.15", "--hang-rate", "0.1", "--hang-seconds", "30"),
        ],
        "steady": ["--latency", "uniform:0.02,0.2", "--error-rate", "0.02"],
    }
    prompts = [f"job {i}" for i in range(300)]
    with own_fleet(_config, mocks, workers=2, concurrency=40) as f:
        # Given a 429 storm on one deployment and every other fault kind on another
        # When a few hundred jobs arrive at once
        ids = f.submit_many(prompts, completion_window="600s")
        jobs = _wait_all(f, timeout=150)
        stats = {name: f.stats(name) for name in mocks}
    # Then every job succeeded, each with exactly one result
    _assert_each_succeeded_once(f, jobs, dict(zip(ids, prompts, strict=True)))
    # And the faulty deployments really faulted, every kind of fault included
    assert stats["storm"]["faults"].get("rate_limited", 0) >= 3, stats["storm"]
    flaky = stats["flaky"]["faults"]
    assert all(flaky.get(kind, 0) >= 1 for kind in FAULT_KINDS), flaky
    # And jobs met each fault on their way to success
    met = {error for calls in _attempts(f).values() for error in calls}
    assert met >= {
        "RateLimitedError",
        "UnavailableError",
        "ProviderTimeoutError",
        "ProviderConnectionError",
        "MalformedResponseError",
    }, met


def test_jobs_wait_out_an_outage_of_every_deployment(own_fleet: Fleet) -> None:
    mocks = {
        "storm": ["--rate-429", "1", "--retry-after", "1"],
        "flaky": ["--seed", "5", "--error-rate", "0.5", "--reset-rate", "0.5"],
        "broken": ["--malformed-rate", "1", "--hang-rate", "0.5", "--hang-seconds", "30"],
    }
    prompts = [f"patient {i}" for i in range(60)]
    with own_fleet(_config, mocks) as f:
        # Given every deployment faults on every call
        ids = f.submit_many(prompts, completion_window="120s")
        outage_started = time.monotonic()
        time.sleep(12)
        # Then the jobs wait rather than fail
        with f.client() as client:
            during = [j["status"] for j in _jobs(client)]
        outage_faults = {name: f.stats(name)["faults"] for name in mocks}
        # When the providers recover
        for name in mocks:
            f.configure(name, **HEALTHY)
        outage_s = time.monotonic() - outage_started
        jobs = _wait_all(f, timeout=90)
    assert len(during) == 60 and set(during) <= {"queued", "running"}, sorted(set(during))
    # Then every job completes after the recovery, before its deadline
    _assert_each_succeeded_once(f, jobs, dict(zip(ids, prompts, strict=True)))
    assert all(j["finished_at"] - j["created_at"] >= outage_s - 2 for j in jobs.values())
    assert all(j["finished_at"] <= j["deadline"] for j in jobs.values())
    assert outage_faults["storm"].get("rate_limited", 0) >= 3, outage_faults
    assert {"server_error", "reset"} <= set(outage_faults["flaky"]), outage_faults
    assert {"malformed", "hang"} <= set(outage_faults["broken"]), outage_faults
