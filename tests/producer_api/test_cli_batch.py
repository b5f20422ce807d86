"""`llmfleet batch …` against a real HTTP server that imitates the Files and Batch
endpoints: an in-memory batch that finishes a few lines at every poll."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from rich.console import Console
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route
from typer.testing import CliRunner, Result

from producer_api.cli import app
from producer_api.cli.batch_progress import ProgressView, describe, format_duration, measure
from tests.support.processes import REPO, free_port

KEY = "sk-batch-test"
T0 = 1_700_000_000


@dataclass
class FakeBatches:
    """The API's batch state. Every GET of a running batch (the CLI polls with it)
    finishes `step` more lines; a line whose request says FAIL fails."""

    url: str = ""
    step: int = 2
    files: dict[str, bytes] = field(default_factory=dict)
    batches: dict[str, dict[str, Any]] = field(default_factory=dict)
    lines: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    polls: int = 0

    def add_file(self, content: bytes) -> str:
        self.files[file_id := f"file-{len(self.files)}"] = content
        return file_id

    def create(self, body: dict[str, Any]) -> dict[str, Any]:
        lines, bad = parse_input(self.files[body["input_file_id"]], body["endpoint"])
        batch_id = f"batch_{len(self.batches)}"
        self.lines[batch_id] = [] if bad else lines
        self.batches[batch_id] = {
            **dict.fromkeys(("output_file_id", "error_file_id", "in_progress_at", "failed_at")),
            **body,
            "id": batch_id,
            "status": "failed" if bad else "in_progress",
            "errors": {"object": "list", "data": bad} if bad else None,
            "request_counts": {"total": 0 if bad else len(lines), "completed": 0, "failed": 0},
            "created_at": T0,
            "failed_at" if bad else "in_progress_at": T0,
        }
        return self.batches[batch_id]

    def poll(self, batch_id: str) -> dict[str, Any]:
        self.polls += 1
        batch = self.batches[batch_id]
        if batch["status"] == "in_progress":
            counts = batch["request_counts"]
            for line in self.lines[batch_id][done(batch) :][: self.step]:
                counts["failed" if "FAIL" in json.dumps(line) else "completed"] += 1
            if done(batch) == counts["total"]:
                output, errors = self.results(batch["id"], done(batch))
                batch.update(status="completed", completed_at=T0 + 4, finalizing_at=T0 + 4)
                batch["output_file_id"] = self.add_file(jsonl(output)) if output else None
                batch["error_file_id"] = self.add_file(jsonl(errors)) if errors else None
        return batch

    def results(self, batch_id: str, done: int) -> tuple[list[Any], list[Any]]:
        output, errors = [], []
        for line in self.lines[batch_id][:done]:
            row = {"custom_id": line["custom_id"], "response": None, "error": None}
            if "FAIL" in json.dumps(line):
                errors.append({**row, "error": {"code": "server_error", "message": "failed"}})
            else:
                body = {"choices": [{"message": {"content": f"answer {line['custom_id']}"}}]}
                output.append({**row, "response": {"status_code": 200, "body": body}})
        return output, errors


def done(batch: dict[str, Any]) -> int:
    return int(batch["request_counts"]["completed"] + batch["request_counts"]["failed"])


def parse_input(content: bytes, endpoint: str) -> tuple[list[Any], list[Any]]:
    lines, bad = [], []
    for number, text in enumerate(content.decode().splitlines(), 1):
        try:
            line = json.loads(text)
        except ValueError:
            bad.append(error(number, "invalid_json", None, "not JSON [char 1]"))
            continue
        if "custom_id" not in line:
            bad.append(error(number, "missing_required_parameter", "custom_id", "no custom_id"))
        elif line.get("url") != endpoint:
            bad.append(error(number, "invalid_url", "url", f"url must be {endpoint}"))
        else:
            lines.append(line)
    return lines, bad


def error(line: int, code: str, param: str | None, message: str) -> dict[str, Any]:
    return {"code": code, "message": message, "line": line, "param": param}


def jsonl(rows: list[Any]) -> bytes:
    return b"".join(json.dumps(row).encode() + b"\n" for row in rows)


def api_error(message: str, status: int) -> Response:
    return JSONResponse({"error": {"message": message, "type": "invalid_request_error"}}, status)


def build_app(fake: FakeBatches) -> Starlette:
    async def upload(request: Request) -> Response:
        form = await request.form()
        upload = form["file"]
        assert not isinstance(upload, str) and form["purpose"] == "batch"
        content = await upload.read()
        return JSONResponse({"id": fake.add_file(content), "bytes": len(content)})

    async def create(request: Request) -> Response:
        return JSONResponse(fake.create(await request.json()))

    async def get(request: Request) -> Response:
        batch_id = request.path_params["batch_id"]
        if batch_id not in fake.batches:
            return api_error(f"no batch {batch_id}", 404)
        return JSONResponse(fake.poll(batch_id))

    async def cancel(request: Request) -> Response:
        batch = fake.batches[request.path_params["batch_id"]]
        if batch["status"] != "in_progress":
            return api_error(f"batch is {batch['status']}, not running", 400)
        batch.update(status="cancelling", cancelling_at=T0 + 1)
        return JSONResponse(batch)

    async def content(request: Request) -> Response:
        data = fake.files[request.path_params["file_id"]]
        return StreamingResponse(iter([data[: len(data) // 2], data[len(data) // 2 :]]))

    async def partial(request: Request) -> Response:
        assert request.query_params["partial"] == "true"
        batch = fake.batches[request.path_params["batch_id"]]
        return Response(jsonl(fake.results(batch["id"], done(batch))[0]))

    return Starlette(
        routes=[
            Route("/v1/files", upload, methods=["POST"]),
            Route("/v1/batches", create, methods=["POST"]),
            Route("/v1/batches/{batch_id}", get),
            Route("/v1/batches/{batch_id}/cancel", cancel, methods=["POST"]),
            Route("/v1/batches/{batch_id}/output", partial),
            Route("/v1/files/{file_id}/content", content),
        ]
    )


@pytest.fixture(scope="module")
def server() -> Iterator[tuple[str, list[Starlette]]]:
    """One uvicorn server for the module; each test swaps in the app of a fresh fake.
    Every request must carry the key, as on the real API."""
    current: list[Starlette] = []

    async def dispatch(scope: Any, receive: Any, send: Any) -> None:
        if Request(scope).headers.get("authorization") != f"Bearer {KEY}":
            await api_error("bad key", 401)(scope, receive, send)
        else:
            await current[-1](scope, receive, send)

    port = free_port()
    uv = uvicorn.Server(uvicorn.Config(dispatch, port=port, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=uv.run, daemon=True)
    thread.start()
    while not uv.started and thread.is_alive():
        time.sleep(0.01)
    yield f"http://127.0.0.1:{port}", current
    uv.should_exit = True
    thread.join(timeout=5)


@pytest.fixture
def fake(server: tuple[str, list[Starlette]]) -> FakeBatches:
    url, current = server
    fake = FakeBatches(url)
    current.append(build_app(fake))
    return fake


def run(fake: FakeBatches, *args: str) -> Result:
    env = {"LLMFLEET_URL": fake.url, "LLMFLEET_API_KEY": KEY, "COLUMNS": "200"}
    return CliRunner().invoke(app, ["batch", *args], env=env)


def requests_file(tmp_path: Path, *texts: str) -> Path:
    """A JSONL file of chat requests, one per text; a text saying FAIL fails."""
    path = tmp_path / "requests.jsonl"
    path.write_text("".join(request(f"req-{i}", text) + "\n" for i, text in enumerate(texts)))
    return path


def request(custom_id: str, content: str, url: str = "/v1/chat/completions") -> str:
    body = {"model": "mock-model", "messages": [{"role": "user", "content": content}]}
    return json.dumps({"custom_id": custom_id, "method": "POST", "url": url, "body": body})


def custom_ids(path: Path) -> list[str]:
    return [json.loads(text)["custom_id"] for text in path.read_text().splitlines()]


FAST = ("--interval", "0.05")


def test_submit_wait_downloads_output_and_errors(tmp_path: Path, fake: FakeBatches) -> None:
    # Given five requests, the fourth of which will fail
    file = requests_file(tmp_path, "a", "b", "c", "FAIL", "e")

    # When they are submitted and waited for
    result = run(fake, "submit", str(file), "--window", "1h", "--metadata", "team=search", *FAST)

    # Then the id is on stdout, results beside the input, a summary on stderr
    assert result.exit_code == 0, result.output
    assert result.stdout == "batch_0\n"
    assert fake.files["file-0"] == file.read_bytes()
    batch = fake.batches["batch_0"]
    assert (batch["completion_window"], batch["metadata"]) == ("1h", {"team": "search"})
    assert (batch["endpoint"], batch["input_file_id"]) == ("/v1/chat/completions", "file-0")
    assert fake.polls == 3
    assert custom_ids(tmp_path / "requests.output.jsonl") == ["req-0", "req-1", "req-2", "req-4"]
    assert custom_ids(tmp_path / "requests.errors.jsonl") == ["req-3"]
    assert "batch_0 completed: 4 completed, 1 failed of 5" in result.stderr
    assert "requests.output.jsonl (4 lines)" in result.stderr
    assert "requests.errors.jsonl (1 line)" in result.stderr

    # And with --output / --errors, the files go there (never left half-written)
    out, err = tmp_path / "out" / "answers.jsonl", tmp_path / "bad.jsonl"
    again = run(fake, "submit", str(file), "--output", str(out), "--errors", str(err), *FAST)
    assert again.exit_code == 0, again.output
    assert (custom_ids(out), custom_ids(err)) == (["req-0", "req-1", "req-2", "req-4"], ["req-3"])
    assert not list(tmp_path.glob("**/*.part"))


def test_bad_lines_are_all_listed_and_exit_1(tmp_path: Path, fake: FakeBatches) -> None:
    # Given a file whose lines 2, 3 and 4 are bad
    no_id = json.dumps({"method": "POST", "url": "/v1/chat/completions", "body": {}})
    bad = [request("ok", "fine"), "{not json", no_id, request("u", "x", url="/v1/embeddings")]
    file = tmp_path / "requests.jsonl"
    file.write_text("\n".join(bad))

    result = run(fake, "submit", str(file), *FAST)

    assert result.exit_code == 1
    assert result.stdout == "batch_0\n"
    rows = [line for line in result.stderr.splitlines() if line.startswith("│")]
    assert [row.split("│")[1].strip() for row in rows] == ["2", "3", "4"]
    assert "invalid_json" in rows[0] and "not JSON [char 1]" in rows[0]
    assert "custom_id" in rows[1] and "no custom_id" in rows[1]
    assert "invalid_url" in rows[2] and "url must be /v1/chat/completions" in rows[2]
    assert "3 bad line(s)" in result.stderr
    assert fake.polls == 0
    assert not (tmp_path / "requests.output.jsonl").exists()


def test_submit_no_wait_then_status_then_status_wait(tmp_path: Path, fake: FakeBatches) -> None:
    file = requests_file(tmp_path, "a", "b", "c", "FAIL", "e")

    submitted = run(fake, "submit", str(file), "--no-wait")
    first = run(fake, "status", "batch_0")
    followed = run(fake, "status", "batch_0", "--wait", *FAST)

    assert submitted.exit_code == 0, submitted.output
    assert submitted.stdout == "batch_0\n"
    assert "follow it with `llmfleet batch status batch_0 --wait`" in submitted.stderr
    assert first.exit_code == 0, first.output
    assert "in_progress" in first.stdout
    assert "2/5 done, 0 failed" in first.stdout
    assert "in progress" in first.stdout  # the in_progress_at timestamp
    assert followed.exit_code == 0, followed.output
    assert "completed" in followed.stdout
    assert "5/5 done, 1 failed" in followed.stdout
    assert "output file" in followed.stdout and "error file" in followed.stdout


def test_cancel_then_a_refused_cancel(tmp_path: Path, fake: FakeBatches) -> None:
    run(fake, "submit", str(requests_file(tmp_path, "a", "b")), "--no-wait")

    cancelled = run(fake, "cancel", "batch_0")
    again = run(fake, "cancel", "batch_0")

    assert cancelled.exit_code == 0, cancelled.output
    assert cancelled.stdout == "batch_0 cancelling\n"
    assert again.exit_code == 1
    assert "API answered 400: batch is cancelling, not running" in again.output


def test_results_downloads_partial_then_final_output(
    tmp_path: Path, fake: FakeBatches, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    fake.step = 1  # every GET of the batch, `results` too, finishes one line
    run(fake, "submit", str(requests_file(tmp_path, "a", "b", "c", "FAIL", "e")), "--no-wait")
    run(fake, "status", "batch_0")

    early = run(fake, "results", "batch_0")
    partial = run(fake, "results", "batch_0", "--partial", "--output", "so-far.jsonl")
    run(fake, "status", "batch_0", "--wait", *FAST)
    final = run(fake, "results", "batch_0")

    assert early.exit_code == 1
    assert "no output file yet" in early.output
    assert partial.exit_code == 0, partial.output
    assert custom_ids(tmp_path / "so-far.jsonl") == ["req-0", "req-1", "req-2"]
    assert final.exit_code == 0, final.output
    assert custom_ids(tmp_path / "batch_0.output.jsonl") == ["req-0", "req-1", "req-2", "req-4"]
    assert custom_ids(tmp_path / "batch_0.output-errors.jsonl") == ["req-3"]


def test_unknown_batch_and_unreachable_api_are_clear_errors(fake: FakeBatches) -> None:
    unknown = run(fake, "status", "batch_nope")
    unreachable = run(fake, "status", "batch_0", "--url", f"http://127.0.0.1:{free_port()}")

    assert (unknown.exit_code, unreachable.exit_code) == (1, 1)
    assert "API answered 404: no batch batch_nope" in unknown.output
    assert "no answer from the API" in unreachable.output
    assert "Traceback" not in unknown.output + unreachable.output


def test_ctrl_c_stops_waiting_and_says_how_to_resume(tmp_path: Path, fake: FakeBatches) -> None:
    # Given a batch that never moves
    fake.step = 0
    file = requests_file(tmp_path, "a", "b")
    env = {**os.environ, "LLMFLEET_URL": fake.url, "LLMFLEET_API_KEY": KEY, "PYTHONPATH": str(REPO)}
    argv = [sys.executable, "-m", "producer_api.cli", "batch", "submit", str(file), *FAST]
    # as from a terminal, where Ctrl-C is never ignored (a background job's may be)
    proc = subprocess.Popen(
        argv,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    try:
        until = time.monotonic() + 8
        while fake.polls < 2 and time.monotonic() < until:
            time.sleep(0.02)

        # When the user presses Ctrl-C while it is being followed
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=5)
    finally:
        proc.kill()

    # Then the command stops waiting without asking, and says how to resume
    assert fake.polls >= 2
    assert proc.returncode == 130, stderr.decode()
    assert stdout.decode() == "batch_0\n"
    assert "llmfleet batch status batch_0 --wait" in stderr.decode()
    assert "Traceback" not in stderr.decode()
    assert fake.batches["batch_0"]["status"] == "in_progress"


def batch_at(status: str, total: int, completed: int, failed: int, **times: int) -> dict[str, Any]:
    counts = {"total": total, "completed": completed, "failed": failed}
    return {"id": "batch_x", "status": status, "request_counts": counts, **times}


def test_progress_formats_counts_rate_and_eta() -> None:
    running = batch_at("in_progress", 100, 37, 3, created_at=T0 - 5, in_progress_at=T0)
    slow = batch_at("in_progress", 100, 3, 0, created_at=T0)
    validating = batch_at("validating", 0, 0, 0, created_at=T0)
    done = batch_at("completed", 100, 98, 2, in_progress_at=T0, finalizing_at=T0 + 50)

    assert describe(measure(running, T0 + 4)) == "40/100 done, 3 failed, 10 lines/s, ETA 6s"
    assert describe(measure(slow, T0 + 100)) == "3/100 done, 0 failed, 0.03 lines/s, ETA 53m53s"
    assert describe(measure(validating, T0 + 1)) == "0/0 done, 0 failed, - lines/s, ETA -"
    assert describe(measure(done, T0 + 9999)) == "100/100 done, 2 failed, 2.0 lines/s, ETA 0s"
    durations = (0.4, 59, 125, 3720, 2 * 86400 + 3 * 3600)
    assert " ".join(format_duration(s) for s in durations) == "0s 59s 2m05s 1h02m 2d03h"


def test_progress_view_draws_the_bar_and_plain_lines_where_no_terminal() -> None:
    sink = io.StringIO()

    with ProgressView(Console(file=sink, width=120), plain_every=3600) as view:
        view.update(batch_at("in_progress", 100, 37, 3, in_progress_at=T0), T0 + 4)
        view.update(batch_at("in_progress", 100, 50, 3, in_progress_at=T0), T0 + 5)

    plain, bar = sink.getvalue().splitlines()
    assert plain == "batch_x in_progress: 40/100 done, 3 failed, 10 lines/s, ETA 6s"
    assert bar.startswith("batch_x in_progress ━")
    assert bar.endswith("53/100 done, 3 failed, 11 lines/s, ETA 4s")
