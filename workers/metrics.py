"""Worker metrics (Prometheus), counted where the execute path already holds the facts:
a few counter increments per job, no extra query and no extra Redis call.

- `llmfleet_jobs_finished_total{status, model, priority}`: a claim ended the job;
- `llmfleet_jobs_deferred_total{model, priority}`: a claim left it waiting for capacity;
- `llmfleet_job_pickup_seconds{queue}` (histogram): at claim, now - max(queued_at,
  not_before), i.e. the time the job waited in the queue while it could run;
- `llmfleet_attempt_duration_seconds{deployment, result}` (histogram, result ok/error)
  and `llmfleet_attempt_errors_total{deployment, error}`: per provider call;
- `llmfleet_tokens_total{model, customer, type}`: prompt / completion tokens, by the
  model group that served them, when the job's usage is stored;
- `llmfleet_cost_usd_total{model, customer}`: once a call's cost is known;
- `llmfleet_webhook_failures_total{final}`: per failed webhook send (final: gave up);
- `llmfleet_tenant_wait_seconds{tenant, tier}` (histogram): how long a job waited in a
  model group's fair room (models.fair_room) before it was let through.

Cardinality: `model` is the requested (or serving) model group, at most 200 distinct
values per process; `customer` is the job's owner (the key id, `master` for the master
key), at most 100; `tenant` (models.fair_share) at most 100; later values are reported
as `_other`. Deployments come from the
fleet config; error classes from the provider error tree; priority is 0-9.

One execute worker is one process (the threads pool), so each serves its own values
on `LLMFLEET_METRICS_PORT` (started at worker_init); with a pool of several processes
set `PROMETHEUS_MULTIPROC_DIR` and the endpoint aggregates them.
"""

from __future__ import annotations

from decimal import Decimal

from prometheus_client import Counter, Histogram, start_http_server

from models.contract import queue_for_priority
from models.metrics import LabelCap, exposition_registry
from models.tables import utcnow
from workers.jobstore import Claim
from workers.providers.base import Usage

__all__ = [
    "attempt_done",
    "cost_known",
    "job_claimed",
    "job_deferred",
    "job_ended",
    "serve",
    "tenant_waited",
    "tokens_used",
    "webhook_failed",
]

MODEL_LABELS = 200
CUSTOMER_LABELS = 100
PICKUP_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900)
ATTEMPT_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2, 4, 8, 15, 30, 60, 120, 300, 600)

JOBS_FINISHED = Counter(
    "llmfleet_jobs_finished",
    "Jobs ended by a worker's claim, by final status.",
    ["status", "model", "priority"],
)
JOBS_DEFERRED = Counter(
    "llmfleet_jobs_deferred",
    "Claims that left the job waiting for capacity.",
    ["model", "priority"],
)
PICKUP_SECONDS = Histogram(
    "llmfleet_job_pickup_seconds",
    "From enqueue (or the end of a wait for capacity) to a worker's claim.",
    ["queue"],
    buckets=PICKUP_BUCKETS,
)
ATTEMPT_SECONDS = Histogram(
    "llmfleet_attempt_duration_seconds",
    "Provider call latency per deployment.",
    ["deployment", "result"],
    buckets=ATTEMPT_BUCKETS,
)
ATTEMPT_ERRORS = Counter(
    "llmfleet_attempt_errors",
    "Failed provider calls per deployment and error class.",
    ["deployment", "error"],
)
TOKENS = Counter(
    "llmfleet_tokens",
    "Tokens used, by the model group that served them and the customer.",
    ["model", "customer", "type"],
)
COST = Counter(
    "llmfleet_cost_usd",
    "Cost of served calls in USD, once known, by model group and customer.",
    ["model", "customer"],
)
WEBHOOK_FAILURES = Counter(
    "llmfleet_webhook_failures",
    "Webhook sends that failed; final=true when the delivery gave up.",
    ["final"],
)

TENANT_WAIT_SECONDS = Histogram(
    "llmfleet_tenant_wait_seconds",
    "Time a job waited in a model group's fair room before it was let through.",
    ["tenant", "tier"],
    buckets=PICKUP_BUCKETS,
)

_models = LabelCap(MODEL_LABELS)
_customers = LabelCap(CUSTOMER_LABELS)
_tenants = LabelCap(CUSTOMER_LABELS)


def job_claimed(claim: Claim) -> None:
    """Time in the queue, from when the job became runnable to this claim."""
    if claim.queued_since is None:
        return
    waited = (utcnow() - claim.queued_since).total_seconds()
    queue = queue_for_priority(claim.priority, batch=claim.batch_id is not None)
    PICKUP_SECONDS.labels(queue).observe(max(0.0, waited))


def attempt_done(deployment_id: str, latency_s: float, error: BaseException | None) -> None:
    ATTEMPT_SECONDS.labels(deployment_id, "ok" if error is None else "error").observe(latency_s)
    if error is not None:
        ATTEMPT_ERRORS.labels(deployment_id, type(error).__name__).inc()


def job_ended(claim: Claim, status: str) -> None:
    JOBS_FINISHED.labels(str(status), _models(claim.model), str(claim.priority)).inc()


def job_deferred(claim: Claim) -> None:
    JOBS_DEFERRED.labels(_models(claim.model), str(claim.priority)).inc()


def tokens_used(claim: Claim, served_group: str | None, usage: Usage) -> None:
    model = _models(served_group or claim.model)
    customer = _customers(claim.owner)
    if usage.prompt_tokens:
        TOKENS.labels(model, customer, "prompt").inc(usage.prompt_tokens)
    if usage.completion_tokens:
        TOKENS.labels(model, customer, "completion").inc(usage.completion_tokens)


def cost_known(model: str, owner: str | None, cost: Decimal | None) -> None:
    """Count a call's cost once it has been priced (None: no price known)."""
    if cost is not None and cost > 0:
        COST.labels(_models(model), _customers(owner)).inc(float(cost))


def tenant_waited(tenant: str, tier: str, seconds: float) -> None:
    TENANT_WAIT_SECONDS.labels(_tenants(tenant), tier).observe(seconds)


def webhook_failed(final: bool) -> None:
    WEBHOOK_FAILURES.labels("true" if final else "false").inc()


def serve(port: int, addr: str) -> None:
    """Serve this process's metrics over HTTP from a daemon thread."""
    start_http_server(port, addr, registry=exposition_registry())
