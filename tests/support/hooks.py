"""Hooks that tests name in fleet configs (`tests.support.hooks:...`)."""

from __future__ import annotations

import json
import threading
from typing import Any

from workers.hooks import HookJob, HookRejected

FORBIDDEN = "FORBIDDEN-TOPIC"
REJECTION = "requests about a forbidden topic are not allowed"


def reject_forbidden(request: dict[str, Any], job: HookJob) -> dict[str, Any]:
    """Pre-call: reject any request mentioning FORBIDDEN."""
    if FORBIDDEN in json.dumps(request):
        raise HookRejected(REJECTION)
    return request


def shout(response: dict[str, Any], job: HookJob) -> dict[str, Any]:
    """Post-call: upper-case every choice's content."""
    for choice in response.get("choices", []):
        message = choice.get("message") or {}
        if isinstance(message.get("content"), str):
            message["content"] = message["content"].upper()
    return response


#: The names of the threads `where_am_i` ran on.
THREADS: list[str] = []


def where_am_i(response: dict[str, Any], job: HookJob) -> dict[str, Any]:
    """Post-call: note the thread it runs on."""
    THREADS.append(threading.current_thread().name)
    return response


def broken(request: dict[str, Any], job: HookJob) -> dict[str, Any]:
    raise KeyError(json.dumps(request))


NOT_CALLABLE = 42


#: Triggers of `crash_on_trigger`, matched anywhere in the request.
RAISE = "RAISE-IN-HOOK"
CRASH = "CRASH-AFTER-HOOK"
UNSTORABLE = "UNSTORABLE-REPLY"


def crash_on_trigger(request: dict[str, Any], job: HookJob) -> dict[str, Any]:
    """Pre-call: a request mentioning RAISE makes the hook raise an exception that
    quotes the request. One mentioning CRASH leaves with a lone surrogate added, which
    no JSON encoder can send: the provider call crashes before it is made, with a
    UnicodeEncodeError whose repr holds the whole body (as a row stored before the API
    refused such input would)."""
    text = json.dumps(request)
    if RAISE in text:
        raise RuntimeError(text)
    if CRASH in text:
        request["messages"].append({"role": "user", "content": "x \ud800"})
    return request


class Unstorable:
    """A value no JSON encoder takes, whose repr quotes what it was given."""

    def __init__(self, text: str) -> None:
        self.text = text

    def __repr__(self) -> str:
        return f"Unstorable({self.text!r})"


def unstorable_on_trigger(response: dict[str, Any], job: HookJob) -> dict[str, Any]:
    """Post-call: a response mentioning UNSTORABLE comes back with a value that cannot be
    stored (the database write raises, quoting its parameters)."""
    text = json.dumps(response)
    if UNSTORABLE in text:
        response["unstorable"] = Unstorable(text)
    return response
