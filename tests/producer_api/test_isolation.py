"""Tenants never see each other: for every resource (jobs, files, batches, batch
output, message batches, spend) key A gets 404 on key B's — as if it did not exist —
and lists only its own; the admin sees both."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import httpx

from tests.conftest import Fleet
from tests.support.tenancy import Minted, batch_file, chat, make_key, wait_batch, wait_job


@dataclass
class Owned:
    """What one tenant made."""

    job: str
    file: str
    batch: str
    output_file: str
    message_batch: str
    response: str


def make_everything(fleet: Fleet, tenant: Minted, tmp_path: Path) -> Owned:
    with fleet.client(tenant.key) as client:
        job = client.post("/v1/jobs", json=chat(f"job of {tenant.id}")).json()["id"]
        path = batch_file(tmp_path / f"{tenant.id}.jsonl", [chat("one"), chat("two")])
        with path.open("rb") as handle:
            uploaded = client.post(
                "/v1/files", files={"file": ("in.jsonl", handle)}, data={"purpose": "batch"}
            ).json()
        created = client.post(
            "/v1/batches",
            json={"input_file_id": uploaded["id"], "endpoint": "/v1/chat/completions"},
        ).json()
        batch = wait_batch(client, created["id"])
        assert batch["status"] == "completed" and batch["output_file_id"], batch
        params = {
            "model": "mock-model",
            "max_tokens": 5,
            "messages": [{"role": "user", "content": "m"}],
        }
        message_batch = client.post(
            "/v1/messages/batches", json={"requests": [{"custom_id": "a", "params": params}]}
        ).json()["id"]
        made = client.post("/v1/responses", json={"model": "mock-model", "input": "r"})
        assert made.status_code == 200, made.text
        assert wait_job(client, job)["status"] == "succeeded"
        until = time.monotonic() + 60
        while (
            client.get(f"/v1/messages/batches/{message_batch}").json()["processing_status"]
            != "ended"
        ):
            assert time.monotonic() < until
            time.sleep(0.2)
    return Owned(
        job,
        uploaded["id"],
        batch["id"],
        batch["output_file_id"],
        message_batch,
        made.json()["id"],
    )


def reads(owned: Owned) -> list[tuple[str, str]]:
    """Every way to read, download, cancel or delete one tenant's things."""
    return [
        ("GET", f"/v1/jobs/{owned.job}"),
        ("GET", f"/v1/jobs/{owned.job}?wait=1"),
        ("GET", f"/v1/files/{owned.file}"),
        ("GET", f"/v1/files/{owned.file}/content"),
        ("GET", f"/v1/files/{owned.output_file}"),
        ("GET", f"/v1/files/{owned.output_file}/content"),
        ("GET", f"/v1/batches/{owned.batch}"),
        ("GET", f"/v1/batches/{owned.batch}/output"),
        ("GET", f"/v1/batches/{owned.batch}/output?partial=true&which=errors"),
        ("GET", f"/v1/messages/batches/{owned.message_batch}"),
        ("GET", f"/v1/messages/batches/{owned.message_batch}/results"),
        ("GET", f"/v1/jobs/{owned.job}?stream=true"),
        ("GET", f"/v1/responses/{owned.response}"),
        ("GET", f"/v1/responses/{owned.response}?stream=true"),
        ("GET", f"/v1/responses/{owned.response}/input_items"),
    ]


def writes(owned: Owned) -> list[tuple[str, str]]:
    return [
        ("DELETE", f"/v1/jobs/{owned.job}"),
        ("POST", f"/v1/batches/{owned.batch}/cancel"),
        ("POST", f"/v1/messages/batches/{owned.message_batch}/cancel"),
        ("DELETE", f"/v1/files/{owned.file}"),
        ("DELETE", f"/v1/files/{owned.output_file}"),
        ("DELETE", f"/v1/responses/{owned.response}"),
        ("POST", f"/v1/responses/{owned.response}/cancel"),
    ]


def listed(client: httpx.Client) -> set[str]:
    ids: set[str] = set()
    for path in ("/v1/jobs?limit=100", "/v1/files", "/v1/batches", "/v1/messages/batches"):
        response = client.get(path)
        assert response.status_code == 200, path
        ids |= {item["id"] for item in response.json()["data"]}
    return ids


def test_every_resource_of_another_tenant_is_404_and_the_admin_sees_all(
    clean_fleet: Fleet, tmp_path: Path
) -> None:
    # Given two tenants that each made a job, files, a batch with output, a message batch
    a, b = make_key(clean_fleet.api_url, alias="a"), make_key(clean_fleet.api_url, alias="b")
    owned = {
        a.id: make_everything(clean_fleet, a, tmp_path),
        b.id: make_everything(clean_fleet, b, tmp_path),
    }
    for me, other in ((a, b), (b, a)):
        theirs = owned[other.id]
        with clean_fleet.client(me.key) as client:
            # Then every read, download, cancel and delete of the other's is a 404
            for method, path in reads(theirs) + writes(theirs):
                response = client.request(method, path)
                assert response.status_code == 404, (me.id, method, path, response.text)
                assert response.json()["error"]["type"] == "not_found_error"
            # A batch cannot be made from the other's file either
            stolen = client.post(
                "/v1/batches",
                json={"input_file_id": theirs.file, "endpoint": "/v1/chat/completions"},
            )
            assert stolen.status_code == 404
            # ... nor a conversation continued from the other's response
            continued = client.post(
                "/v1/responses",
                json={"model": "mock-model", "input": "x", "previous_response_id": theirs.response},
            )
            assert continued.status_code == 404
            # And lists show only one's own
            mine = listed(client)
            assert owned[me.id].job in mine and owned[me.id].message_batch in mine
            assert not mine & set(vars(theirs).values())
            # Spend rows are the tenant's own too
            spend = client.get("/v1/spend", params={"group_by": "key"})
            assert spend.status_code == 200
            assert {g["group"] for g in spend.json()["data"]} <= {me.id}
    # The admin reads everything both made, and lists both
    with clean_fleet.client() as admin:
        for mine in owned.values():
            for method, path in reads(mine):
                assert admin.request(method, path).status_code == 200, path
        everything = listed(admin)
        for mine in owned.values():
            assert {mine.job, mine.file, mine.batch, mine.message_batch} <= everything
    # Nothing of one tenant was changed by the other's attempts
    with clean_fleet.client(a.key) as client:
        for method, path in reads(owned[a.id]):
            assert client.request(method, path).status_code == 200, path
        assert client.get(f"/v1/jobs/{owned[a.id].job}").json()["status"] == "succeeded"
