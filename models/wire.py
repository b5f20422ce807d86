"""The input limits every entry point applies, in one place.

Why: a value that the border lets in but a later part cannot hold does its damage far
from the request: a lone surrogate makes every claim of the job crash and poisons the
table's JSON operators, a year-1 date breaks every listing that shows it, an integer
past a double's range makes a Lua script fail after the key's window counted the job,
a deeply nested line overflows the parser's stack. So every body, batch line and
datetime is held to these limits on the way in, and refused with a 400 naming the
field (and the line); nothing reaches the database, a limit counter or a worker.

- JSON nesting (bodies, batch lines): at most `MAX_JSON_DEPTH` levels;
- strings and object keys: valid Unicode, so no lone surrogate (`"\\ud800"`), no U+0000;
- integers: within ±`MAX_JSON_INT` (2^53 - 1, exact in a double and so in Lua and in
  every JSON parser; RFC 7493); other numbers finite (no NaN, Infinity or `1e400`);
- token counts (`max_tokens`, `max_completion_tokens`): at most `MAX_TOKENS`;
- datetimes: with a timezone, from 1970-01-01 to 9999-01-01 (UTC); a job's deadline
  not more than `DEADLINE_SKEW` in the past;
- durations ("90s", "30m", "24h", "7d"): positive; completion windows at most
  `MAX_WINDOW`, key lifetimes at most `MAX_KEY_DURATION`.

Pure functions and pydantic types only: no I/O.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import re
from typing import Annotated, Any

from pydantic import AfterValidator, AwareDatetime, Field

__all__ = [
    "DEADLINE_SKEW",
    "MAX_JSON_DEPTH",
    "MAX_JSON_INT",
    "MAX_KEY_DURATION",
    "MAX_TOKENS",
    "MAX_WINDOW",
    "BoundedDatetime",
    "JsonInt",
    "TokenCount",
    "WireError",
    "check_json",
    "check_text",
    "loads",
    "parse_duration",
]

MAX_JSON_DEPTH = 64
MAX_JSON_INT = 2**53 - 1
#: Keeps a job's token estimate (prompt / 4 + this) inside a 32-bit column.
MAX_TOKENS = 1_000_000_000
MAX_WINDOW = dt.timedelta(days=365)
MAX_KEY_DURATION = dt.timedelta(days=3650)
DEADLINE_SKEW = dt.timedelta(minutes=5)
EARLIEST = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
LATEST = dt.datetime(9999, 1, 1, tzinfo=dt.UTC)

_DURATION = re.compile(r"^(\d{1,12})([smhd])$")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


class WireError(ValueError):
    """A value the border refuses; `param` is its path from the root given to
    `check_json` ("messages.0.content"; "" for the value itself)."""

    def __init__(self, param: str, message: str) -> None:
        super().__init__(f"{param or 'the value'}: {message}")
        self.param = param
        self.message = message


def check_text(value: str) -> str | None:
    """Why `value` cannot be stored or sent on, or None."""
    if "\x00" in value:
        return "must not contain U+0000 (NUL)"
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return "is not valid Unicode: it holds a lone surrogate (such as \\ud800)"
    return None


def check_json(value: Any, root: str = "") -> None:
    """Walk a parsed JSON value (without recursion) and raise `WireError` at the first
    value past a limit, naming its path from `root`."""
    stack: list[tuple[Any, int, str]] = [(value, 0, root)]
    while stack:
        item, depth, path = stack.pop()
        if isinstance(item, dict):
            if depth >= MAX_JSON_DEPTH:
                raise WireError(path, f"is nested deeper than {MAX_JSON_DEPTH} levels")
            for key, child in item.items():
                if isinstance(key, str) and (problem := check_text(key)):
                    raise WireError(path, f"a key {problem}")
                child_path = f"{path}.{key}" if path else str(key)
                stack.append((child, depth + 1, child_path))
        elif isinstance(item, list):
            if depth >= MAX_JSON_DEPTH:
                raise WireError(path, f"is nested deeper than {MAX_JSON_DEPTH} levels")
            stack.extend(
                (child, depth + 1, f"{path}.{i}" if path else str(i))
                for i, child in enumerate(item)
            )
        elif isinstance(item, str):
            if problem := check_text(item):
                raise WireError(path, problem)
        elif isinstance(item, bool) or item is None:
            continue
        elif isinstance(item, int):
            if not -MAX_JSON_INT <= item <= MAX_JSON_INT:
                raise WireError(path, f"is out of range (at most ±{MAX_JSON_INT})")
        elif isinstance(item, float) and not math.isfinite(item):
            raise WireError(path, "must be a finite number")


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def loads(raw: bytes | str, root: str = "") -> Any:
    """`json.loads` held to the limits: `WireError` for a value past one, `ValueError`
    (with the reason) for text that is not JSON at all."""
    try:
        value = json.loads(raw, parse_constant=_no_constants)
    except RecursionError:
        raise WireError(root, f"is nested deeper than {MAX_JSON_DEPTH} levels") from None
    check_json(value, root)
    return value


def parse_duration(text: str, maximum: dt.timedelta = MAX_WINDOW) -> dt.timedelta:
    """ "90s", "30m", "24h", "7d" -> timedelta, positive and at most `maximum`."""
    match = _DURATION.match(text.strip())
    if not match or int(match.group(1)) == 0:
        raise ValueError("must be a positive duration such as '90s', '30m', '24h' or '7d'")
    seconds = int(match.group(1)) * _UNIT_SECONDS[match.group(2)]
    if seconds > maximum.total_seconds():
        raise ValueError(f"must be at most {maximum.days}d")
    return dt.timedelta(seconds=seconds)


def _in_range(value: dt.datetime) -> dt.datetime:
    try:
        utc = value.astimezone(dt.UTC)
    except OverflowError:
        utc = None
    if utc is None or not EARLIEST <= utc < LATEST:
        raise ValueError("must be between 1970-01-01 and 9999-01-01")
    return utc


#: A datetime with a timezone, within the range every store and client can show.
BoundedDatetime = Annotated[AwareDatetime, AfterValidator(_in_range)]
#: An integer field of a body: pydantic turns "1e30" or 2.0**70 into an int, which the
#: JSON check that ran before it cannot have seen.
JsonInt = Annotated[int, Field(ge=-MAX_JSON_INT, le=MAX_JSON_INT)]
#: A completion budget in tokens.
TokenCount = Annotated[int, Field(ge=1, le=MAX_TOKENS)]
