"""The router end to end: several mock-provider deployments, real worker processes,
jobs over HTTP, calls counted at the mocks."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine

from tests.conftest import migrated_database
from tests.support.batches import submit, wait_ended
from tests.support.fleet import deployment
from tests.workers.conftest import Fleet


@pytest.fixture(scope="module")
def database() -> Iterator[tuple[str, Engine]]:
    with migrated_database("llmfleet_test_router") as (url, engine):
        yield url, engine


def test_latency_routing_sends_most_traffic_to_the_fastest(own_fleet: Fleet) -> None:
    def config(urls: dict[str, str]) -> dict[str, Any]:
        return {
            "model_list": [deployment(name, url) for name, url in urls.items()],
            "router_settings": {"routing_strategy": "latency-based-routing"},
        }

    mocks = {
        "fast": ["--latency", "0.02"],
        "mid": ["--latency", "0.2"],
        "slow": ["--latency", "0.4"],
    }
    with own_fleet(config, mocks) as f:
        for wave in range(15):
            f.wait_all([f.submit(f"wave {wave} job {i}") for i in range(10)])
        calls = {name: f.stats(name)["calls"] for name in mocks}
    assert sum(calls.values()) == 150
    assert calls["fast"] >= 0.8 * 150, calls


def test_failing_deployment_cools_down_for_every_worker(own_fleet: Fleet) -> None:
    def config(urls: dict[str, str]) -> dict[str, Any]:
        return {
            "model_list": [deployment("bad", urls["bad"]), deployment("good", urls["good"])],
            # A cooldown long enough for the burst on a slow machine (40 submissions
            # alone take 3-4 s on a busy 2-core one)
            "router_settings": {"allowed_fails": 1, "cooldown_time": 20, "num_retries": 1},
        }

    with own_fleet(config, {"bad": ["--error-rate", "1"], "good": []}, workers=2) as f:
        # Given `bad` has failed more than allowed_fails times
        while f.stats("bad")["calls"] < 2:
            assert f.wait(f.submit("warm up"))["status"] == "succeeded"
        cooled_at = time.monotonic()
        # When a burst arrives at both workers during the cooldown
        burst = f.wait_all(f.submit_many([f"burst {i} [mock:latency=0.2]" for i in range(40)]))
        during = f.stats("bad")["calls"]
        assert time.monotonic() - cooled_at < 20, "the burst outlasted the cooldown"
        # Then `bad` got none of it; after the cooldown it is tried again
        time.sleep(max(0.0, 20.5 - (time.monotonic() - cooled_at)))
        after = f.wait_all([f.submit(f"after {i}") for i in range(20)])
        worker_logs = [w.output() for w in f.workers]
        total = f.stats("bad")["calls"]
    assert during == 2
    assert [j["status"] for j in burst + after] == ["succeeded"] * 60
    assert total > 2
    assert all("succeeded via good" in log for log in worker_logs), "both workers served"


def test_rpm_limit_holds_in_every_60_s_window(own_fleet: Fleet) -> None:
    def config(urls: dict[str, str]) -> dict[str, Any]:
        return {"model_list": [deployment("only", urls["only"], rpm=60)]}

    with own_fleet(config, {"only": []}) as f:
        jobs = f.wait_all(f.submit_many([f"job {i}" for i in range(150)]), timeout=240)
        times = sorted(f.stats("only")["call_times"])
    assert [j["status"] for j in jobs] == ["succeeded"] * 150
    assert len(times) == 150
    busiest = max(sum(1 for t in times if start <= t < start + 60) for start in times)
    assert busiest <= 60


def test_429_storm_on_one_deployment_every_job_succeeds(own_fleet: Fleet) -> None:
    def config(urls: dict[str, str]) -> dict[str, Any]:
        return {
            "model_list": [deployment("storm", urls["storm"]), deployment("calm", urls["calm"])]
        }

    mocks = {"storm": ["--rate-429", "1", "--retry-after", "2"], "calm": ["--latency", "0.05"]}
    with own_fleet(config, mocks) as f:
        jobs = f.wait_all(f.submit_many([f"job {i}" for i in range(60)]))
        storm_calls = f.stats("storm")["calls"]
    assert [j["status"] for j in jobs] == ["succeeded"] * 60
    assert {j["deployment"] for j in jobs} == {"calm"}
    assert storm_calls < 20, "a 429 with Retry-After cools the deployment"


def test_all_deployments_throttled_jobs_wait_or_expire(own_fleet: Fleet) -> None:
    def config(urls: dict[str, str]) -> dict[str, Any]:
        deps = [deployment("a", urls["busy"]), deployment("b", urls["busy"])]
        return {"model_list": deps, "router_settings": {"cooldown_time": 2}}

    with own_fleet(config, {"busy": ["--rate-429", "1", "--retry-after", "1"]}) as f:
        # Given every deployment answers 429 (short of capacity) for 10 s
        patient = [f.submit(f"patient {i}", completion_window="60s") for i in range(10)]
        hasty = [f.submit(f"hasty {i}", completion_window="5s") for i in range(5)]
        time.sleep(10)
        f.configure("busy", rate_429=0)
        patient_jobs, hasty_jobs = f.wait_all(patient), f.wait_all(hasty)
    assert [j["status"] for j in patient_jobs] == ["succeeded"] * 10
    # They waited out the shortage rather than failing.
    assert all(j["finished_at"] - j["created_at"] >= 9 for j in patient_jobs)
    assert [j["status"] for j in hasty_jobs] == ["expired"] * 5
    assert all("deadline passed while waiting" in j["error"]["message"] for j in hasty_jobs), [
        j["error"] for j in hasty_jobs
    ]


def test_all_deployments_failing_jobs_fail_after_their_retries(own_fleet: Fleet) -> None:
    def config(urls: dict[str, str]) -> dict[str, Any]:
        deps = [deployment("a", urls["down"]), deployment("b", urls["down"])]
        return {"model_list": deps, "router_settings": {"num_retries": 2}}

    with own_fleet(config, {"down": ["--error-rate", "1"]}) as f:
        # Given every deployment answers 500 to every call
        started = time.monotonic()
        jobs = f.wait_all([f.submit(f"doomed {i}", completion_window="1h") for i in range(10)])
        took = time.monotonic() - started
        calls = f.stats("down")["calls"]
    # Then each job fails with the provider's error after its retries, within seconds,
    # not at its deadline an hour away
    assert [j["status"] for j in jobs] == ["failed"] * 10
    assert {j["error"]["code"] for j in jobs} <= {None, "server_error", "internal_error"}
    assert all("500" in j["error"]["message"] for j in jobs), [j["error"] for j in jobs]
    assert took < 60
    assert all(1 <= j["attempts"] <= 3 for j in jobs) and calls == sum(j["attempts"] for j in jobs)


def test_context_window_error_falls_back_to_the_larger_group(own_fleet: Fleet) -> None:
    def config(urls: dict[str, str]) -> dict[str, Any]:
        return {
            "model_list": [
                deployment("small-1", urls["small"], group="small"),
                deployment("large-1", urls["large"], group="large"),
            ],
            "router_settings": {"context_window_fallbacks": [{"small": ["large"]}]},
        }

    with own_fleet(config, {"small": ["--context-window", "5"], "large": []}) as f:
        job = f.wait(f.submit("one two three four five six seven eight nine ten", model="small"))
    assert job["status"] == "succeeded"
    assert job["served_group"] == "large" and job["deployment"] == "large-1"
    log = [(a["deployment"], a["error_class"]) for a in job["attempt_log"]]
    assert log == [("small-1", "ContextWindowExceededError"), ("large-1", None)]


def test_adaptive_concurrency_finds_the_providers_capacity(
    own_fleet: Fleet, tmp_path: Path
) -> None:
    def config(urls: dict[str, str]) -> dict[str, Any]:
        return {"model_list": [deployment("tight", urls["tight"])]}

    mocks = {"tight": ["--max-concurrency", "20", "--latency", "0.3", "--retry-after", "0.5"]}
    # The limit alone: with fair share on, jobs back from a 429 wait in the group's room
    # and go one per call that ends, which holds the calls at the provider's capacity by
    # itself, and a limit cut high by the first burst may meet no later 429 to lower it
    alone = {"LLMFLEET_FAIR_SHARE": "0"}
    with own_fleet(config, mocks, concurrency=60, extra_env=alone) as f:
        # A batch: all 400 jobs are there at once, however slowly a busy machine submits.
        batch = wait_ended(f, submit(f, tmp_path, 400, "job"), timeout=240)
        with f.client() as client:
            state = client.get("/v1/deployments").json()["data"][0]
        stats = f.stats("tight")
    assert batch.status == "completed" and batch.request_counts is not None
    assert (batch.request_counts.completed, batch.request_counts.failed) == (400, 0)
    assert state["adaptive_limit"] is not None, (state, stats)
    assert 12 <= state["adaptive_limit"] <= 26, state
    # Once the limit is found, 429s are the exception, not the rule.
    assert stats["by_status"].get("429", 0) < 0.5 * 400, stats["by_status"]
