"""Virtual keys end to end: the admin endpoints and CLI, 401 for revoked and expired
keys, rotation, and model access (jobs, the openai SDK, batch lines)."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import httpx
import openai
import pytest
from sqlalchemy import text
from typer.testing import CliRunner

from producer_api.cli import app as cli_app
from tests.conftest import MASTER_KEY, Fleet
from tests.support.tenancy import batch_file, chat, make_key, wait_job


def sdk(fleet: Fleet, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{fleet.api_url}/v1", api_key=key, max_retries=0)


def test_admin_creates_keys_teams_and_customers_and_never_shows_a_hash(
    clean_fleet: Fleet,
) -> None:
    with clean_fleet.client() as admin:
        team = admin.post("/v1/teams", json={"name": "search", "metadata": {"cc": "42"}})
        assert team.status_code == 201 and team.json()["object"] == "team"
        assert admin.post("/v1/teams", json={"name": "search"}).status_code == 409
        customer = admin.post(
            "/v1/customers", json={"name": "acme", "external_subscription_id": "sub_acme"}
        ).json()
        # A key names its team by name or id; the answer carries the key once
        created = admin.post(
            "/v1/keys",
            json={"alias": "bot", "team_id": "search", "models": ["gpt-4o*"], "rpm": 60},
        )
        assert created.status_code == 201
        key = created.json()
        assert key["key"].startswith("sk-fleet-") and key["key"].startswith(key["key_prefix"])
        assert key["team_id"] == team.json()["id"] and key["status"] == "active"
        both = {"team_id": "search", "customer_id": "acme"}
        assert admin.post("/v1/keys", json=both).status_code == 400
        unknown = admin.post("/v1/keys", json={"team_id": "nobody"})
        assert unknown.status_code == 400 and "nobody" in unknown.json()["error"]["message"]
        # Reads never carry the key or its hash
        shown = [admin.get(f"/v1/keys/{key['id']}").json(), *admin.get("/v1/keys").json()["data"]]
        for body in shown:
            assert "key" not in body and "key_hash" not in body
            assert key["key"] not in str(body)
        patched = admin.patch(
            f"/v1/keys/{key['id']}", json={"rpm": None, "team_id": None, "customer_id": "acme"}
        ).json()
        assert patched["rpm"] is None and patched["customer_id"] == customer["id"]
        assert admin.get(f"/v1/customers/{customer['id']}").json()["name"] == "acme"
        renamed = admin.patch(f"/v1/teams/{team.json()['id']}", json={"name": "search-2"})
        assert renamed.json()["name"] == "search-2"
        assert len(admin.get("/v1/teams").json()["data"]) == 1
    with clean_fleet.engine.connect() as conn:
        stored = conn.execute(text("SELECT key_hash FROM api_keys")).scalar_one()
    assert len(stored) == 64 and key["key"] not in stored


def test_admin_endpoints_answer_403_to_a_virtual_key(clean_fleet: Fleet) -> None:
    tenant = make_key(clean_fleet.api_url)
    with clean_fleet.client(tenant.key) as client:
        for method, path in (
            ("GET", "/v1/keys"),
            ("POST", "/v1/keys"),
            ("GET", f"/v1/keys/{tenant.id}"),
            ("PATCH", f"/v1/keys/{tenant.id}"),
            ("POST", f"/v1/keys/{tenant.id}/rotate"),
            ("POST", f"/v1/keys/{tenant.id}/revoke"),
            ("GET", "/v1/teams"),
            ("POST", "/v1/teams"),
            ("GET", "/v1/customers"),
            ("POST", "/v1/customers"),
            ("GET", "/v1/deployments"),
        ):
            response = client.request(method, path, json={"name": "x"})
            assert response.status_code == 403, (method, path, response.text)
            assert response.json()["error"]["type"] == "permission_error"


def test_revoked_and_expired_keys_get_a_clear_401(clean_fleet: Fleet) -> None:
    revoked = make_key(clean_fleet.api_url, alias="old")
    past = (dt.datetime.now(dt.UTC) - dt.timedelta(minutes=1)).isoformat()
    expired = make_key(clean_fleet.api_url, expires_at=past)
    with clean_fleet.client(revoked.key) as client:
        assert client.post("/v1/jobs", json=chat("hi")).status_code == 202
    with clean_fleet.client() as admin:
        assert admin.post(f"/v1/keys/{revoked.id}/revoke").json()["status"] == "revoked"
    for minted, code, word in (
        (revoked, "key_revoked", "revoked"),
        (expired, "key_expired", "expired"),
    ):
        for method, path in (("POST", "/v1/jobs"), ("GET", "/v1/jobs"), ("GET", "/v1/files")):
            response = httpx.request(
                method,
                clean_fleet.api_url + path,
                json=chat("hi"),
                headers={"Authorization": f"Bearer {minted.key}"},
            )
            assert response.status_code == 401, (method, path)
            error = response.json()["error"]
            assert error["code"] == code and word in error["message"]
            assert minted.body["key_prefix"] in error["message"]
        with pytest.raises(openai.AuthenticationError, match=word):
            sdk(clean_fleet, minted.key).chat.completions.create(
                model="mock-model", messages=[{"role": "user", "content": "x"}]
            )


def test_rotation_keeps_the_key_id_and_what_it_owns(clean_fleet: Fleet) -> None:
    old = make_key(clean_fleet.api_url)
    with clean_fleet.client(old.key) as client:
        job_id = client.post("/v1/jobs", json=chat("mine")).json()["id"]
    with clean_fleet.client() as admin:
        rotated = admin.post(f"/v1/keys/{old.id}/rotate").json()
    assert rotated["id"] == old.id and rotated["key"] != old.key and rotated["rotated_at"]
    with clean_fleet.client(old.key) as client:
        refused = client.get(f"/v1/jobs/{job_id}")
        assert refused.status_code == 401
        assert refused.json()["error"]["code"] == "invalid_api_key"
    with clean_fleet.client(rotated["key"]) as client:
        assert wait_job(client, job_id)["status"] == "succeeded"


def test_a_key_limited_to_one_group_is_refused_another_by_name(
    clean_fleet: Fleet, tmp_path: Path
) -> None:
    # Given a key limited to the gpt-4o* groups, and one to mock-model
    other = make_key(clean_fleet.api_url, models=["gpt-4o*"])
    mine = make_key(clean_fleet.api_url, models=["mock-*"])
    # Then a job for mock-model is refused with 403 naming the model, and nothing is stored
    with clean_fleet.client(other.key) as client:
        refused = client.post("/v1/jobs", json=chat("hi"))
        assert refused.status_code == 403
        error = refused.json()["error"]
        assert (error["type"], error["code"], error["param"]) == (
            "permission_error",
            "model_not_allowed",
            "model",
        )
        assert "mock-model" in error["message"]
        # A group that does not exist is refused the same way: the key learns nothing
        assert client.post("/v1/jobs", json=chat("hi", model="nope")).status_code == 403
    with clean_fleet.engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM jobs")).scalar_one() == 0
    with pytest.raises(openai.PermissionDeniedError, match="mock-model"):
        sdk(clean_fleet, other.key).chat.completions.create(
            model="mock-model", messages=[{"role": "user", "content": "x"}]
        )
    with pytest.raises(openai.PermissionDeniedError):
        sdk(clean_fleet, other.key).embeddings.create(model="mock-model", input="x")
    # And the key allowed mock-* is served
    answer = sdk(clean_fleet, mine.key).chat.completions.create(
        model="mock-model", messages=[{"role": "user", "content": "ok"}]
    )
    assert answer.choices[0].message.content == "Echo: ok"


def test_a_batch_line_for_a_model_the_key_may_not_use_is_reported(
    clean_fleet: Fleet, tmp_path: Path
) -> None:
    tenant = make_key(clean_fleet.api_url, models=["mock-model"])
    path = batch_file(tmp_path / "in.jsonl", [chat("a"), chat("b", model="gpt-4o"), chat("c")])
    client = sdk(clean_fleet, tenant.key)
    uploaded = client.files.create(file=path.open("rb"), purpose="batch")
    batch = client.batches.create(
        input_file_id=uploaded.id, endpoint="/v1/chat/completions", completion_window="24h"
    )
    assert batch.status == "failed" and batch.errors is not None
    [error] = batch.errors.data or []
    assert (error.code, error.line, error.param) == ("model_not_allowed", 2, "body.model")
    assert "gpt-4o" in (error.message or "")
    with clean_fleet.client(tenant.key) as http:
        anthropic_shape = {
            "requests": [
                {
                    "custom_id": "a",
                    "params": {
                        "model": "gpt-4o",
                        "max_tokens": 5,
                        "messages": [{"role": "user", "content": "x"}],
                    },
                }
            ]
        }
        refused = http.post("/v1/messages/batches", json=anthropic_shape)
    assert refused.status_code == 400 and "may not use the model" in refused.text


def test_cli_manages_keys_teams_and_customers(clean_fleet: Fleet) -> None:
    runner = CliRunner()
    auth = ["--url", clean_fleet.api_url, "--api-key", MASTER_KEY]

    def run(*args: str) -> str:
        result = runner.invoke(cli_app, [*args, *auth])
        assert result.exit_code == 0, result.output
        return str(result.stdout)

    team_id = run("teams", "create", "search", "--metadata", "cc=42").strip()
    assert team_id.startswith("team_") and "search" in run("teams", "list")
    assert run("customers", "create", "acme", "--subscription", "sub_1").startswith("cust_")
    assert "sub_1" in run("customers", "list")
    key = (
        run("keys", "create", "--team", "search", "--models", "gpt-4o*,mock-model", "--rpm", "60")
        .strip()
        .splitlines()[0]
    )
    assert key.startswith("sk-fleet-")
    listed = run("keys", "list", "--json")
    [shown] = json.loads(listed)["data"]
    assert shown["team_id"] == team_id and key.startswith(shown["key_prefix"])
    assert key not in listed and "sk-fleet-" in run("keys", "list")
    with clean_fleet.client(key) as client:
        assert client.post("/v1/jobs", json=chat("via cli")).status_code == 202
    key_id = httpx.get(
        f"{clean_fleet.api_url}/v1/keys", headers={"Authorization": f"Bearer {MASTER_KEY}"}
    ).json()["data"][0]["id"]
    run("keys", "update", key_id, "--rpm", "5", "--expires", "30d")
    new_key = run("keys", "rotate", key_id).strip().splitlines()[0]
    assert new_key.startswith("sk-fleet-") and new_key != key
    assert "revoked" in run("keys", "revoke", key_id)
    with clean_fleet.client(new_key) as client:
        assert client.get("/v1/jobs").status_code == 401
    failed = runner.invoke(
        cli_app, ["keys", "list", "--url", clean_fleet.api_url, "--api-key", new_key]
    )
    assert failed.exit_code == 1 and "401" in failed.output


def test_fair_share_tier_and_weight_are_set_through_the_api_and_the_cli(
    clean_fleet: Fleet,
) -> None:
    runner = CliRunner()
    auth = ["--url", clean_fleet.api_url, "--api-key", MASTER_KEY]

    def run(*args: str) -> str:
        result = runner.invoke(cli_app, [*args, *auth])
        assert result.exit_code == 0, result.output
        return str(result.stdout)

    # A team and a customer carry a tier and a weight, set at create and changed later
    team_id = run("teams", "create", "prod", "--tier", "production", "--weight", "3").strip()
    customer_id = run("customers", "create", "lab", "--tier", "batch").strip()
    run("teams", "update", team_id, "--weight", "2.5")
    assert "production x2.5" in run("teams", "list")
    assert "batch x1" in run("customers", "list")
    # and so does a key, shown with what it allows
    run("keys", "create", "--customer", customer_id, "--tier", "default", "--weight", "4")
    [key] = json.loads(run("keys", "list", "--json"))["data"]
    assert (key["tier"], key["weight"]) == ("default", 4.0)
    described = runner.invoke(cli_app, ["keys", "update", key["id"], "--weight", "5", *auth])
    assert "tier=default weight=5.0" in described.stderr
    with clean_fleet.client() as admin:
        team = admin.get(f"/v1/teams/{team_id}").json()
        assert (team["tier"], team["weight"]) == ("production", 2.5)
        # A tier that does not exist, or a weight of 0, is refused naming the field
        for body in ({"tier": "gold"}, {"weight": 0}, {"weight": 1001}):
            refused = admin.patch(f"/v1/teams/{team_id}", json=body)
            assert refused.status_code == 400, refused.text
            assert refused.json()["error"]["param"] == next(iter(body))
        assert admin.patch(f"/v1/keys/{key['id']}", json={"tier": "gold"}).status_code == 400
        # and cleared with null: the key then has its owner's share
        cleared = admin.patch(f"/v1/keys/{key['id']}", json={"tier": None, "weight": None})
        assert (cleared.json()["tier"], cleared.json()["weight"]) == (None, None)
    bad = runner.invoke(cli_app, ["teams", "update", team_id, "--tier", "gold", *auth])
    assert bad.exit_code != 0 and "--tier" in bad.output
