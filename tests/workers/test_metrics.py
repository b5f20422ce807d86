"""Worker metrics: the values each lifecycle point adds (process-wide registry, so
every assertion is on a difference)."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

from prometheus_client import REGISTRY

from models.metrics import OTHER, LabelCap
from models.tables import JobStatus
from workers import metrics
from workers.jobstore import Claim
from workers.providers.base import Usage


def value(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def claim(**kw: object) -> Claim:
    base: dict[str, object] = {
        "job_id": "job_1",
        "attempt": 1,
        "kind": "chat.completions",
        "model": "metrics-model",
        "request": {},
        "deadline": None,
    }
    return Claim(**(base | kw))  # type: ignore[arg-type]


def test_pickup_is_observed_per_queue() -> None:
    since = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=3)
    before = value("llmfleet_job_pickup_seconds_count", queue="llmfleet.batch")
    below_2s = value("llmfleet_job_pickup_seconds_bucket", queue="llmfleet.batch", le="2.5")
    metrics.job_claimed(claim(priority=1, batch_id="batch_1", queued_since=since))
    assert value("llmfleet_job_pickup_seconds_count", queue="llmfleet.batch") == before + 1
    assert value("llmfleet_job_pickup_seconds_bucket", queue="llmfleet.batch", le="2.5") == below_2s
    assert value("llmfleet_job_pickup_seconds_sum", queue="llmfleet.batch") >= 3


def test_end_tokens_and_cost_by_model_and_customer() -> None:
    c = claim(priority=7, owner="key_abc")
    labels = {"status": "succeeded", "model": "metrics-model", "priority": "7"}
    ended = value("llmfleet_jobs_finished_total", **labels)
    prompt = {"model": "served-group", "customer": "key_abc", "type": "prompt"}
    tokens = value("llmfleet_tokens_total", **prompt)
    cost = value("llmfleet_cost_usd_total", model="served-group", customer="key_abc")
    metrics.job_ended(c, JobStatus.SUCCEEDED)
    metrics.tokens_used(c, "served-group", Usage(11, 4, 15))
    metrics.cost_known("served-group", "key_abc", Decimal("0.25"))
    metrics.cost_known("served-group", "key_abc", None)
    assert value("llmfleet_jobs_finished_total", **labels) == ended + 1
    assert value("llmfleet_tokens_total", **prompt) == tokens + 11
    completion = {**prompt, "type": "completion"}
    assert value("llmfleet_tokens_total", **completion) >= 4
    assert value("llmfleet_cost_usd_total", model="served-group", customer="key_abc") == cost + 0.25


def test_attempts_by_deployment_and_error_class() -> None:
    calls = "llmfleet_attempt_duration_seconds_count"
    ok = value(calls, deployment="dep-m", result="ok")
    errors = value("llmfleet_attempt_errors_total", deployment="dep-m", error="TimeoutError")
    metrics.attempt_done("dep-m", 0.2, None)
    metrics.attempt_done("dep-m", 1.5, TimeoutError())
    assert (
        value("llmfleet_attempt_duration_seconds_count", deployment="dep-m", result="ok") == ok + 1
    )
    assert value("llmfleet_attempt_errors_total", deployment="dep-m", error="TimeoutError") == (
        errors + 1
    )


def test_webhook_failures_say_whether_they_were_final() -> None:
    final = value("llmfleet_webhook_failures_total", final="true")
    metrics.webhook_failed(final=True)
    assert value("llmfleet_webhook_failures_total", final="true") == final + 1


def test_label_cap_bounds_the_values() -> None:
    cap = LabelCap(2)
    assert [cap("a"), cap("b"), cap("c"), cap("a"), cap(None)] == ["a", "b", OTHER, "a", OTHER]
    assert cap("x" * 100) == OTHER
    assert len(LabelCap(5)("y" * 100)) == 64
