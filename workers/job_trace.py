"""A job's worker spans (models.tracing), written once its claim has ended and been
stored, from what the claim recorded: the wait in the queue, the run, and a GenAI
client span per provider call (OpenTelemetry's GenAI semantic conventions), each at
the times it really took. Nothing of the request or the answer is recorded."""

from __future__ import annotations

import datetime as dt
import time

from opentelemetry import trace

from models import tracing
from models.contract import EMBEDDINGS
from models.fleet_config import FleetConfig
from workers.job_end import Ending

__all__ = ["trace_endings"]

#: GenAI semantic conventions' `gen_ai.provider.name` for the fleet's providers (the
#: rest are named by their prefix).
PROVIDER_NAMES = {
    "azure": "azure.ai.openai",
    "bedrock": "aws.bedrock",
    "gemini": "gcp.gemini",
    "mistral": "mistral_ai",
    "xai": "x_ai",
}


def _ns(moment: dt.datetime) -> int:
    return int(moment.timestamp() * 1_000_000_000)


def trace_endings(config: FleetConfig, endings: list[Ending]) -> None:
    """Spans for each ended claim, under its job's intake span when it has one."""
    if not tracing.enabled():
        return
    tracer = tracing.tracer()
    deployments = {d.id: d for d in config.model_list}
    now = time.time_ns()
    for ending in endings:
        claimed, outcome = ending.claimed, ending.outcome
        parent = tracing.context_of(claimed.trace_context)
        job: dict[str, str | int] = {
            "llmfleet.job.id": claimed.job_id,
            "llmfleet.job.claim": claimed.attempt,
        }
        started = _ns(claimed.started_at) if claimed.started_at else now
        if claimed.queued_since is not None:
            wait = tracer.start_span(
                "llmfleet.queue_wait",
                context=parent,
                start_time=min(_ns(claimed.queued_since), started),
                attributes=job,
            )
            wait.end(end_time=started)
        run = tracer.start_span(
            "llmfleet.run",
            context=parent,
            start_time=started,
            attributes={
                **job,
                "llmfleet.job.status": str(outcome.status),
                "llmfleet.model_group": outcome.served_group or claimed.model,
                **({"llmfleet.batch.id": claimed.batch_id} if claimed.batch_id else {}),
            },
        )
        inside = trace.set_span_in_context(run)
        operation = "embeddings" if claimed.kind == EMBEDDINGS else "chat"
        for i, record in enumerate(ending.records):
            dep = deployments.get(record.deployment_id)
            params = dep.litellm_params if dep is not None else None
            model = params.provider_model if params is not None else claimed.model
            provider = params.provider if params is not None else "unknown"
            attributes: dict[str, str | int] = {
                "gen_ai.operation.name": operation,
                "gen_ai.provider.name": PROVIDER_NAMES.get(provider, provider),
                "gen_ai.request.model": model,
                "llmfleet.deployment.id": record.deployment_id,
                "llmfleet.model_group": record.model_group,
            }
            if record.status_code is not None:
                attributes["http.response.status_code"] = record.status_code
            last = i == len(ending.records) - 1
            if last and record.error_class is None and outcome.usage is not None:
                attributes["gen_ai.usage.input_tokens"] = outcome.usage.prompt_tokens
                attributes["gen_ai.usage.output_tokens"] = outcome.usage.completion_tokens
            call = tracer.start_span(
                f"{operation} {model}",
                context=inside,
                kind=trace.SpanKind.CLIENT,
                start_time=_ns(record.started_at),
                attributes=attributes,
            )
            if record.error_class is not None:
                call.set_attribute("error.type", record.error_class)
                call.set_status(trace.StatusCode.ERROR, record.error_class)
            call.end(end_time=_ns(record.started_at) + record.latency_ms * 1_000_000)
        run.end(end_time=max(now, started))
