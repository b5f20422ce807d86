"""Pre-call and post-call hooks: guardrails named by import path in the fleet config
(`llmfleet_settings.pre_call_hooks` / `post_call_hooks`) and imported once, at worker
start; a path that does not import stops the worker there.

A pre-call hook is `hook(request, job) -> request`: it gets a copy of the provider
request body (OpenAI shape) and the job it belongs to (`HookJob`), and returns the body
to send, possibly rewritten, or raises `HookRejected(message)`: the job then ends
`failed` with that message (`invalid_request_error` / `rejected_by_hook`) and no
provider is called. A post-call hook is `hook(response, job) -> response` on a copy of
a successful response: it may redact it, or reject it the same way (the tokens the
call used are still recorded).

Hooks run in order, once per claim of a job: before its first provider call, and on
the response that ends it. A job that waits for capacity and is claimed again runs
them again on the stored request. They run on the worker's threads, hundreds at once:
keep them quick, free of shared mutable state, and free of I/O without a timeout.
The rewritten request is what the provider sees; the stored job keeps the original.
"""

from __future__ import annotations

import copy
import dataclasses
import importlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from models.fleet_config import ConfigError
from models.llmfleet_settings import LlmfleetSettings
from models.tables import JobStatus
from workers.jobstore import Claim, Outcome

__all__ = [
    "HookJob",
    "HookRejected",
    "Hooks",
    "after_call",
    "before_call",
    "load_hooks",
]

log = logging.getLogger(__name__)

Body = dict[str, Any]


class HookRejected(Exception):
    """Raised by a hook to end the job `failed` with `message` (shown to the caller:
    say what policy was hit, not what the request contained)."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


@dataclass(frozen=True, slots=True)
class HookJob:
    """What a hook may know of the job beside its body."""

    job_id: str
    model: str
    kind: str
    batch_id: str | None
    attempt: int


Hook = Callable[[Body, HookJob], Body]
#: Hooks in the order they run, with the import path each was configured by.
Chain = tuple[tuple[str, Hook], ...]


@dataclass(frozen=True)
class Hooks:
    """The resolved hooks of a worker process, as (import path, callable) pairs."""

    pre_call: Chain = ()
    post_call: Chain = ()


def load_hooks(settings: LlmfleetSettings) -> Hooks:
    """Import every configured hook; every bad path is named in one ConfigError."""
    errors: list[str] = []
    pre = _resolve_all(settings.pre_call_hooks, "pre_call_hooks", errors)
    post = _resolve_all(settings.post_call_hooks, "post_call_hooks", errors)
    if errors:
        raise ConfigError("invalid fleet config:\n  " + "\n  ".join(errors))
    return Hooks(pre, post)


def _resolve_all(paths: tuple[str, ...], key: str, errors: list[str]) -> Chain:
    out = []
    for i, path in enumerate(paths):
        try:
            out.append((path, _resolve(path)))
        except (ImportError, AttributeError, TypeError) as exc:
            errors.append(f"llmfleet_settings.{key}[{i}]: {path!r}: {exc}")
    return tuple(out)


def _resolve(path: str) -> Hook:
    module_name, _, attribute = path.partition(":")
    try:
        target: Any = importlib.import_module(module_name)
    except ImportError as exc:
        raise ImportError(f"cannot import module {module_name!r} ({exc})") from exc
    for part in attribute.split("."):
        if not hasattr(target, part):
            raise AttributeError(f"{module_name!r} has no attribute {attribute!r}")
        target = getattr(target, part)
    if not callable(target):
        raise TypeError(f"{attribute!r} is not callable")
    hook: Hook = target
    return hook


def before_call(hooks: Hooks, claim: Claim) -> Claim | Outcome:
    """The claim with the request the pre-call hooks made, or the Outcome that ends
    the job without a call."""
    if not hooks.pre_call:
        return claim
    result = _run(hooks.pre_call, claim.request, _job(claim), "pre-call")
    if isinstance(result, Outcome):
        return result
    return dataclasses.replace(claim, request=result)


def after_call(hooks: Hooks, claim: Claim, outcome: Outcome) -> Outcome:
    """A successful outcome with the response the post-call hooks made, or a failed
    one (the usage kept) when a hook rejects it."""
    if not hooks.post_call or outcome.response is None:
        return outcome
    result = _run(hooks.post_call, outcome.response, _job(claim), "post-call")
    if isinstance(result, Outcome):
        return dataclasses.replace(outcome, status=result.status, response=None, error=result.error)
    return dataclasses.replace(outcome, response=result)


def _job(claim: Claim) -> HookJob:
    return HookJob(claim.job_id, claim.model, claim.kind, claim.batch_id, claim.attempt)


def _run(chain: Chain, body: Body, job: HookJob, stage: str) -> Body | Outcome:
    body = copy.deepcopy(body)
    for path, hook in chain:
        try:
            body = hook(body, job)
        except HookRejected as exc:
            log.info("%s hook %s rejected the job", stage, path)
            return _failed(exc.message, "invalid_request_error", "rejected_by_hook", 400)
        except Exception as exc:
            # The exception's text may quote the body: log and report its class only.
            log.error("%s hook %s raised %s", stage, path, type(exc).__name__)
            message = f"the {stage} hook {path} failed ({type(exc).__name__})"
            return _failed(message, "api_error", "hook_error", 500)
        if not isinstance(body, dict):
            log.error("%s hook %s returned %s, not a dict", stage, path, type(body).__name__)
            message = f"the {stage} hook {path} returned no request body"
            return _failed(message, "api_error", "hook_error", 500)
    return body


def _failed(message: str, error_type: str, code: str, status: int) -> Outcome:
    error = {
        "message": message,
        "type": error_type,
        "param": None,
        "code": code,
        "status_code": status,
    }
    return Outcome(JobStatus.FAILED, error=error)
