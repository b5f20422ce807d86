"""Every command and command group of `llmfleet` shows an example in its `--help`."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.support.processes import REPO


@pytest.mark.parametrize(
    "command",
    [[], ["batch"], ["keys"], ["teams"], ["customers"], ["up"], ["submit"], ["worker"]],
    ids=lambda c: " ".join(c) or "llmfleet",
)
def test_help_shows_an_example(command: list[str]) -> None:
    shown = subprocess.run(
        [sys.executable, "-m", "producer_api.cli", *command, "--help"],
        cwd=REPO,
        env={"COLUMNS": "200", "PATH": "/usr/bin:/bin", "TERM": "dumb"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert shown.returncode == 0, shown.stderr
    assert "Example" in shown.stdout and "llmfleet " in shown.stdout.split("Example", 1)[1]


def test_the_mock_providers_options_pass_through() -> None:
    shown = subprocess.run(
        [sys.executable, "-m", "producer_api.cli", "mock-provider", "--help"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert shown.returncode == 0 and "--port" in shown.stdout and "--latency" in shown.stdout
