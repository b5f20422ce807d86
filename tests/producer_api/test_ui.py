"""/ui: the login session, the JSON it polls, and the page itself in headless Chromium
watching a running batch move."""

from __future__ import annotations

import contextlib
import datetime as dt
import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from pydantic import SecretStr
from selenium.common.exceptions import StaleElementReferenceException
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.ui import WebDriverWait

from producer_api.auth import Caller
from producer_api.ui_session import COOKIE_NAME, read_session, sign_session
from tests.conftest import MASTER_KEY, Fleet
from tests.support.browser import ARTIFACTS, chromium, find_chromium
from tests.support.tenancy import chat, make_key, wait_job

ADMIN = Caller(owner="master", is_admin=True)


@contextlib.contextmanager
def signed_in(fleet: Fleet, key: str = MASTER_KEY) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=fleet.api_url, timeout=30) as client:
        response = client.post("/ui/login", data={"key": key})
        assert response.status_code == 303 and response.headers["location"] == "/ui"
        yield client


def test_session_cookie_is_signed_and_expires() -> None:
    key = SecretStr("sk-one")
    token = sign_session(key, ADMIN, now=1000)
    assert read_session(key, token, now=1001) == ADMIN
    assert "sk-one" not in token
    assert read_session(SecretStr("sk-rotated"), token, now=1001) is None
    assert read_session(key, token, now=1000 + 13 * 3600) is None
    payload, _, mac = token.partition(".")
    other = sign_session(key, Caller(owner="someone", is_admin=False), now=5000)
    assert read_session(key, f"{other.partition('.')[0]}.{mac}", now=1001) is None
    assert read_session(key, payload, now=1001) is None


def test_login_sets_an_httponly_cookie_and_never_a_key_in_a_url(clean_fleet: Fleet) -> None:
    with httpx.Client(base_url=clean_fleet.api_url) as client:
        page = client.get("/ui")
        refused = client.post("/ui/login", data={"key": "wrong"})
        accepted = client.post("/ui/login", data={"key": MASTER_KEY})
    assert page.status_code == 200 and 'action="/ui/login"' in page.text
    assert "script-src 'nonce-" in page.headers["content-security-policy"]
    assert refused.status_code == 401 and "not valid" in refused.text
    assert "set-cookie" not in refused.headers
    cookie = accepted.headers["set-cookie"].lower()
    assert accepted.status_code == 303 and accepted.headers["location"] == "/ui"
    assert "httponly" in cookie and "samesite=strict" in cookie and "path=/ui" in cookie
    assert MASTER_KEY.lower() not in cookie


def test_json_needs_the_session_and_shows_no_prompt(clean_fleet: Fleet) -> None:
    with clean_fleet.client() as api:
        job_id = api.post(
            "/v1/jobs",
            json={"model": "mock-model", "messages": [{"role": "user", "content": "a secret"}]},
        ).json()["id"]
        usage = wait_job(api, job_id, timeout=50)["usage"]
    anonymous = httpx.get(f"{clean_fleet.api_url}/ui/api/jobs")
    forged = httpx.get(f"{clean_fleet.api_url}/ui/api/jobs", cookies={COOKIE_NAME: "x.y"})
    with signed_in(clean_fleet) as client:
        jobs = client.get("/ui/api/jobs")
        deployments = client.get("/ui/api/deployments").json()
        page = client.get("/ui")
    assert anonymous.status_code == forged.status_code == 401
    assert anonymous.json()["error"]["code"] == "ui_session_required"
    [job] = jobs.json()["data"]
    assert (job["id"], job["status"]) == (job_id, "succeeded")
    assert job["total_tokens"] == usage["total_tokens"] > 0
    assert job["deployment"] in ("mock-a", "mock-b")
    assert "secret" not in jobs.text
    assert {d["id"] for d in deployments["data"]} == {"mock-a", "mock-b"}
    assert "signed in as master" in page.text


def test_the_last_hour_is_drawn_from_the_jobs_the_fleet_stored(clean_fleet: Fleet) -> None:
    # Given jobs that ran 0.3 s each just now
    body = {"model": "mock-model", "messages": [{"role": "user", "content": "[mock:latency=0.3]"}]}
    with clean_fleet.client() as api:
        ids = [api.post("/v1/jobs", json=body).json()["id"] for _ in range(4)]
        for job_id in ids:
            assert wait_job(api, job_id, timeout=50)["status"] == "succeeded"
    # When the operator page asks for the last hour
    with signed_in(clean_fleet) as client:
        minutes = client.get("/ui/api/activity").json()["data"]
    # Then it has its 60 minutes, oldest first, and the jobs are in the latest ones
    assert len(minutes) == 60
    assert [m["start"] for m in minutes] == sorted(m["start"] for m in minutes)
    recent = [m for m in minutes[-2:] if m["jobs_per_s"] > 0]
    assert recent and all(0.3 <= m["p50_s"] < 5 for m in recent)
    assert sum(m["jobs_per_s"] * 60 for m in minutes[:-1]) + minutes[-1]["jobs_per_s"] > 0
    assert {m["spend"] for m in minutes} == {"0"}  # the mock's deployments have no price


def test_a_virtual_key_sees_its_own_jobs_until_it_is_revoked(clean_fleet: Fleet) -> None:
    # Given a tenant's key with a job of its own, and the admin's job
    tenant = make_key(clean_fleet.api_url, alias="ui-tenant")
    with clean_fleet.client(tenant.key) as api:
        own = api.post("/v1/jobs", json=chat("mine")).json()["id"]
    with clean_fleet.client() as admin:
        admin.post("/v1/jobs", json=chat("not yours"))
    # When the tenant signs in to /ui
    with signed_in(clean_fleet, tenant.key) as client:
        jobs = client.get("/ui/api/jobs").json()["data"]
        deployments = client.get("/ui/api/deployments")
        page = client.get("/ui").text
        with clean_fleet.client() as admin:
            admin.post(f"/v1/keys/{tenant.id}/revoke")
        after_revoke = client.get("/ui/api/jobs")
    # Then it sees its own job only, no router state, and nothing once revoked
    assert [j["id"] for j in jobs] == [own]
    assert deployments.status_code == 403
    assert 'id="deployments"' not in page and "signed in as" in page
    assert after_revoke.status_code == 401


def submit_slow_batch(fleet: Fleet, tmp_path: Path, lines: int) -> str:
    """Line i answers after 0.6 * (i + 1) seconds: the batch completes a line at a time."""
    path = tmp_path / "slow.jsonl"
    rows = [
        {
            "custom_id": f"slow-{i}",
            "method": "POST",
            "url": "/v1/chat/completions",
            "body": {
                "model": "mock-model",
                "messages": [
                    {"role": "user", "content": f"line {i} [mock:latency={0.6 * (i + 1):.1f}]"}
                ],
            },
        }
        for i in range(lines)
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with fleet.client() as api:
        file_id = api.post(
            "/v1/files", files={"file": path.open("rb")}, data={"purpose": "batch"}
        ).json()["id"]
        batch = api.post(
            "/v1/batches",
            json={
                "input_file_id": file_id,
                "endpoint": "/v1/chat/completions",
                "completion_window": "48h",
            },
        ).json()
    assert batch["status"] == "in_progress", batch
    return str(batch["id"])


def completed_shown(driver: WebDriver, batch_id: str) -> int | None:
    # One script reads the row and its attribute: the page re-renders the table on every poll,
    # so an element found by one call may be gone by the next.
    value = driver.execute_script(
        "const row = document.querySelector(arguments[0]);"
        "return row ? row.dataset.completed || '0' : null;",
        f'#batches tr[data-batch-id="{batch_id}"]',
    )
    return None if value is None else int(value)


def text_shown(driver: WebDriver, selector: str) -> str | None:
    value = driver.execute_script(
        "const el = document.querySelector(arguments[0]); return el ? el.textContent : null;",
        selector,
    )
    return None if value is None else str(value).strip()


@pytest.mark.skipif(find_chromium() is None, reason="needs Debian's chromium and chromium-driver")
def test_browser_sees_a_running_batch_progress(clean_fleet: Fleet, tmp_path: Path) -> None:
    # Given some finished jobs and a batch that completes one line every 0.6 s
    with clean_fleet.client() as api:
        for content in ("hello", "bad [mock:status=400]"):
            job = api.post(
                "/v1/jobs",
                json={"model": "mock-model", "messages": [{"role": "user", "content": content}]},
            )
            wait_job(api, job.json()["id"], timeout=50)
    lines = 12
    with chromium(tmp_path) as driver:
        # Generous: the machine may be busy; each wait ends as soon as the page shows it.
        wait = WebDriverWait(
            driver, 90, poll_frequency=0.1, ignored_exceptions=(StaleElementReferenceException,)
        )
        # When an operator signs in with the key, once, in the form
        driver.get(f"{clean_fleet.api_url}/ui")
        driver.find_element(By.ID, "key").send_keys(MASTER_KEY)
        driver.find_element(By.CSS_SELECTOR, "form.login button").click()
        wait.until(
            lambda d: d.find_elements(By.CSS_SELECTOR, "#deployments tr[data-deployment-id]")
        )
        assert "key" not in driver.current_url
        batch_id = submit_slow_batch(clean_fleet, tmp_path, lines)
        # Then the page shows the batch part-done, then further along, without a reload
        first = wait.until(lambda d: (n := completed_shown(d, batch_id)) and 0 < n < lines and n)
        later = wait.until(lambda d: (n := completed_shown(d, batch_id)) and n > first and n)
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        driver.save_screenshot(str(ARTIFACTS / "ui-batch-progress.png"))
        wait.until(
            lambda d: d.find_elements(
                By.CSS_SELECTOR, f'tr[data-batch-id="{batch_id}"] .badge.completed'
            )
        )
        counts = text_shown(driver, f'tr[data-batch-id="{batch_id}"] .counts')
        created = text_shown(driver, f'tr[data-batch-id="{batch_id}"] td:nth-child(6)')
        expires = text_shown(driver, f'tr[data-batch-id="{batch_id}"] td:nth-child(7)')
        wait.until(
            lambda d: d.execute_script(
                "const f = document.querySelector('#activity figure[data-series=jobs_per_s]');"
                "return f && Number(f.dataset.points || 0) > 0;"
            )
        )
        jobs_shown = driver.execute_script(
            "return document.querySelectorAll('#jobs tr[data-job-id]').length;"
        )
        driver.save_screenshot(str(ARTIFACTS / "ui-batch-completed.png"))
        log = driver.get_log("browser")
    assert 0 < first < later <= lines
    assert counts == f"{lines} / {lines} done"
    # a batch that expires in two days shows that day's date; one created today, its time
    expiry_year = str((dt.datetime.now() + dt.timedelta(hours=48)).year)
    assert created is not None and expires is not None
    assert expiry_year in expires and expiry_year not in created
    assert jobs_shown == lines + 2
    assert not [e for e in log if e["level"] == "SEVERE"], log
