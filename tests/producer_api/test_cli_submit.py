"""`llmfleet submit`, run as a user runs it, against the session fleet."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from tests.conftest import MASTER_KEY, Fleet

REPO = Path(__file__).resolve().parents[2]


def submit(fleet: Fleet, *args: str) -> subprocess.Popen[bytes]:
    command = [sys.executable, "-m", "producer_api.cli", "submit", *args]
    command += ["--url", fleet.api_url, "--api-key", MASTER_KEY]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen(
        command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )


def test_stream_prints_the_answer_as_it_is_generated(clean_fleet: Fleet) -> None:
    proc = submit(clean_fleet, "a b [mock:chunks=5] [mock:interval=0.4]", "--stream")
    assert proc.stdout is not None
    first = proc.stdout.read(1)
    first_at = time.monotonic()
    rest = proc.stdout.read()
    proc.wait(30)
    ended_at = time.monotonic()

    assert proc.returncode == 0, proc.stderr.read() if proc.stderr else ""
    assert (first + rest).decode() == "Echo: a b [mock:chunks=5] [mock:interval=0.4]\n"
    assert ended_at - first_at > 1.5  # the first words came while the rest was generated


def test_a_wait_that_times_out_says_so(clean_fleet: Fleet) -> None:
    proc = submit(clean_fleet, "slow [mock:latency=5]", "--timeout", "1")
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 1
    assert b"is still running after 1s" in err or b"is still queued after 1s" in err
