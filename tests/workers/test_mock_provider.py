"""The mock provider, run for real as `python -m workers.mock_provider`, over real HTTP."""

from __future__ import annotations

import random
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import openai
import pytest
from pydantic import ValidationError

from models.mock_config import MockConfig

REPO = Path(__file__).resolve().parents[2]
StartMock = Callable[..., str]


def _user(text: str, model: str = "gpt-test") -> dict[str, object]:
    return {"model": model, "messages": [{"role": "user", "content": text}]}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_until_up(proc: subprocess.Popen[bytes], url: str, log: Path) -> None:
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"mock provider exited with {proc.returncode}: {log.read_text()}")
        try:
            httpx.get(f"{url}/v1/models", timeout=0.5)
            return
        except httpx.TransportError:
            time.sleep(0.05)
    pytest.fail("mock provider did not answer within 15 s")


@pytest.fixture(scope="module")
def start_mock(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StartMock]:
    """Start mock provider processes on free ports; all are stopped when the module ends."""
    procs: list[subprocess.Popen[bytes]] = []

    def start(*flags: str) -> str:
        port = _free_port()
        log = tmp_path_factory.mktemp("mock") / "server.log"
        command = [sys.executable, "-m", "workers.mock_provider", "--port", str(port), *flags]
        with log.open("wb") as sink:
            proc = subprocess.Popen(command, cwd=REPO, stdout=sink, stderr=subprocess.STDOUT)
        procs.append(proc)
        url = f"http://127.0.0.1:{port}"
        _wait_until_up(proc, url, log)
        return url

    yield start
    for proc in procs:
        proc.terminate()
    for proc in procs:
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="module")
def mock(start_mock: StartMock) -> str:
    return start_mock("--seed", "7")


@pytest.fixture(scope="module")
def slow_mock(start_mock: StartMock) -> str:
    return start_mock("--latency", "0.3", "--max-concurrency", "2")


@pytest.fixture(scope="module")
def limited_mock(start_mock: StartMock) -> str:
    return start_mock("--rate-429", "1", "--retry-after", "2")


def test_echo_reply_with_deterministic_usage(mock: str) -> None:
    body = {
        "model": "any-model",
        "messages": [
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": [{"type": "text", "text": "hello there world"}]},
        ],
    }

    reply = httpx.post(f"{mock}/v1/chat/completions", json=body)

    assert reply.status_code == 200
    completion = reply.json()
    assert completion["object"] == "chat.completion"
    assert completion["id"].startswith("chatcmpl-mock-")
    assert completion["model"] == "any-model"
    choice = completion["choices"][0]
    assert choice["message"] == {"role": "assistant", "content": "Echo: hello there world"}
    assert choice["finish_reason"] == "stop"
    assert completion["usage"] == {"prompt_tokens": 5, "completion_tokens": 4, "total_tokens": 9}


def test_n_choices_and_max_tokens_truncate(mock: str) -> None:
    body = _user("one two three four") | {"n": 2, "max_tokens": 3}

    completion = httpx.post(f"{mock}/v1/chat/completions", json=body).json()

    assert [c["message"]["content"] for c in completion["choices"]] == ["Echo: one two"] * 2
    assert {c["finish_reason"] for c in completion["choices"]} == {"length"}
    assert completion["usage"]["completion_tokens"] == 6


def test_openai_sdk_parses_the_reply(mock: str) -> None:
    client = openai.OpenAI(base_url=f"{mock}/v1", api_key="anything", max_retries=0)

    completion = client.chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "ping"}]
    )

    assert completion.choices[0].message.content == "Echo: ping"
    assert completion.usage is not None and completion.usage.total_tokens == 3
    assert [m.id for m in client.models.list()] == ["mock-model"]


def test_invalid_body_is_a_400_naming_the_field(mock: str) -> None:
    reply = httpx.post(f"{mock}/v1/chat/completions", json={"model": "m", "messages": []})

    assert reply.status_code == 400
    assert reply.json()["error"]["param"] == "messages"
    assert reply.json()["error"]["type"] == "invalid_request_error"


def test_status_directive_refuses_with_the_documented_message(mock: str) -> None:
    reply = httpx.post(f"{mock}/v1/chat/completions", json=_user("hi [mock:status=400]"))

    assert reply.status_code == 400
    error = reply.json()["error"]
    assert error["message"] == "mock error 400: this request was refused by the mock provider"
    assert error["type"] == "invalid_request_error"


def test_context_window_directive(mock: str) -> None:
    reply = httpx.post(f"{mock}/v1/chat/completions", json=_user("long [mock:context_window]"))

    assert reply.status_code == 400
    assert reply.json()["error"]["code"] == "context_length_exceeded"


def test_malformed_directive_answers_200_with_a_non_json_body(mock: str) -> None:
    reply = httpx.post(f"{mock}/v1/chat/completions", json=_user("hi [mock:malformed]"))

    assert reply.status_code == 200
    with pytest.raises(ValueError):
        reply.json()


def test_embeddings_are_deterministic_8_dim_vectors(mock: str) -> None:
    body = {"model": "embed", "input": ["alpha beta", "gamma"]}

    first = httpx.post(f"{mock}/v1/embeddings", json=body).json()
    again = httpx.post(f"{mock}/v1/embeddings", json=body | {"input": "alpha beta"}).json()

    assert first["object"] == "list"
    assert [d["index"] for d in first["data"]] == [0, 1]
    assert all(len(d["embedding"]) == 8 for d in first["data"])
    assert again["data"][0]["embedding"] == first["data"][0]["embedding"]
    assert first["usage"] == {"prompt_tokens": 3, "total_tokens": 3}


def test_stats_count_calls_and_reset_zeroes_them(mock: str) -> None:
    # Given a freshly reset mock
    httpx.post(f"{mock}/_mock/reset")

    # When two calls succeed and one is refused
    httpx.post(f"{mock}/v1/chat/completions", json=_user("a"))
    httpx.post(f"{mock}/v1/embeddings", json={"model": "e", "input": "a"})
    httpx.post(f"{mock}/v1/chat/completions", json=_user("b [mock:status=503]"))

    # Then the stats saw all three, and a reset forgets them
    stats = httpx.get(f"{mock}/_mock/stats").json()
    assert stats["calls"] == 3
    assert stats["by_status"] == {"200": 2, "503": 1}
    assert len(stats["call_times"]) == 3
    assert stats["in_flight"] == 0 and stats["max_in_flight"] == 1
    httpx.post(f"{mock}/_mock/reset")
    assert httpx.get(f"{mock}/_mock/stats").json()["calls"] == 0


def test_reset_directive_drops_the_connection_without_a_reply(mock: str) -> None:
    httpx.post(f"{mock}/_mock/reset")

    with pytest.raises((httpx.ReadError, httpx.RemoteProtocolError)):
        httpx.post(f"{mock}/v1/chat/completions", json=_user("hi [mock:reset]"))

    # The next call is served; the reset is counted as a fault, having no status
    assert httpx.post(f"{mock}/v1/chat/completions", json=_user("hi")).status_code == 200
    stats = httpx.get(f"{mock}/_mock/stats").json()
    assert stats["calls"] == 2
    assert stats["faults"] == {"reset": 1}
    assert stats["by_status"] == {"200": 1}


def _outcome(client: httpx.Client, url: str) -> str:
    """What the client saw, named as the mock's stats name the fault."""
    try:
        reply = client.post(f"{url}/v1/chat/completions", json=_user("hi"))
    except (httpx.ReadError, httpx.RemoteProtocolError):
        return "reset"
    if reply.status_code != 200:
        return {429: "rate_limited", 500: "server_error"}[reply.status_code]
    try:
        reply.json()
    except ValueError:
        return "malformed"
    return "ok"


def test_random_faults_are_counted_by_kind(start_mock: StartMock) -> None:
    url = start_mock(
        *("--seed", "3", "--rate-429", "0.15", "--error-rate", "0.15"),
        *("--malformed-rate", "0.15", "--reset-rate", "0.15"),
    )

    with httpx.Client(timeout=5) as client:
        seen = Counter(_outcome(client, url) for _ in range(120))

    assert all(seen[kind] >= 5 for kind in ("ok", "rate_limited", "server_error", "malformed"))
    assert seen["reset"] >= 5, seen
    faults = httpx.get(f"{url}/_mock/stats").json()["faults"]
    assert faults == {kind: n for kind, n in seen.items() if kind != "ok"}


def test_a_hang_past_the_client_timeout_is_counted(start_mock: StartMock) -> None:
    url = start_mock("--hang-rate", "1", "--hang-seconds", "30")

    with pytest.raises(httpx.ReadTimeout):
        httpx.post(f"{url}/v1/chat/completions", json=_user("hi"), timeout=0.3)

    # The abandoned call frees its slot and is answered 499 into the void
    deadline = time.monotonic() + 5
    while (stats := httpx.get(f"{url}/_mock/stats").json())["in_flight"] and (
        time.monotonic() < deadline
    ):
        time.sleep(0.05)
    assert stats["faults"] == {"hang": 1}
    assert stats["by_status"] == {"499": 1}


def test_latency_is_honoured(slow_mock: str) -> None:
    started = time.monotonic()
    reply = httpx.post(f"{slow_mock}/v1/chat/completions", json=_user("wait"))

    assert reply.status_code == 200
    assert time.monotonic() - started >= 0.3


def test_max_concurrency_turns_the_overflow_away_with_429(slow_mock: str) -> None:
    # The directive stretches the admitted calls so all five overlap for sure.
    url, body = f"{slow_mock}/v1/chat/completions", _user("slow [mock:latency=1]")
    with httpx.Client(timeout=10) as client, ThreadPoolExecutor(5) as pool:
        replies = list(pool.map(lambda _: client.post(url, json=body), range(5)))

    statuses = sorted(r.status_code for r in replies)
    assert statuses == [200, 200, 429, 429, 429]
    assert all("retry-after" in r.headers for r in replies if r.status_code == 429)


def test_rate_429_answers_with_retry_after(limited_mock: str) -> None:
    reply = httpx.post(f"{limited_mock}/v1/chat/completions", json=_user("hi"))

    assert reply.status_code == 429
    assert reply.headers["retry-after"] == "2"
    assert reply.json()["error"]["code"] == "rate_limit_exceeded"


def test_put_config_changes_behaviour_and_rejects_bad_rates(limited_mock: str) -> None:
    url = f"{limited_mock}/_mock/config"

    bad = httpx.put(url, json={"error_rate": 1.5})
    assert bad.status_code == 400
    assert "error_rate" in bad.json()["error"]["message"]
    assert bad.json()["error"]["param"] == "error_rate"

    assert httpx.put(url, json={"rate_429": 0, "reply": "fixed text"}).status_code == 200
    assert httpx.get(url).json()["rate_429"] == 0
    reply = httpx.post(f"{limited_mock}/v1/chat/completions", json=_user("hi"))
    assert reply.status_code == 200
    assert reply.json()["choices"][0]["message"]["content"] == "fixed text"


@pytest.mark.parametrize("spec", ["fast", "uniform:2,1", "normal:1", "exp:0", "-1", "gamma:1"])
def test_config_rejects_a_bad_latency_spec(spec: str) -> None:
    with pytest.raises(ValidationError, match="latency"):
        MockConfig(latency=spec)


def test_config_samples_latency_from_the_distribution() -> None:
    config = MockConfig(latency="uniform:0.1,0.2")
    rng = random.Random(1)

    assert all(0.1 <= config.sample_latency(rng) <= 0.2 for _ in range(100))
    assert MockConfig(latency="normal:0,1").sample_latency(rng) >= 0
