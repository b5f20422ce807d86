"""`llmfleet teams create|update|list`, `llmfleet customers create|update|list`: the
owners of keys, over HTTP with the master key (`--api-key`, LLMFLEET_API_KEY, or beside
`llmfleet up`). A team or customer may carry a fair-share tier and weight, which its
keys' jobs get when capacity is short (docs/ROUTING.md, "Fair share between tenants").
"""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from models.fair_share import MAX_WEIGHT, MIN_WEIGHT, TIERS
from producer_api.cli.batch import _metadata
from producer_api.cli.client import ApiClient, resolve_api

__all__ = ["customers_app", "install", "print_json", "table", "teams_app"]

teams_app = typer.Typer(
    help="Teams that keys belong to.",
    epilog="Examples: `llmfleet teams create search --tier production --weight 3` · "
    "`llmfleet teams update team_abc123 --weight 1` · `llmfleet teams list`",
    no_args_is_help=True,
    rich_markup_mode="markdown",
)
customers_app = typer.Typer(
    help="Customers that keys belong to (billed to their Lago subscription).",
    epilog="Examples: `llmfleet customers create acme --subscription sub_acme_2026` · "
    "`llmfleet customers update cust_abc123 --tier batch` · `llmfleet customers list`",
    no_args_is_help=True,
    rich_markup_mode="markdown",
)


def install(app: typer.Typer) -> None:
    app.add_typer(teams_app, name="teams")
    app.add_typer(customers_app, name="customers")


Url = Annotated[str | None, typer.Option(help="API URL (LLMFLEET_URL).")]
MasterKey = Annotated[str | None, typer.Option("--api-key", help="The master key.")]
Limit = Annotated[int, typer.Option(min=1, max=100, help="How many to list.")]
Metadata = Annotated[
    list[str] | None, typer.Option("--metadata", help="key=value; repeat for more.")
]
SubscriptionOption = Annotated[
    str | None, typer.Option("--subscription", help="Lago external_subscription_id.")
]
TierOption = Annotated[
    str | None,
    typer.Option(
        help=f"Fair-share tier when capacity is short: {', '.join(TIERS)} (first goes first)."
    ),
]
WeightOption = Annotated[
    float | None,
    typer.Option(
        min=MIN_WEIGHT, max=MAX_WEIGHT, help="Fair-share weight within the tier (default 1)."
    ),
]
Name = Annotated[str, typer.Argument(help="A unique name.")]
NewName = Annotated[str | None, typer.Option("--name", help="A new unique name.")]


def _body(**given: Any) -> dict[str, Any]:
    """The API body of the options given (None: not given)."""
    if given.get("tier") is not None and given["tier"] not in TIERS:
        raise typer.BadParameter(f"one of {', '.join(TIERS)}", param_hint="--tier")
    if given.get("metadata"):
        given["metadata"] = _metadata(given["metadata"])
    return {name: value for name, value in given.items() if value is not None}


@teams_app.command("create")
def create_team(
    name: Name,
    tier: TierOption = None,
    weight: WeightOption = None,
    metadata: Metadata = None,
    url: Url = None,
    api_key: MasterKey = None,
) -> None:
    """Create a team; prints its id.

    Example: `llmfleet teams create search --tier production --metadata cost_center=42`
    """
    body = _body(name=name, tier=tier, weight=weight, metadata=metadata)
    with ApiClient(*resolve_api(url, api_key)) as api:
        typer.echo(api.create_tenant("teams", body)["id"])


@teams_app.command("update")
def update_team(
    team_id: Annotated[str, typer.Argument(help="The team's id (team_...).")],
    name: NewName = None,
    tier: TierOption = None,
    weight: WeightOption = None,
    metadata: Metadata = None,
    url: Url = None,
    api_key: MasterKey = None,
) -> None:
    """Change a team; options not given stay as they are.

    Example: `llmfleet teams update team_0192... --weight 3`
    """
    body = _body(name=name, tier=tier, weight=weight, metadata=metadata)
    with ApiClient(*resolve_api(url, api_key)) as api:
        _describe(api.update_tenant("teams", team_id, body))


@teams_app.command("list")
def list_teams(limit: Limit = 50, url: Url = None, api_key: MasterKey = None) -> None:
    """The newest teams.

    Example: `llmfleet teams list`
    """
    _list_tenants("teams", limit, url, api_key)


@customers_app.command("create")
def create_customer(
    name: Name,
    subscription: SubscriptionOption = None,
    tier: TierOption = None,
    weight: WeightOption = None,
    metadata: Metadata = None,
    url: Url = None,
    api_key: MasterKey = None,
) -> None:
    """Create a customer; prints its id.

    Example: `llmfleet customers create acme --subscription sub_acme_2026`
    """
    body = _body(
        name=name,
        external_subscription_id=subscription,
        tier=tier,
        weight=weight,
        metadata=metadata,
    )
    with ApiClient(*resolve_api(url, api_key)) as api:
        typer.echo(api.create_tenant("customers", body)["id"])


@customers_app.command("update")
def update_customer(
    customer_id: Annotated[str, typer.Argument(help="The customer's id (cust_...).")],
    name: NewName = None,
    subscription: SubscriptionOption = None,
    tier: TierOption = None,
    weight: WeightOption = None,
    metadata: Metadata = None,
    url: Url = None,
    api_key: MasterKey = None,
) -> None:
    """Change a customer; options not given stay as they are.

    Example: `llmfleet customers update cust_0192... --tier batch`
    """
    body = _body(
        name=name,
        external_subscription_id=subscription,
        tier=tier,
        weight=weight,
        metadata=metadata,
    )
    with ApiClient(*resolve_api(url, api_key)) as api:
        _describe(api.update_tenant("customers", customer_id, body))


@customers_app.command("list")
def list_customers(limit: Limit = 50, url: Url = None, api_key: MasterKey = None) -> None:
    """The newest customers.

    Example: `llmfleet customers list`
    """
    _list_tenants("customers", limit, url, api_key)


def _list_tenants(kind: str, limit: int, url: str | None, api_key: str | None) -> None:
    with ApiClient(*resolve_api(url, api_key)) as api:
        page = api.list_tenants(kind, limit)
    customers = kind == "customers"
    columns = ["id", "name"] + (["subscription"] if customers else []) + ["share", "metadata"]
    rows = table(*columns)
    for row in page["data"]:
        meta = " ".join(f"{k}={v}" for k, v in (row.get("metadata") or {}).items())
        sub = [row.get("external_subscription_id") or "-"] if customers else []
        rows.add_row(row["id"], row["name"], *sub, _share(row), meta)
    Console().print(rows)


def _share(row: dict[str, Any]) -> str:
    return f"{row.get('tier') or 'default'} x{row.get('weight') or 1:g}"


def _describe(row: dict[str, Any]) -> None:
    Console(stderr=True).print(f"{row['id']} ({row['name']}): fair share {_share(row)}")


def table(*columns: str) -> Table:
    """Cells wrap rather than being cut: ids and keys must be copyable whole."""
    out = Table()
    for column in columns:
        out.add_column(column, overflow="fold")
    return out


def print_json(data: dict[str, Any]) -> None:
    typer.echo(json.dumps(data, indent=2))
