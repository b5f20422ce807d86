"""Budgets per key: a key over its budget is refused at enqueue with an error naming
the budget and its period; the admin manages budgets."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

from models.accounting import Spend
from models.db import make_sessionmaker
from tests.conftest import Fleet


def test_key_over_its_budget_is_refused_at_enqueue(clean_fleet: Fleet) -> None:
    body = {"model": "mock-model", "messages": [{"role": "user", "content": "hi"}]}
    with clean_fleet.client() as admin:
        created = admin.post("/v1/keys", json={"alias": "spender"}).json()
        key_id, key = created["id"], created["key"]
        budget = admin.post(
            "/v1/budgets",
            json={"scope": "key", "scope_id": key_id, "period": "day", "max_spend": "0.50"},
        ).json()
    with clean_fleet.client(key) as client:
        first = client.post("/v1/jobs", json=body)
        assert first.status_code == 202
        job = client.get(f"/v1/jobs/{first.json()['id']}", params={"wait": 30}).json()
        assert job["status"] == "succeeded"

    # Given the key has spent more than its budget today (a priced call, recorded)
    with make_sessionmaker(clean_fleet.engine).begin() as session:
        session.add(
            Spend(
                job_id=job["id"],
                claim=99,
                owner_key=key_id,
                model_group="mock-model",
                cost=Decimal("0.75"),
                called_at=dt.datetime.now(dt.UTC),
            )
        )
    clean_fleet.redis.flushdb()  # the counter is rebuilt from the spend rows

    with clean_fleet.client(key) as client:
        refused = client.post("/v1/jobs", json=body)
    assert refused.status_code == 429
    error = refused.json()["error"]
    assert error["code"] == "budget_exceeded" and error["type"] == "insufficient_quota"
    assert budget["id"] in error["message"] and "day" in error["message"]
    assert "0.75" in error["message"] and 0 < int(refused.headers["retry-after"]) <= 86400

    with clean_fleet.client() as admin:
        assert admin.post("/v1/jobs", json=body).status_code == 202  # the admin has no budget
        listed = admin.get("/v1/budgets").json()["data"]
        assert [b["id"] for b in listed] == [budget["id"]]
        assert admin.delete(f"/v1/budgets/{budget['id']}").json()["deleted"] is True
    with clean_fleet.client(key) as client:
        assert client.post("/v1/jobs", json=body).status_code == 202


def test_only_the_admin_manages_budgets(clean_fleet: Fleet) -> None:
    with clean_fleet.client() as admin:
        key = admin.post("/v1/keys", json={"alias": "plain"}).json()["key"]
    with clean_fleet.client(key) as client:
        response = client.post(
            "/v1/budgets", json={"scope": "key", "scope_id": "x", "max_spend": "1"}
        )
    assert response.status_code == 403
