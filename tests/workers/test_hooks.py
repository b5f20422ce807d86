"""Pre- and post-call hooks: resolution at start, rewriting, rejection, the example."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import Engine

from models.fleet_config import ConfigError
from models.llmfleet_settings import LlmfleetSettings
from models.tables import JobStatus
from tests.conftest import migrated_database
from tests.support import hooks as test_hooks
from tests.support.core import CoreFactory, deployment, ok
from workers.hooks import HookJob, after_call, before_call, load_hooks
from workers.hooks_examples import REDACTED_EMAIL, redact_emails
from workers.jobstore import Claim, Outcome

JOB = HookJob("job_1", "m", "chat.completions", None, 1)


def claim(content: Any) -> Claim:
    request = {"model": "m", "messages": [{"role": "user", "content": content}]}
    return Claim("job_1", 1, "chat.completions", "m", request, dt.datetime.now(dt.UTC))


def hooks(pre: list[str] | None = None, post: list[str] | None = None) -> Any:
    return load_hooks(
        LlmfleetSettings(pre_call_hooks=tuple(pre or ()), post_call_hooks=tuple(post or ()))
    )


def test_every_bad_path_is_named_at_load() -> None:
    with pytest.raises(ConfigError) as err:
        hooks(
            pre=["no_such_module_xyz:f", "tests.support.hooks:missing"],
            post=["tests.support.hooks:NOT_CALLABLE"],
        )
    message = str(err.value)
    assert "llmfleet_settings.pre_call_hooks[0]: 'no_such_module_xyz:f': cannot import" in message
    assert "pre_call_hooks[1]" in message and "has no attribute 'missing'" in message
    assert "post_call_hooks[0]" in message and "is not callable" in message


def test_no_hooks_leave_the_claim_untouched() -> None:
    original = claim("hi")
    assert before_call(hooks(), original) is original


def test_a_pre_call_hook_rewrites_a_copy() -> None:
    original = claim("write to bob@example.com or Ann.Lee+x@mail.co.uk today")
    rewritten = before_call(hooks(pre=["workers.hooks_examples:redact_emails"]), original)
    assert isinstance(rewritten, Claim)
    content = rewritten.request["messages"][0]["content"]
    assert content == f"write to {REDACTED_EMAIL} or {REDACTED_EMAIL} today"
    assert "bob@example.com" in original.request["messages"][0]["content"]


def test_a_rejecting_hook_fails_the_job_with_its_message() -> None:
    outcome = before_call(
        hooks(pre=["tests.support.hooks:reject_forbidden"]),
        claim(f"tell me {test_hooks.FORBIDDEN}"),
    )
    assert isinstance(outcome, Outcome)
    assert outcome.status == JobStatus.FAILED
    assert outcome.error == {
        "message": test_hooks.REJECTION,
        "type": "invalid_request_error",
        "param": None,
        "code": "rejected_by_hook",
        "status_code": 400,
    }


def test_a_broken_hook_fails_the_job_without_quoting_the_request() -> None:
    outcome = before_call(hooks(pre=["tests.support.hooks:broken"]), claim("private words"))
    assert isinstance(outcome, Outcome) and outcome.error is not None
    assert outcome.error["code"] == "hook_error"
    assert "KeyError" in outcome.error["message"]
    assert "private words" not in str(outcome.error)


def test_a_post_call_hook_rewrites_the_response_and_keeps_usage() -> None:
    response = {"choices": [{"message": {"role": "assistant", "content": "quiet"}}]}
    success = Outcome(JobStatus.SUCCEEDED, deployment_id="d", response=response)
    result = after_call(hooks(post=["tests.support.hooks:shout"]), claim("x"), success)
    assert result.response == {"choices": [{"message": {"role": "assistant", "content": "QUIET"}}]}
    assert response["choices"][0]["message"]["content"] == "quiet"
    assert result.deployment_id == "d" and result.status == JobStatus.SUCCEEDED


def test_a_post_call_rejection_fails_the_job() -> None:
    response = {"choices": [{"message": {"content": test_hooks.FORBIDDEN}}]}
    success = Outcome(JobStatus.SUCCEEDED, deployment_id="d", response=response)
    result = after_call(hooks(post=["tests.support.hooks:reject_forbidden"]), claim("x"), success)
    assert result.status == JobStatus.FAILED and result.response is None
    assert result.error is not None and result.error["code"] == "rejected_by_hook"
    assert result.deployment_id == "d"


def test_redact_emails_covers_parts_and_embeddings_input() -> None:
    parts = [{"type": "text", "text": "me@x.org"}, {"type": "image_url", "image_url": {"url": "u"}}]
    chat = redact_emails({"messages": [{"role": "user", "content": parts}]}, JOB)
    assert chat["messages"][0]["content"][0]["text"] == REDACTED_EMAIL
    assert chat["messages"][0]["content"][1] == parts[1]
    embed = redact_emails({"input": ["a@b.io says hi", "no address"]}, JOB)
    assert embed["input"] == [f"{REDACTED_EMAIL} says hi", "no address"]
    assert redact_emails({"input": "not an email: a@b"}, JOB)["input"] == "not an email: a@b"


@pytest.fixture(scope="module")
def database() -> Iterator[tuple[str, Engine]]:
    with migrated_database("llmfleet_test_hooks") as db:
        yield db


def test_a_post_call_hook_runs_off_the_event_loop(core: CoreFactory) -> None:
    # Given a worker whose fleet config names a post-call hook (user code, which may
    # block)
    c = core({"a": [ok]}, [deployment("main", "a")])
    c.ctx.hooks = hooks(post=["tests.support.hooks:where_am_i"])
    test_hooks.THREADS.clear()
    # When a job succeeds
    job = c.run()
    # Then the hook ran, on a thread of its own: the loop's calls never wait for it
    assert job.status == JobStatus.SUCCEEDED
    assert len(test_hooks.THREADS) == 1
    assert test_hooks.THREADS[0] != "llmfleet-loop"
