"""`llmfleet keys create|list|update|rotate|revoke`, `llmfleet teams create|list`,
`llmfleet customers create|list`: the admin's tenancy commands, over HTTP with the
master key (`--api-key`, LLMFLEET_API_KEY, or beside `llmfleet up`).

A new or rotated key is printed alone on stdout (`KEY=$(llmfleet keys create ...)`);
what it allows goes to stderr. `--json` prints the API's answer instead.
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any

import typer
from rich.console import Console

from models.wire import parse_duration
from producer_api.cli import tenants
from producer_api.cli.batch import _metadata
from producer_api.cli.client import ApiClient, resolve_api
from producer_api.cli.tenants import (
    Metadata,
    SubscriptionOption,
    TierOption,
    Url,
    WeightOption,
    print_json,
    table,
)

__all__ = ["install", "keys_app"]

keys_app = typer.Typer(
    help="Virtual API keys: limits, model access, expiry (needs the master key).",
    epilog='Examples: `llmfleet keys create --team search --models "gpt-4o*" --rpm 60` · '
    "`llmfleet keys list` · `llmfleet keys revoke key_abc123`",
    no_args_is_help=True,
    rich_markup_mode="markdown",
)


def install(app: typer.Typer) -> None:
    """Register the three command groups on the `llmfleet` app."""
    app.add_typer(keys_app, name="keys")
    tenants.install(app)


ApiKey = Annotated[str | None, typer.Option(help="The master key (LLMFLEET_API_KEY).")]
AsJson = Annotated[bool, typer.Option("--json", help="Print the API's JSON answer.")]
Limit = Annotated[int, typer.Option(min=1, max=100, help="How many to list.")]
Alias = Annotated[str | None, typer.Option(help="A name to tell the key by.")]
Team = Annotated[str | None, typer.Option("--team", help="Team id or name.")]
Customer = Annotated[str | None, typer.Option("--customer", help="Customer id or name.")]
Models = Annotated[
    str | None,
    typer.Option(help='Model groups, comma-separated, wildcards allowed: "gpt-4o*,mock-model".'),
]
Rpm = Annotated[int | None, typer.Option(min=1, help="Interactive jobs per minute.")]
Tpm = Annotated[int | None, typer.Option(min=1, help="Tokens per minute (interactive).")]
Parallel = Annotated[
    int | None, typer.Option("--max-parallel", min=1, help="Interactive jobs queued or running.")
]
Priority = Annotated[
    int | None, typer.Option("--max-priority", min=0, max=9, help="Priority ceiling (0-9).")
]
BatchLines = Annotated[
    int | None,
    typer.Option("--max-batch-lines", min=0, help="Batch lines queued or running at once."),
]
CacheTtl = Annotated[
    int | None, typer.Option("--cache-ttl", min=0, help="Cache every response this long (s).")
]
Expires = Annotated[
    str | None, typer.Option(help="'30d', '12h', or a date (2027-01-01T00:00:00Z).")
]


@keys_app.command("create")
def create_key(
    alias: Alias = None,
    team: Team = None,
    customer: Customer = None,
    models: Models = None,
    rpm: Rpm = None,
    tpm: Tpm = None,
    max_parallel: Parallel = None,
    max_priority: Priority = None,
    max_batch_lines: BatchLines = None,
    cache_ttl: CacheTtl = None,
    expires: Expires = None,
    subscription: SubscriptionOption = None,
    tier: TierOption = None,
    weight: WeightOption = None,
    metadata: Metadata = None,
    as_json: AsJson = False,
    url: Url = None,
    api_key: ApiKey = None,
) -> None:
    """Create a key; it is printed once, on stdout. Store it now.

    Example: `llmfleet keys create --team search --models "gpt-4o*,mock-model" --rpm 60`
    """
    body = _key_body(locals())
    with ApiClient(*resolve_api(url, api_key)) as api:
        key = api.create_key(body)
    _show_new_key(key, as_json, "created")


@keys_app.command("update")
def update_key(
    key_id: Annotated[str, typer.Argument(help="The key's id (key_...).")],
    alias: Alias = None,
    team: Team = None,
    customer: Customer = None,
    models: Models = None,
    rpm: Rpm = None,
    tpm: Tpm = None,
    max_parallel: Parallel = None,
    max_priority: Priority = None,
    max_batch_lines: BatchLines = None,
    cache_ttl: CacheTtl = None,
    expires: Expires = None,
    subscription: SubscriptionOption = None,
    tier: TierOption = None,
    weight: WeightOption = None,
    metadata: Metadata = None,
    as_json: AsJson = False,
    url: Url = None,
    api_key: ApiKey = None,
) -> None:
    """Change what a key allows; options not given stay as they are.

    Example: `llmfleet keys update key_0192... --rpm 120 --models "*"`
    """
    body = _key_body(locals())
    with ApiClient(*resolve_api(url, api_key)) as api:
        key = api.update_key(key_id, body)
    print_json(key) if as_json else _describe(key)


@keys_app.command("list")
def list_keys(
    team: Team = None,
    customer: Customer = None,
    limit: Limit = 50,
    as_json: AsJson = False,
    url: Url = None,
    api_key: ApiKey = None,
) -> None:
    """The newest keys, with what each allows (never the key itself).

    Example: `llmfleet keys list --team search`
    """
    params: dict[str, Any] = {"limit": limit, "team_id": team, "customer_id": customer}
    with ApiClient(*resolve_api(url, api_key)) as api:
        page = api.list_keys({k: v for k, v in params.items() if v is not None})
    if as_json:
        print_json(page)
        return
    rows = table("id", "alias", "key", "status", "owner", "models", "limits")
    for key in page["data"]:
        owner = key["team_id"] or key["customer_id"] or "-"
        models = ",".join(key["models"]) if key["models"] is not None else "*"
        prefix = key["key_prefix"] + "..."
        row = (key["id"], key["alias"] or "", prefix, key["status"], owner, models)
        rows.add_row(*row, " ".join(_limits(key)) or "-")
    Console().print(rows)


@keys_app.command("rotate")
def rotate_key(
    key_id: Annotated[str, typer.Argument(help="The key's id (key_...).")],
    as_json: AsJson = False,
    url: Url = None,
    api_key: ApiKey = None,
) -> None:
    """A new secret for the key (same id, limits, jobs); the old one stops at once.

    Example: `llmfleet keys rotate key_0192...`
    """
    with ApiClient(*resolve_api(url, api_key)) as api:
        key = api.rotate_key(key_id)
    _show_new_key(key, as_json, "rotated")


@keys_app.command("revoke")
def revoke_key(
    key_id: Annotated[str, typer.Argument(help="The key's id (key_...).")],
    url: Url = None,
    api_key: ApiKey = None,
) -> None:
    """Revoke a key for good: it answers 401 from now on.

    Example: `llmfleet keys revoke key_0192...`
    """
    with ApiClient(*resolve_api(url, api_key)) as api:
        key = api.revoke_key(key_id)
    typer.echo(f"revoked {key['id']} ({key['key_prefix']}...)")


#: CLI option -> API field of a key.
_KEY_FIELDS = {
    "alias": "alias",
    "team": "team_id",
    "customer": "customer_id",
    "rpm": "rpm",
    "tpm": "tpm",
    "max_parallel": "max_parallel_jobs",
    "max_priority": "max_priority",
    "max_batch_lines": "max_batch_lines",
    "cache_ttl": "cache_ttl",
    "subscription": "external_subscription_id",
    "tier": "tier",
    "weight": "weight",
}


def _key_body(options: dict[str, Any]) -> dict[str, Any]:
    """The API body of the options given (None: not given)."""
    body = {api: options[cli] for cli, api in _KEY_FIELDS.items() if options[cli] is not None}
    if options["models"] is not None:
        body["models"] = [m.strip() for m in options["models"].split(",") if m.strip()]
    if options["metadata"]:
        body["metadata"] = _metadata(options["metadata"])
    if options["expires"] is not None:
        body.update(_expiry(options["expires"]))
    return body


def _expiry(value: str) -> dict[str, str]:
    try:
        parse_duration(value)
        return {"duration": value}
    except ValueError:
        pass
    try:
        when = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise typer.BadParameter(
            "expected a duration ('30d') or a date ('2027-01-01T00:00:00Z')", param_hint="--expires"
        ) from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return {"expires_at": when.isoformat()}


def _show_new_key(key: dict[str, Any], as_json: bool, verb: str) -> None:
    if as_json:
        print_json(key)
        return
    typer.echo(key["key"])
    _describe(key, f"{verb} {key['id']}")
    typer.secho(
        "This key is shown only now: store it (rotate the key to get a new one).",
        err=True,
        fg="yellow",
    )


def _describe(key: dict[str, Any], title: str | None = None) -> None:
    """What the key allows, on stderr."""
    err = Console(stderr=True)
    err.print(title or key["id"], f"({key['alias']})" if key["alias"] else "", key["status"])
    owner = f"team {key['team_id']}" if key["team_id"] else None
    owner = owner or (f"customer {key['customer_id']}" if key["customer_id"] else "no owner")
    models = ", ".join(key["models"]) if key["models"] is not None else "every model"
    err.print(f"  {owner}; models: {models}; limits: {' '.join(_limits(key)) or 'none'}")
    if key["expires_at"]:
        err.print(f"  expires {dt.datetime.fromtimestamp(key['expires_at'], dt.UTC).isoformat()}")


def _limits(key: dict[str, Any]) -> list[str]:
    names = (
        "rpm",
        "tpm",
        "max_parallel_jobs",
        "max_priority",
        "max_batch_lines",
        "cache_ttl",
        "tier",
        "weight",
    )
    return [f"{name}={key[name]}" for name in names if key[name] is not None]
