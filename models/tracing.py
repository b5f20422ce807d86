"""OpenTelemetry: a trace per job, exported by OTLP (HTTP/protobuf) when
`OTEL_EXPORTER_OTLP_ENDPOINT` (or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) is set.

The API's intake span is the job's root (a child of the caller's `traceparent`, if it
sent one); its context is stored on the job row (`trace_context`), so that the worker
that runs the job, on any machine, adds its spans to the same trace: the wait in the
queue, the run, and one GenAI client span per provider call (docs/OPERATIONS.md,
"Traces"). Unset, nothing is installed: no provider, no span, no column written, so
tracing costs nothing."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

__all__ = ["context_of", "enabled", "setup", "shutdown", "traceparent", "tracer"]

log = logging.getLogger(__name__)

ENDPOINT_VARIABLES = ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
_PROPAGATOR = TraceContextTextMapPropagator()
_enabled = False


def setup(service: str, environ: Mapping[str, str] | None = None) -> bool:
    """Install the tracer provider of this process (`service`: its `service.name`,
    unless OTEL_SERVICE_NAME says otherwise) if an OTLP endpoint is set."""
    global _enabled
    environ = os.environ if environ is None else environ
    if _enabled or not any(environ.get(name) for name in ENDPOINT_VARIABLES):
        return _enabled
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    name = environ.get("OTEL_SERVICE_NAME") or service
    provider = TracerProvider(resource=Resource.create({"service.name": name}))
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    trace.set_tracer_provider(provider)
    _enabled = True
    log.info("traces exported by OTLP as service %s", name)
    return True


def enabled() -> bool:
    return _enabled


def shutdown() -> None:
    """Export what is buffered, at the process's end."""
    provider = trace.get_tracer_provider()
    if _enabled and hasattr(provider, "shutdown"):
        provider.shutdown()


def tracer() -> trace.Tracer:
    return trace.get_tracer("llmfleet")


def traceparent(span: trace.Span) -> str | None:
    """The W3C `traceparent` of `span`, to store beside its job."""
    carrier: dict[str, str] = {}
    _PROPAGATOR.inject(carrier, trace.set_span_in_context(span))
    return carrier.get("traceparent")


def context_of(stored: str | None) -> Context | None:
    """The context a stored `traceparent` names (None: the job has no trace)."""
    if not stored:
        return None
    return _PROPAGATOR.extract({"traceparent": stored})
