"""Start real processes (API, workers, mock provider) and wait until they serve."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Proc:
    """A child process whose output goes to a log file, shown when it misbehaves."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str], log_dir: Path) -> None:
        self.name = name
        self.log = log_dir / f"{name}.log"
        with self.log.open("wb") as sink:
            self.popen = subprocess.Popen(
                argv,
                cwd=REPO,
                env=env,
                stdout=sink,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_for(self, what: str, check: Callable[[], bool], timeout: float = 60) -> None:
        until = time.monotonic() + timeout
        while time.monotonic() < until:
            if self.popen.poll() is not None:
                raise RuntimeError(
                    f"{self.name} exited ({self.popen.returncode}):\n{self.output()}"
                )
            if check():
                return
            time.sleep(0.1)
        raise RuntimeError(
            f"{self.name}: {what} not seen within {timeout}s:\n{self.output()[-3000:]}"
        )

    def exit_reason(self) -> str | None:
        """How the process ended, or None while it runs. A signal is named: a native
        crash (SIGSEGV in a C library) shows as one, not as an exit code."""
        code = self.popen.poll()
        if code is None:
            return None
        if code >= 0:
            return f"exited with code {code}"
        try:
            return f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"

    def tail(self, lines: int = 30) -> str:
        return "\n".join(self.output().splitlines()[-lines:])

    def assert_running(self) -> None:
        """Fail now if the process has ended, naming how and showing its last log
        lines, so that a caller waiting on it does not wait out its own timeout."""
        reason = self.exit_reason()
        if reason is not None:
            raise AssertionError(f"{self.name} {reason}; last lines of {self.log}:\n{self.tail()}")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20) -> int:
        if self.popen.poll() is None:
            os.killpg(self.popen.pid, sig)
            try:
                self.popen.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.popen.pid, signal.SIGKILL)
                self.popen.wait()
        return self.popen.returncode


def http_ok(url: str) -> Callable[[], bool]:
    def check() -> bool:
        try:
            return httpx.get(url, timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    return check


def start_mock(
    env: dict[str, str], log_dir: Path, *flags: str, name: str = "mock"
) -> tuple[Proc, str]:
    port = free_port()
    proc = Proc(
        name,
        [sys.executable, "-m", "workers.mock_provider", "--port", str(port), *flags],
        env,
        log_dir,
    )
    url = f"http://127.0.0.1:{port}"
    proc.wait_for("HTTP", http_ok(f"{url}/v1/models"))
    return proc, url


def start_worker(env: dict[str, str], log_dir: Path, name: str, concurrency: int = 50) -> Proc:
    argv = [
        sys.executable,
        "-m",
        "producer_api.cli",
        "worker",
        "-c",
        str(concurrency),
        "--name",
        f"{name}@%h",
    ]
    proc = Proc(name, argv, env, log_dir)
    proc.wait_for("ready", lambda: " ready." in proc.output())
    return proc


def start_beat(env: dict[str, str], log_dir: Path, name: str = "beat") -> Proc:
    argv = [
        sys.executable,
        "-m",
        "producer_api.cli",
        "beat",
        "--schedule",
        str(log_dir / f"{name}.db"),
    ]
    proc = Proc(name, argv, env, log_dir)
    proc.wait_for("start", lambda: "beat: Starting" in proc.output(), timeout=30)
    return proc


def start_api(env: dict[str, str], log_dir: Path, name: str = "api") -> tuple[Proc, str]:
    port = free_port()
    argv = [sys.executable, "-m", "producer_api.cli", "api", "--port", str(port)]
    proc = Proc(name, argv, env, log_dir)
    url = f"http://127.0.0.1:{port}"
    proc.wait_for("readiness", http_ok(f"{url}/readyz"))
    return proc, url
