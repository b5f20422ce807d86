"""Structured log lines: one JSON object each, with the bound job fields."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from models.db import make_engine
from models.logging_setup import (
    HANDLER_NAME,
    bind_log_context,
    configure_logging,
    log_context,
    resolve_log_format,
)


@pytest.fixture
def stream() -> Iterator[io.StringIO]:
    """The root logger writing to a buffer; restored afterwards."""
    root = logging.getLogger()
    saved = (root.handlers[:], root.level)
    buffer = io.StringIO()
    yield buffer
    root.handlers[:] = saved[0]
    root.setLevel(saved[1])
    logging.captureWarnings(False)


def lines(buffer: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in buffer.getvalue().splitlines()]


def test_json_lines_carry_the_bound_job_fields(stream: io.StringIO) -> None:
    configure_logging("json", "INFO", stream)
    log = logging.getLogger("llmfleet.test")
    with log_context(job_id="job_1"):
        bind_log_context(attempt=2, batch_id="batch_9")
        bind_log_context(deployment="dep-a")
        log.info("job %s: %s", "job_1", "succeeded")
    log.info("after the job")
    first, second = lines(stream)
    assert first["message"] == "job job_1: succeeded"
    assert (first["job_id"], first["attempt"], first["batch_id"], first["deployment"]) == (
        "job_1",
        2,
        "batch_9",
        "dep-a",
    )
    assert first["level"] == "INFO" and first["logger"] == "llmfleet.test"
    assert not {"job_id", "attempt", "batch_id", "deployment"} & set(second)


def test_extra_attributes_never_reach_the_line(stream: io.StringIO) -> None:
    configure_logging("json", "INFO", stream)
    logging.getLogger("x").info("done", extra={"prompt": "secret words"})
    assert "secret words" not in stream.getvalue()


def test_exceptions_are_one_line_too(stream: io.StringIO) -> None:
    configure_logging("json", "INFO", stream)
    try:
        raise ValueError("boom")
    except ValueError:
        logging.getLogger("x").exception("failed")
    (line,) = lines(stream)
    assert line["exc_type"] == "ValueError" and "Traceback" in str(line["exc"])


def test_text_format_appends_the_fields(stream: io.StringIO) -> None:
    configure_logging("text", "INFO", stream)
    with log_context(job_id="job_2"):
        logging.getLogger("x").warning("slow")
    assert stream.getvalue().rstrip().endswith("slow [job_id=job_2]")


def test_configuring_twice_keeps_one_handler(stream: io.StringIO) -> None:
    configure_logging("json", "INFO", stream)
    configure_logging("json", "DEBUG", stream)
    ours = [h for h in logging.getLogger().handlers if h.get_name() == HANDLER_NAME]
    assert len(ours) == 1
    assert logging.getLogger().level == logging.DEBUG


def test_format_defaults_to_json_unless_on_a_terminal() -> None:
    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    assert resolve_log_format(None, io.StringIO()) == "json"
    assert resolve_log_format(None, Tty()) == "text"
    assert resolve_log_format("json", Tty()) == "json"
    with pytest.raises(ValueError, match="json or text"):
        resolve_log_format("yaml")


def test_database_errors_do_not_quote_statement_parameters() -> None:
    engine = make_engine("sqlite://")
    with pytest.raises(DBAPIError) as err, engine.connect() as conn:
        conn.execute(text("SELECT * FROM no_such_table WHERE x = :p"), {"p": "my prompt"})
    assert "my prompt" not in str(err.value)
    engine.dispose()
