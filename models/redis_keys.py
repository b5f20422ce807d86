"""Every Redis key, channel and TTL the fleet uses (the broker's own keys aside).

Router state is per deployment and shared by every worker on every machine; nothing
about a deployment's health lives in a worker's memory.
"""

from __future__ import annotations

from models import fleet_name

__all__ = [
    "AIMD_TTL_MS",
    "BATCH_TICK_LOCK",
    "BATCH_TICK_LOCK_TTL_MS",
    "BUDGET_TTL_EXTRA_MS",
    "CACHE_LOCK_MARGIN_MS",
    "CACHE_POLL_S",
    "DELAYED_JOBS",
    "ENTITLEMENT_HOLD_TTL_S",
    "ENTITLEMENT_REFRESH_LOCK",
    "ENTITLEMENT_REFRESH_LOCK_TTL_MS",
    "ENTITLEMENT_TRACKED",
    "ENTITLEMENT_UNKNOWN_TTL_S",
    "FAILS_WINDOW_MS",
    "JOB_CANCEL_TTL_S",
    "JOB_EVENTS_CHANNEL",
    "JOB_STREAM_MAXLEN",
    "JOB_STREAM_TTL_AFTER_END_S",
    "JOB_STREAM_TTL_S",
    "KEY_RPM_WINDOW_MS",
    "KEY_TPM_KEY_TTL_MS",
    "KEY_TPM_WINDOW_MS",
    "LAGO_DRAIN_LOCK",
    "LAGO_DRAIN_LOCK_TTL_MS",
    "LATENCY_TTL_MS",
    "RELAY_POKE_MAXLEN",
    "RELAY_POKE_TTL_S",
    "RPM_WINDOW_MS",
    "THROTTLED_RECENTLY_MS",
    "TPM_KEY_TTL_MS",
    "TPM_WINDOW_MS",
    "budget_alert",
    "budget_counter",
    "budget_hold",
    "budget_reserved",
    "cache_keys",
    "deployment_keys",
    "entitlement_customer_holds",
    "entitlement_subscription_holds",
    "entitlement_view",
    "entitlement_wallet",
    "job_cancel",
    "job_stream",
    "key_limit_keys",
    "relay_pokes",
]

#: Every key of the fleet's state starts with it (models.fleet_name), read once when
#: the process first imports this module: a fleet's processes share one name.
PREFIX = f"llmfleet:{fleet_name.current()}"

#: Pub/sub channel on which workers announce a job's end (payload: the job id), so
#: long-polling API requests wake without polling the database.
JOB_EVENTS_CHANNEL = f"{PREFIX}:job-events"

#: One batch tick at a time across the fleet (workers/fleet_lock.py: its holder renews
#: it every third of the TTL, so a holder that dies frees it within the TTL).
BATCH_TICK_LOCK = f"{PREFIX}:batch-tick-lock"
BATCH_TICK_LOCK_TTL_MS = 10_000

#: Spend so far in a budget's current period (a float of currency units), rebuilt
#: from the spend rows whenever it is missing; kept a day past the period's end.
BUDGET_TTL_EXTRA_MS = 86_400_000


def budget_counter(budget_id: str, period_start: int) -> str:
    return f"{PREFIX}:budget:{budget_id}:{period_start}"


def budget_alert(budget_id: str, period_start: int) -> str:
    """Set once the soft limit has been reported for the period."""
    return f"{PREFIX}:budget-alert:{budget_id}:{period_start}"


def budget_reserved(budget_id: str, period_start: int) -> str:
    """Cost reserved by jobs in flight against a budget's period: a sorted set of job ids
    (score: when the reservation lapses), their amounts in the hash `<key>:amounts`."""
    return f"{PREFIX}:budget-reserved:{budget_id}:{period_start}"


def budget_hold(job_id: str) -> str:
    """The reservation sets a job holds, so that its end releases them all."""
    return f"{PREFIX}:budget-hold:{job_id}"


#: One Lago drain at a time across the fleet.
LAGO_DRAIN_LOCK = f"{PREFIX}:lago-drain-lock"
LAGO_DRAIN_LOCK_TTL_MS = 10_000

# The Lago entitlement view (models/entitlement.py): written by the API's Lago webhooks
# and the workers' refresher, read by the pre-check before a job's first call.
#: Sorted set of the subscriptions jobs were checked for, scored by last check (s):
#: the refresher keeps these fresh and forgets the idle ones.
ENTITLEMENT_TRACKED = f"{PREFIX}:entitlement:tracked"
#: One refresh at a time across the fleet.
ENTITLEMENT_REFRESH_LOCK = f"{PREFIX}:entitlement:refresh-lock"
ENTITLEMENT_REFRESH_LOCK_TTL_MS = 10_000
#: "Lago could not be reached" is remembered this long (at most the view's TTL), so
#: an outage costs one lookup per subscription per interval, not one per job.
ENTITLEMENT_UNKNOWN_TTL_S = 10
#: A hold outlives a missed lifting webhook by at most about a billing period.
ENTITLEMENT_HOLD_TTL_S = 31 * 86_400


def entitlement_view(subscription: str) -> str:
    """A subscription's view (JSON, see models/entitlement.View); its TTL is
    LLMFLEET_ENTITLEMENT_TTL."""
    return f"{PREFIX}:entitlement:sub:{{{subscription}}}:view"


def entitlement_subscription_holds(subscription: str) -> str:
    """Hash hold kind -> reason: denials Lago's subscription status does not show."""
    return f"{PREFIX}:entitlement:sub:{{{subscription}}}:holds"


def entitlement_customer_holds(customer_id: str) -> str:
    """Hash hold kind -> reason on every subscription billed to one of our customers."""
    return f"{PREFIX}:entitlement:customer:{{{customer_id}}}:holds"


def entitlement_wallet(lago_wallet_id: str) -> str:
    """The customer id of a depleted Lago wallet, so its top-up lifts the hold."""
    return f"{PREFIX}:entitlement:wallet:{lago_wallet_id}"


#: Sorted set of jobs waiting for capacity: member "job_id|priority", score = due ms.
DELAYED_JOBS = f"{PREFIX}:delayed"

#: A marker with no TTL, set once: when it is gone, this Redis lost its data (FLUSHALL,
#: a restart without persistence), with it every message waiting in a Redis broker and
#: the delayed set, and the sweeper publishes the queued jobs again from the database.
EPOCH = f"{PREFIX}:epoch"

#: rpm: a sliding window of call start times (exact at the limit). A call stays in it
#: for the window plus a guard, so that the jitter between admitting a call and the
#: provider receiving it cannot put rpm + 1 calls into one of the provider's windows.
RPM_WINDOW_MS = 60_000
RPM_GUARD_MS = 1_000
#: tpm: fixed one-minute windows of tokens used, keyed by the minute.
TPM_WINDOW_MS = 60_000
TPM_KEY_TTL_MS = 2 * TPM_WINDOW_MS
#: allowed_fails counts failures in a fixed minute that starts at the first failure.
FAILS_WINDOW_MS = 60_000
#: Latency and adaptive-limit state is dropped after a day without traffic.
LATENCY_TTL_MS = 86_400_000
#: The adaptive limit is forgotten after 10 idle minutes, so capacity is re-probed.
AIMD_TTL_MS = 600_000
#: A deployment that answered 429 this recently (its adaptive hash's `last_decrease`)
#: counts as out of capacity, not out of order: a job waits for it rather than fail.
THROTTLED_RECENTLY_MS = 60_000

#: The order in which a deployment's keys are passed to the router's Lua scripts.
DEPLOYMENT_KEY_NAMES = ("cooldown", "inflight", "rpm", "tpm", "latency", "aimd", "fails")


def deployment_keys(deployment_id: str) -> list[str]:
    """The keys of one deployment, in DEPLOYMENT_KEY_NAMES order. The tpm key is a
    prefix; the script appends the current minute."""
    return [f"{PREFIX}:dep:{{{deployment_id}}}:{name}" for name in DEPLOYMENT_KEY_NAMES]


# Virtual keys' limits (fleet-wide, read and written by models/key_limits.lua).
#: rpm: a sliding window of the key's accepted interactive jobs (exact).
KEY_RPM_WINDOW_MS = 60_000
#: tpm: fixed one-minute windows of estimated-then-corrected tokens, keyed by minute.
KEY_TPM_WINDOW_MS = 60_000
KEY_TPM_KEY_TTL_MS = 2 * KEY_TPM_WINDOW_MS
#: The order in which a key's limit keys are passed to key_limits.lua.
KEY_LIMIT_KEY_NAMES = ("rpm", "tpm", "active")


def key_limit_keys(key_id: str) -> list[str]:
    """rpm (sorted set of accept times), tpm (prefix; the script appends the minute),
    active (sorted set of the key's queued or running interactive jobs, scored by the
    job's deadline so that a job whose end was never reported frees its slot then)."""
    return [f"{PREFIX}:key:{{{key_id}}}:{name}" for name in KEY_LIMIT_KEY_NAMES]


# The response cache (workers/cache.py, cache.lua). Entries are scoped by owner so a
# response never crosses tenants.
#: A lock outlives its holder's call by this much (the holder's timeout + margin).
CACHE_LOCK_MARGIN_MS = 30_000
#: How often a job waiting for an identical job's response looks again.
CACHE_POLL_S = 0.05


def cache_keys(owner: str, digest: str) -> list[str]:
    """The cached response and the single-flight lock of one normalized request."""
    base = f"{PREFIX}:cache:{{{owner}:{digest}}}"
    return [f"{base}:value", f"{base}:lock"]


# Streamed jobs (models/stream_events.py): workers append, the API relays.
#: Entries a job's stream keeps (approximately: XADD MAXLEN ~); a longer generation
#: loses its oldest, which a reader that falls that far behind gets from the job's row.
JOB_STREAM_MAXLEN = 20_000
#: A stream's lifetime from its first delta, renewed every minute while its job runs...
JOB_STREAM_TTL_S = 3_600
#: ... and once the job has ended: long enough for a dropped client to come back.
JOB_STREAM_TTL_AFTER_END_S = 600
#: A cancel asked for through the API, seen by the worker streaming the job within a
#: second (the row's `cancel_requested` stays the truth).
JOB_CANCEL_TTL_S = 3_600


def job_stream(job_id: str) -> str:
    """The Redis Stream of a streamed job's events."""
    return f"{PREFIX}:stream:{{{job_id}}}"


def job_cancel(job_id: str) -> str:
    """Set when a running job is asked to cancel."""
    return f"{PREFIX}:cancel:{{{job_id}}}"


#: An API process's stream hub is poked through a stream of its own when a relay
#: starts following a stream (producer_api/stream_hub.py); a few entries suffice, and
#: a process that died leaves it for an hour.
RELAY_POKE_MAXLEN = 100
RELAY_POKE_TTL_S = 3_600


def relay_pokes(hub: str) -> str:
    return f"{PREFIX}:relay-pokes:{hub}"
