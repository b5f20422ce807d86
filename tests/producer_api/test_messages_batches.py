"""Anthropic's Message Batches API, driven by the official `anthropic` SDK against the
API and served by the same fleet (here: the OpenAI-compatible mock)."""

from __future__ import annotations

import time

import anthropic
import pytest

from tests.conftest import MASTER_KEY, Fleet


def sdk(fleet: Fleet) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=fleet.api_url, api_key=MASTER_KEY, max_retries=0)


def request(custom_id: str, text: str) -> dict[str, object]:
    return {
        "custom_id": custom_id,
        "params": {
            "model": "mock-model",
            "max_tokens": 64,
            "system": "be brief",
            "messages": [{"role": "user", "content": text}],
        },
    }


def test_anthropic_sdk_create_retrieve_results(clean_fleet: Fleet) -> None:
    client = sdk(clean_fleet)
    created = client.messages.batches.create(
        requests=[request(f"q{i}", f"question {i}") for i in range(5)]
        + [request("boom", "[mock:status=400]")]  # type: ignore[list-item]
    )
    assert created.type == "message_batch" and created.processing_status == "in_progress"
    until = time.monotonic() + 60
    batch = client.messages.batches.retrieve(created.id)
    while batch.processing_status != "ended" and time.monotonic() < until:
        time.sleep(0.3)
        batch = client.messages.batches.retrieve(created.id)

    assert batch.processing_status == "ended" and batch.ended_at is not None
    assert (batch.request_counts.succeeded, batch.request_counts.errored) == (5, 1)
    results = {r.custom_id: r.result for r in client.messages.batches.results(created.id)}
    assert set(results) == {"q0", "q1", "q2", "q3", "q4", "boom"}
    first = results["q0"]
    assert first.type == "succeeded"
    assert first.message.content[0].type == "text"
    assert first.message.content[0].text == "Echo: question 0"
    assert first.message.stop_reason == "end_turn" and first.message.usage.output_tokens == 3
    assert results["boom"].type == "errored"
    assert created.id in [b.id for b in client.messages.batches.list(limit=10)]


def test_anthropic_sdk_cancel_and_bad_requests(clean_fleet: Fleet) -> None:
    client = sdk(clean_fleet)
    slow = [request(f"s{i}", f"slow [mock:latency=2] {i}") for i in range(3)]
    created = client.messages.batches.create(requests=slow)  # type: ignore[arg-type]
    cancelled = client.messages.batches.cancel(created.id)
    assert cancelled.processing_status in ("canceling", "ended")
    assert cancelled.cancel_initiated_at is not None

    with pytest.raises(anthropic.BadRequestError) as info:
        client.messages.batches.create(
            requests=[
                {
                    "custom_id": "k",
                    "params": {
                        "model": "mock-model",
                        "max_tokens": 10,
                        "top_k": 5,
                        "messages": [{"role": "user", "content": "x"}],
                    },
                }
            ]
        )
    assert "top_k" in str(info.value)
    with pytest.raises(anthropic.BadRequestError) as info:
        client.messages.batches.create(
            requests=[
                request("m", "x")
                | {
                    "params": {
                        "model": "nope",
                        "max_tokens": 5,
                        "messages": [{"role": "user", "content": "x"}],
                    }
                }
            ]
        )  # type: ignore[list-item]
    assert "nope" in str(info.value)
