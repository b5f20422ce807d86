"""`llmfleet flower` refuses to serve without credentials unless told to."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from models.settings import FlowerSettings
from producer_api.cli import app
from producer_api.cli.flower import flower_argv, flower_env


@pytest.fixture(autouse=True)
def no_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("LLMFLEET_FLOWER_USER", "LLMFLEET_FLOWER_PASSWORD", "FLOWER_BASIC_AUTH"):
        monkeypatch.delenv(name, raising=False)


def test_refuses_to_start_without_credentials() -> None:
    result = CliRunner().invoke(app, ["flower"])
    assert result.exit_code == 2
    assert "LLMFLEET_FLOWER_USER and LLMFLEET_FLOWER_PASSWORD are not set" in result.output
    assert "--no-auth" in result.output


def test_credentials_go_to_the_environment_not_the_command_line() -> None:
    settings = FlowerSettings(LLMFLEET_FLOWER_USER="ops", LLMFLEET_FLOWER_PASSWORD="s3cret")
    env = flower_env(settings, no_auth=False, base={"FLOWER_UNAUTHENTICATED_API": "true"})
    assert env["FLOWER_BASIC_AUTH"] == "ops:s3cret"
    assert "FLOWER_UNAUTHENTICATED_API" not in env
    argv = flower_argv(5555, "127.0.0.1")
    assert "s3cret" not in " ".join(argv)
    assert argv[-4:] == ["flower", "--port=5555", "--address=127.0.0.1", "--enable_events=True"]


def test_no_auth_is_explicit() -> None:
    env = flower_env(FlowerSettings(), no_auth=True, base={"FLOWER_BASIC_AUTH": "a:b"})
    assert env["FLOWER_UNAUTHENTICATED_API"] == "true"
    assert "FLOWER_BASIC_AUTH" not in env


def test_credentials_flower_cannot_parse_are_refused() -> None:
    with pytest.raises(ValueError, match="must not contain ','"):
        FlowerSettings(LLMFLEET_FLOWER_USER="ops", LLMFLEET_FLOWER_PASSWORD="a,b")
    with pytest.raises(ValueError, match="must not contain ':' or ','"):
        FlowerSettings(LLMFLEET_FLOWER_USER="o:ps", LLMFLEET_FLOWER_PASSWORD="x")
