"""A trace per job, exported by OTLP to a collector in the test process: the caller's
request, the API's intake, the wait in the queue, the worker's run and each provider
call (GenAI semantic conventions), all in the caller's trace."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest
from opentelemetry import trace

from models import tracing
from tests.conftest import migrated_database
from tests.support.fleet import MASTER_KEY, MiniFleet, deployment, mini_fleet
from tests.support.otlp import Collector, ReceivedSpan

CALLER_TRACE = "0af7651916cd43dd8448eb211c80319c"
CALLER_SPAN = "b7ad6b7169203331"


@pytest.fixture(scope="module")
def collector() -> Iterator[Collector]:
    started = Collector()
    yield started
    started.close()


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory, collector: Collector) -> Iterator[MiniFleet]:
    log_dir: Path = tmp_path_factory.mktemp("traced-fleet")
    env: dict[str, str | None] = {
        "OTEL_EXPORTER_OTLP_ENDPOINT": collector.url,
        "OTEL_BSP_SCHEDULE_DELAY": "100",
    }

    def config(urls: dict[str, str]) -> dict[str, Any]:
        return {"model_list": [deployment("mock-a", urls["mock"])]}

    with (
        migrated_database("llmfleet_test_tracing") as (url, engine),
        mini_fleet(log_dir, url, engine, config, {"mock": []}, dbs=(7, 8), extra_env=env) as f,
    ):
        yield f


def spans_of(collector: Collector, trace_id: str, names: set[str]) -> list[ReceivedSpan]:
    """The trace's spans once those named, and the request's server span (it ends last,
    after the answer, so it may come in a later export), have all arrived."""
    server = trace.SpanKind.SERVER.value + 1  # OTLP's numbering
    until = time.monotonic() + 30
    while time.monotonic() < until:
        spans = [s for s in collector.received() if s.trace_id == trace_id]
        if names <= {s.name for s in spans} and any(s.kind == server for s in spans):
            return spans
        time.sleep(0.1)
    raise AssertionError(f"spans seen: {[(s.name, s.trace_id) for s in collector.received()]}")


def test_a_sync_call_is_one_trace_from_the_callers_request_to_the_provider_call(
    fleet: MiniFleet, collector: Collector
) -> None:
    # Given a caller that sends its own trace context
    client = openai.OpenAI(base_url=f"{fleet.api_url}/v1", api_key=MASTER_KEY)
    traceparent = f"00-{CALLER_TRACE}-{CALLER_SPAN}-01"
    # When it makes a call
    reply = client.chat.completions.create(
        model="mock-model",
        messages=[{"role": "user", "content": "a private prompt"}],
        extra_headers={"traceparent": traceparent},
    )
    # Then the fleet's spans are all in the caller's trace, nested as the job went
    names = {"llmfleet.intake", "llmfleet.queue_wait", "llmfleet.run", "chat mock-model"}
    spans = spans_of(collector, CALLER_TRACE, names)
    by_name = {s.name: s for s in spans}
    server = next(s for s in spans if s.kind == trace.SpanKind.SERVER.value + 1)
    assert server.parent_id == CALLER_SPAN and server.service == "llmfleet-api"
    intake = by_name["llmfleet.intake"]
    assert intake.parent_id == server.span_id
    wait, run, call = (
        by_name["llmfleet.queue_wait"],
        by_name["llmfleet.run"],
        by_name["chat mock-model"],
    )
    assert wait.parent_id == run.parent_id == intake.span_id
    assert wait.service == run.service == call.service == "llmfleet-worker"
    assert call.parent_id == run.span_id
    assert wait.end_ns <= run.start_ns <= call.start_ns <= call.end_ns <= run.end_ns
    # the provider call as OpenTelemetry's GenAI conventions name it
    assert call.kind == trace.SpanKind.CLIENT.value + 1
    assert call.attributes["gen_ai.operation.name"] == "chat"
    assert call.attributes["gen_ai.provider.name"] == "openai_compatible"
    assert call.attributes["gen_ai.request.model"] == "mock-model"
    assert reply.usage is not None
    assert call.attributes["gen_ai.usage.input_tokens"] == reply.usage.prompt_tokens
    assert call.attributes["gen_ai.usage.output_tokens"] == reply.usage.completion_tokens
    assert "error.type" not in call.attributes
    assert run.attributes["llmfleet.job.status"] == "succeeded"
    # and nothing of the prompt or the answer is in any of them
    assert not [s for s in spans if "private prompt" in repr(s.attributes)]


def test_a_failed_provider_call_is_an_error_span(fleet: MiniFleet, collector: Collector) -> None:
    job_id = fleet.submit("[mock:status=400]")
    assert fleet.wait(job_id)["status"] == "failed"
    until = time.monotonic() + 30
    while not (
        calls := [
            s
            for s in collector.received()
            if s.name == "chat mock-model" and s.attributes.get("error.type")
        ]
    ):
        assert time.monotonic() < until
        time.sleep(0.1)
    assert calls[0].attributes["http.response.status_code"] == 400
    assert calls[0].status_code == trace.StatusCode.ERROR.value


def test_without_an_endpoint_nothing_is_installed() -> None:
    assert tracing.setup("llmfleet-test", environ={}) is False
    assert not tracing.enabled()
    assert not hasattr(trace.get_tracer_provider(), "shutdown")  # the API's no-op provider
