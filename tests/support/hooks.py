"""Hooks that tests name in fleet configs (`tests.support.hooks:...`)."""

from __future__ import annotations

import json
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


def broken(request: dict[str, Any], job: HookJob) -> dict[str, Any]:
    raise KeyError(json.dumps(request))


NOT_CALLABLE = 42
