"""Commands that talk to a running API over HTTP."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import httpx
import typer
from httpx_sse import connect_sse

__all__ = ["ApiClient", "ApiError", "Download", "resolve_api", "submit"]

#: Uploads and batch creation may validate a large file before answering.
SLOW = httpx.Timeout(30.0, read=300.0)

#: Written by `llmfleet up` so that commands run beside it find the API and its key.
STATE_FILE = Path(".llmfleet") / "api.json"


def resolve_api(url: str | None, api_key: str | None) -> tuple[str, str]:
    """Flags, then LLMFLEET_URL / LLMFLEET_API_KEY, then the state file of `llmfleet up`."""
    state: dict[str, str] = {}
    if STATE_FILE.exists():
        state = json.loads(STATE_FILE.read_text())
    url = url or os.environ.get("LLMFLEET_URL") or state.get("url") or "http://127.0.0.1:8000"
    key = api_key or os.environ.get("LLMFLEET_API_KEY") or state.get("api_key")
    if not key:
        raise typer.BadParameter(
            "no API key: pass --api-key, set LLMFLEET_API_KEY, or run beside `llmfleet up`",
            param_hint="--api-key",
        )
    return url.rstrip("/"), key


class ApiError(Exception):
    """The API refused a request or could not be reached. Raised inside `with
    ApiClient(...)`, it is printed as one line and the command exits with code 1."""


@dataclass(frozen=True)
class Download:
    path: Path
    size: int
    lines: int


class ApiClient:
    """A small client for the fleet's own endpoints (the `openai` SDK covers the rest)."""

    def __init__(self, url: str, api_key: str, timeout: float = 30.0) -> None:
        self._http = httpx.Client(
            base_url=url, headers={"Authorization": f"Bearer {api_key}"}, timeout=timeout
        )

    def __enter__(self) -> ApiClient:
        return self

    def __exit__(self, _type: object, error: BaseException | None, _tb: object) -> None:
        self._http.close()
        if isinstance(error, ApiError):
            typer.secho(f"error: {error}", err=True, fg="red")
            raise typer.Exit(1) from None

    def create_job(self, body: dict[str, Any]) -> dict[str, Any]:
        return self._send("POST", "/v1/jobs", json=body)

    def get_job(self, job_id: str, wait: float = 0) -> dict[str, Any]:
        return self._send("GET", f"/v1/jobs/{job_id}", params={"wait": wait}, timeout=wait + 30)

    def wait_job(self, job_id: str, timeout: float) -> dict[str, Any]:
        until = time.monotonic() + timeout
        job = self.get_job(job_id)
        while job["status"] in ("queued", "running") and time.monotonic() < until:
            job = self.get_job(job_id, wait=min(30.0, max(0.0, until - time.monotonic())))
        return job

    def follow_job(self, job_id: str) -> Iterator[str]:
        """The text of a streamed job as it is generated (`GET /v1/jobs/{id}?stream=true`);
        an error event raises ApiError."""
        params = {"stream": "true"}
        with (
            self._reachable(),
            connect_sse(self._http, "GET", f"/v1/jobs/{job_id}", params=params) as source,
        ):
            if source.response.status_code >= 400:
                source.response.read()
                self._check(source.response)
            for event in source.iter_sse():
                if event.data == "[DONE]":
                    return
                chunk = event.json()
                if chunk.get("error"):
                    raise ApiError(str(chunk["error"].get("message") or "the stream failed"))
                for choice in chunk.get("choices") or ():
                    if choice["delta"].get("content"):
                        yield choice["delta"]["content"]

    def upload_file(self, path: Path, purpose: str = "batch") -> dict[str, Any]:
        """Streams the file: httpx reads the handle in chunks, never the whole file."""
        with path.open("rb") as handle:
            return self._send(
                "POST",
                "/v1/files",
                files={"file": (path.name, handle, "application/jsonl")},
                data={"purpose": purpose},
                timeout=SLOW,
            )

    def create_batch(self, body: dict[str, Any]) -> dict[str, Any]:
        return self._send("POST", "/v1/batches", json=body, timeout=SLOW)

    def get_batch(self, batch_id: str) -> dict[str, Any]:
        return self._send("GET", f"/v1/batches/{batch_id}")

    def cancel_batch(self, batch_id: str) -> dict[str, Any]:
        return self._send("POST", f"/v1/batches/{batch_id}/cancel")

    def download_file(self, file_id: str, dest: Path) -> Download:
        return self._download(f"/v1/files/{file_id}/content", dest)

    def download_partial_output(self, batch_id: str, dest: Path) -> Download:
        return self._download(f"/v1/batches/{batch_id}/output", dest, {"partial": "true"})

    # Admin: virtual keys, teams and customers (the master key's endpoints).
    def create_key(self, body: dict[str, Any]) -> dict[str, Any]:
        return self._send("POST", "/v1/keys", json=body)

    def list_keys(self, params: dict[str, Any]) -> dict[str, Any]:
        return self._send("GET", "/v1/keys", params=params)

    def update_key(self, key_id: str, body: dict[str, Any]) -> dict[str, Any]:
        return self._send("PATCH", f"/v1/keys/{key_id}", json=body)

    def rotate_key(self, key_id: str) -> dict[str, Any]:
        return self._send("POST", f"/v1/keys/{key_id}/rotate")

    def revoke_key(self, key_id: str) -> dict[str, Any]:
        return self._send("POST", f"/v1/keys/{key_id}/revoke")

    def create_tenant(self, kind: str, body: dict[str, Any]) -> dict[str, Any]:
        """`kind`: "teams" or "customers"."""
        return self._send("POST", f"/v1/{kind}", json=body)

    def update_tenant(self, kind: str, tenant_id: str, body: dict[str, Any]) -> dict[str, Any]:
        return self._send("PATCH", f"/v1/{kind}/{tenant_id}", json=body)

    def list_tenants(self, kind: str, limit: int) -> dict[str, Any]:
        return self._send("GET", f"/v1/{kind}", params={"limit": limit})

    def _send(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        with self._reachable():
            response = self._http.request(method, path, **kwargs)
        return self._check(response)

    def _download(self, path: str, dest: Path, params: dict[str, str] | None = None) -> Download:
        """Streams to `<dest>.part`, renamed at the end: an interrupted download never
        leaves a truncated file under the real name."""
        dest.parent.mkdir(parents=True, exist_ok=True)
        part = dest.with_name(dest.name + ".part")
        size = lines = 0
        last = b"\n"
        try:
            with self._reachable(), self._http.stream("GET", path, params=params) as response:
                if response.status_code >= 400:
                    response.read()
                    self._check(response)
                with part.open("wb") as sink:
                    for chunk in response.iter_bytes():
                        sink.write(chunk)
                        size += len(chunk)
                        lines += chunk.count(b"\n")
                        last = chunk[-1:] or last
            part.replace(dest)
        finally:
            part.unlink(missing_ok=True)
        return Download(dest, size, lines + (last != b"\n"))

    @contextmanager
    def _reachable(self) -> Iterator[None]:
        try:
            yield
        except httpx.TransportError as exc:
            raise ApiError(
                f"no answer from the API at {self._http.base_url} ({type(exc).__name__}: {exc})"
            ) from exc

    @staticmethod
    def _check(response: httpx.Response) -> dict[str, Any]:
        if response.status_code >= 400:
            try:
                message = response.json()["error"]["message"]
            except (ValueError, KeyError, TypeError):
                message = response.text[:500]
            raise ApiError(f"API answered {response.status_code}: {message}")
        data: dict[str, Any] = response.json()
        return data


def submit(
    prompt: Annotated[str, typer.Argument(help="The user message.")],
    model: Annotated[str, typer.Option("--model", "-m", help="Model group.")] = "mock-model",
    system: Annotated[str | None, typer.Option(help="Optional system message.")] = None,
    priority: Annotated[int, typer.Option(help="0-9, higher runs first.")] = 5,
    timeout: Annotated[float, typer.Option(help="Seconds to wait for the result.")] = 300,
    stream: Annotated[
        bool, typer.Option("--stream", help="Print the answer as it is generated.")
    ] = False,
    url: Annotated[str | None, typer.Option(help="API URL (LLMFLEET_URL).")] = None,
    api_key: Annotated[str | None, typer.Option(help="API key (LLMFLEET_API_KEY).")] = None,
) -> None:
    """Enqueue one completion, wait for it, print the answer (with --stream, as it is
    generated).

    Example: `llmfleet submit "Say hello" --model mock-model --stream`
    """
    base, key = resolve_api(url, api_key)
    messages = [{"role": "system", "content": system}] if system else []
    messages.append({"role": "user", "content": prompt})
    body = {"model": model, "messages": messages, "priority": priority}
    with ApiClient(base, key) as api:
        job = api.create_job(body | ({"stream": True} if stream else {}))
        typer.echo(f"job {job['id']} queued", err=True)
        if stream:
            with suppress(ApiError):  # the job's end, read next, says why
                for piece in api.follow_job(job["id"]):
                    typer.echo(piece, nl=False)
            typer.echo()
        job = api.wait_job(job["id"], timeout)
    if job["status"] in ("queued", "running"):
        typer.echo(f"job {job['id']} is still {job['status']} after {timeout:g}s", err=True)
        raise typer.Exit(1)
    if job["status"] == "succeeded":
        if not stream:
            typer.echo(job["result"]["choices"][0]["message"]["content"])
        usage = job["usage"] or {}
        typer.echo(
            f"[{job['deployment']}: {usage.get('prompt_tokens')} prompt + "
            f"{usage.get('completion_tokens')} completion tokens]",
            err=True,
        )
        return
    message = (job.get("error") or {}).get("message", "")
    typer.echo(f"job {job['id']} ended {job['status']}: {message}", err=True)
    raise typer.Exit(1)
