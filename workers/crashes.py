"""What becomes of an unexpected exception: a claim that crashed, a task that crashed.

An exception's text and repr may quote whatever it was handling: a UnicodeEncodeError
carries the whole string it could not encode (a request body), a database error its
statement's parameters (a response). So nothing here ever formats `str(exc)` or
`repr(exc)` of an exception it does not know: a crash is told by its class name and
the ids it concerns, in the log, in the job's error and in what Celery records.

A claim whose run raises (anything but a passing outage of the database or Redis,
`TRANSIENT`, which the task layer retries) is released at once to be claimed again
after a short backoff, rather than left `running` until its lease lapses; from its
`MAX_CRASHED_CLAIMS`-th claim on, a crash ends the job `failed` (`job_crashed`), so a
job that fails the same way on every claim is not claimed again until its deadline.
"""

from __future__ import annotations

import dataclasses
import logging
import random
import re
import time
from collections.abc import Sequence
from typing import Any

import redis
from sqlalchemy.exc import InterfaceError, OperationalError

from models.tables import JobStatus
from workers.jobstore import AttemptRecord, Claim, Ending, Outcome
from workers.waits import Deferral

__all__ = [
    "MAX_CRASHED_CLAIMS",
    "TRANSIENT",
    "TaskCrashed",
    "after_crash",
    "crash_error",
    "task_crashed",
    "unstorable",
]

log = logging.getLogger(__name__)

#: The database or Redis away for a moment (a restart, a failover, a cut connection):
#: not a crash; the task sends its message again.
TRANSIENT = (OperationalError, InterfaceError, redis.ConnectionError, redis.TimeoutError)
#: The claim number from which a crash ends the job `failed` instead of releasing it.
#: Every claim counts (a wait for capacity too): a job whose N-th claim crashes has
#: spent N claims, and a crash that comes back on every claim is not worth more.
MAX_CRASHED_CLAIMS = 3
#: A crashed claim is tried again after about this long, doubling per claim.
CRASH_RETRY_BASE_S = 1.0
CRASH_RETRY_MAX_S = 60.0
#: What may be quoted of a task's arguments: the fleet's ids (`models.ids.new_id`) and
#: numbers; anything else shows as `?`, whatever a future task is given.
_ID = re.compile(r"[a-z]{1,16}_[0-9a-f]{8,64}")
_MAX_IDS = 20


class TaskCrashed(Exception):
    """What Celery records (log line, task event, result) of a task that raised
    something unexpected: the class name and the ids, nothing of the original."""


def after_crash(
    claimed: Claim, exc: Exception, records: Sequence[AttemptRecord], rng: random.Random
) -> Outcome | Deferral:
    """The end of a claim whose run raised `exc`: the job ends `failed` from its
    MAX_CRASHED_CLAIMS-th claim on, and is otherwise released to be tried again soon
    (stored as a wait, so its calls so far are written and a cancel still reaches it)."""
    name = type(exc).__name__
    where = "after its provider call" if records else "before its provider call"
    if claimed.attempt >= MAX_CRASHED_CLAIMS:
        log.error(
            "job %s attempt %d: crashed %s (%s); ending it failed",
            claimed.job_id,
            claimed.attempt,
            where,
            name,
        )
        return Outcome(JobStatus.FAILED, error=crash_error(where, name, claimed.attempt))
    ceiling = min(CRASH_RETRY_MAX_S, CRASH_RETRY_BASE_S * 2 ** (claimed.attempt - 1))
    delay = ceiling * rng.uniform(0.5, 1.0)
    log.error(
        "job %s attempt %d: crashed %s (%s); trying again in %.1f s",
        claimed.job_id,
        claimed.attempt,
        where,
        name,
        delay,
    )
    return Deferral(time.time() + delay, f"the previous claim crashed {where} ({name})")


def unstorable(ending: Ending, exc: Exception) -> Ending:
    """The end to store instead of one the database refused (a value it cannot take
    in the response): the job ends `failed` on this claim, its calls and usage kept,
    rather than being claimed and called again only to be refused again."""
    claimed, name = ending.claimed, type(exc).__name__
    log.error(
        "job %s attempt %d: its end could not be stored (%s); ending it failed",
        claimed.job_id,
        claimed.attempt,
        name,
    )
    error = crash_error("while its result was stored", name, claimed.attempt)
    failed = dataclasses.replace(
        ending.outcome, status=JobStatus.FAILED, response=None, error=error, cached=False
    )
    return dataclasses.replace(ending, outcome=failed)


def crash_error(where: str, name: str, claims: int) -> dict[str, Any]:
    """The job's error (OpenAI's shape) when a crash ends it."""
    return {
        "message": f"the job crashed {where} ({name}); not tried again after {claims} claim(s)",
        "type": "server_error",
        "param": None,
        "code": "job_crashed",
        "status_code": 500,
    }


def task_crashed(task_name: str, exc: BaseException, args: Sequence[Any]) -> TaskCrashed:
    """The sanitized stand-in for an exception that escaped a task; raise it outside
    the `except` block (and `from None`), so that it carries no chained original."""
    ids = _ids(args)
    log.error("task %s crashed: %s (%s)", task_name, type(exc).__name__, ids)
    return TaskCrashed(f"{type(exc).__name__} in {task_name} ({ids})")


def _ids(args: Sequence[Any]) -> str:
    flat: list[Any] = []
    for arg in args:
        flat += arg if isinstance(arg, list | tuple) else [arg]
    shown = [
        str(a)
        if (isinstance(a, int) and not isinstance(a, bool))
        or (isinstance(a, str) and _ID.fullmatch(a))
        else "?"
        for a in flat[:_MAX_IDS]
    ]
    more = len(flat) - len(shown)
    return ", ".join(shown) + (f" and {more} more" if more > 0 else "")
