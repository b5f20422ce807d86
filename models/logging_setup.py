"""Structured logs for every fleet process: one JSON object per line (or plain text on
a terminal), carrying the job's ids when the line is about a job.

The execute path opens a `log_context(job_id=...)` per task and binds the batch id,
the claim number (`attempt`) and the deployment of the current call as it learns
them (`bind_log_context`). A filter on the handler copies them onto every record, so
any library's line written while a job runs carries them too.

What is logged is ids, statuses, counts and error class names: never prompts,
results or secrets. The formatter does not add record attributes other than these
fields, so `extra=` cannot leak a body into the output by accident.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import logging
import sys
from collections.abc import Iterator, Mapping
from contextvars import ContextVar
from typing import IO, Literal

__all__ = [
    "LOG_FIELDS",
    "ContextFilter",
    "JsonFormatter",
    "LogFormat",
    "TextFormatter",
    "bind_log_context",
    "configure_logging",
    "log_context",
    "resolve_log_format",
]

LogFormat = Literal["json", "text"]

#: The job fields a line carries when they are known.
LOG_FIELDS = ("job_id", "batch_id", "deployment", "attempt")
HANDLER_NAME = "llmfleet"
#: Loggers that would write a line per provider call at INFO (httpx's "HTTP Request"),
#: or two per message (Celery's "received" and "succeeded": the job's claim and end are
#: logged with its ids; a task that fails still logs at ERROR): they only cost CPU, in
#: the consumer's thread for the first.
QUIET_LOGGERS = (
    "httpx",
    "httpx2",
    "httpcore",
    "httpcore2",
    "celery.worker.strategy",
    "celery.app.trace",
)
#: uvicorn installs handlers of its own on these; ours (on the root) take over.
UVICORN_LOGGERS = ("uvicorn", "uvicorn.error", "uvicorn.access")

_EMPTY: Mapping[str, object] = {}
_fields: ContextVar[Mapping[str, object]] = ContextVar("llmfleet_log_fields", default=_EMPTY)


@contextlib.contextmanager
def log_context(**fields: object) -> Iterator[None]:
    """Fields for every line logged inside the block (in this thread or task); fields
    bound inside it with `bind_log_context` end with it too."""
    token = _fields.set({**_fields.get(), **fields})
    try:
        yield
    finally:
        _fields.reset(token)


def bind_log_context(**fields: object) -> None:
    """Add fields for the rest of the enclosing `log_context`."""
    _fields.set({**_fields.get(), **fields})


class ContextFilter(logging.Filter):
    """Copies the bound job fields onto each record (as attributes, for any formatter)."""

    def filter(self, record: logging.LogRecord) -> bool:
        for key, value in _fields.get().items():
            if value is not None:
                setattr(record, key, value)
        return True


def _job_fields(record: logging.LogRecord) -> dict[str, object]:
    out: dict[str, object] = {}
    for key in LOG_FIELDS:
        value = getattr(record, key, None)
        if value is not None:
            out[key] = value
    return out


class JsonFormatter(logging.Formatter):
    """`{"ts", "level", "logger", "message", job fields..., "exc"}` on one line."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, object] = {
            "ts": dt.datetime.fromtimestamp(record.created, dt.UTC).isoformat(
                timespec="milliseconds"
            ),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            **_job_fields(record),
            "pid": record.process,
        }
        if record.exc_info:
            line["exc_type"] = getattr(record.exc_info[0], "__name__", None)
            line["exc"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    """The usual one-line text, job fields appended as key=value."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        fields = _job_fields(record)
        if not fields:
            return text
        suffix = " ".join(f"{k}={v}" for k, v in fields.items())
        head, sep, tail = text.partition("\n")  # keep a traceback below the line
        return f"{head} [{suffix}]{sep}{tail}"


def resolve_log_format(setting: str | None, stream: IO[str] | None = None) -> LogFormat:
    """The setting when given, else text on a terminal and JSON everywhere else (files,
    pipes, containers), where lines are read by machines."""
    if setting == "json":
        return "json"
    if setting == "text":
        return "text"
    if setting:
        raise ValueError(f"LLMFLEET_LOG_FORMAT must be json or text, not {setting!r}")
    stream = stream or sys.stderr
    return "text" if stream.isatty() else "json"


def configure_logging(
    setting: str | None, level: int | str = "INFO", stream: IO[str] | None = None
) -> LogFormat:
    """Install the fleet's handler on the root logger (once: calling again replaces it)
    and route uvicorn's and Python's warnings through it. Returns the format used."""
    log_format = resolve_log_format(setting, stream)
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.set_name(HANDLER_NAME)
    handler.setFormatter(JsonFormatter() if log_format == "json" else TextFormatter())
    handler.addFilter(ContextFilter())
    root = logging.getLogger()
    for old in [h for h in root.handlers if h.get_name() == HANDLER_NAME]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper() if isinstance(level, str) else level)
    for name in UVICORN_LOGGERS:
        logger = logging.getLogger(name)
        logger.handlers.clear()
        logger.propagate = True
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
    logging.captureWarnings(True)
    return log_format
