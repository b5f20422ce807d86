"""/v1/responses with the official `openai` SDK pointed at the fleet: foreground,
background, streamed and resumed (also on another API process), conversations,
cancel and delete."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from sqlalchemy import text

from tests.conftest import MASTER_KEY, Fleet
from tests.support.processes import start_api


def sdk(url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{url}/v1", api_key=MASTER_KEY, max_retries=0)


def job_request(fleet: Fleet, response_id: str) -> dict[str, Any]:
    """The chat body the response's job was given (what a provider is sent)."""
    job_id = "job_" + response_id.removeprefix("resp_")
    with fleet.engine.connect() as conn:
        request = conn.execute(text("SELECT request FROM jobs WHERE id = :id"), {"id": job_id})
        return dict(request.scalar_one())


def finished(client: openai.OpenAI, response_id: str) -> Any:
    for _ in range(200):
        response = client.responses.retrieve(response_id)
        if response.status not in ("queued", "in_progress"):
            return response
        time.sleep(0.05)
    raise AssertionError(f"{response_id} still {response.status}")


def test_a_foreground_response_with_instructions_tools_and_a_json_format(
    clean_fleet: Fleet,
) -> None:
    tool: Any = {"type": "function", "name": "lookup", "parameters": {"type": "object"}}
    schema = {"type": "object", "properties": {"city": {"type": "string"}}}
    response = sdk(clean_fleet.api_url).responses.create(
        model="mock-model",
        instructions="answer briefly",
        input="what is up",
        tools=[tool],
        text={"format": {"type": "json_schema", "name": "place", "schema": schema}},
        max_output_tokens=40,
        metadata={"team": "search"},
    )

    assert response.status == "completed"
    assert response.output_text == "Echo: what is up"
    assert response.usage is not None and response.usage.output_tokens == 4
    assert response.metadata == {"team": "search"}
    # the job got the chat form of it all
    sent = job_request(clean_fleet, response.id)
    assert sent["messages"] == [
        {"role": "system", "content": "answer briefly"},
        {"role": "user", "content": "what is up"},
    ]
    assert sent["tools"] == [
        {"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}
    ]
    assert sent["response_format"]["json_schema"] == {"name": "place", "schema": schema}
    assert sent["max_completion_tokens"] == 40


def test_background_then_poll(clean_fleet: Fleet) -> None:
    client = sdk(clean_fleet.api_url)
    created = client.responses.create(
        model="mock-model", input="slowly [mock:latency=0.5]", background=True
    )
    assert created.status == "queued" and created.background

    done = finished(client, created.id)
    assert done.status == "completed"
    assert done.output_text == "Echo: slowly [mock:latency=0.5]"


def test_a_dropped_stream_resumes_after_the_last_event_even_on_another_api(
    clean_fleet: Fleet, tmp_path: Path
) -> None:
    # Given: an API process of its own, streaming a background response
    api, api_url = start_api(clean_fleet.env, tmp_path, name="api-resume")
    try:
        client = sdk(api_url)
        stream = client.responses.create(
            model="mock-model",
            input="a b c d e f g h [mock:interval=0.15]",
            background=True,
            stream=True,
        )
        seen = []
        for event in stream:
            seen.append(event)
            if len(seen) == 6:
                break
        stream.close()
    finally:
        api.stop()  # the API process that served the stream is gone
    response_id = seen[0].response.id  # type: ignore[union-attr]

    # When: the client resumes on another API process after the last event it saw
    client = sdk(clean_fleet.api_url)
    last = seen[-1].sequence_number
    rest = list(client.responses.retrieve(response_id, stream=True, starting_after=last))

    # Then: exactly the remaining events, and the texts join to the stored answer
    numbers = [e.sequence_number for e in seen + rest]
    assert numbers == list(range(len(numbers)))
    assert rest[-1].type == "response.completed"
    deltas = "".join(e.delta for e in seen + rest if e.type == "response.output_text.delta")  # type: ignore[union-attr]
    assert deltas == finished(client, response_id).output_text
    assert deltas == "Echo: a b c d e f g h [mock:interval=0.15]"


def test_the_sdk_stream_helper_and_a_dropped_background_stream(clean_fleet: Fleet) -> None:
    client = sdk(clean_fleet.api_url)
    with client.responses.stream(model="mock-model", input="helped") as stream:
        final = stream.get_final_response()
    assert final.output_text == "Echo: helped" and final.status == "completed"

    # a background response whose stream is dropped runs on
    dropped = client.responses.create(
        model="mock-model", input="keep going [mock:interval=0.1]", background=True, stream=True
    )
    first = next(iter(dropped))
    dropped.close()
    done = finished(client, first.response.id)  # type: ignore[union-attr]
    assert done.status == "completed"
    assert done.output_text == "Echo: keep going [mock:interval=0.1]"


def test_a_dropped_foreground_stream_cancels_its_response(clean_fleet: Fleet) -> None:
    client = sdk(clean_fleet.api_url)
    stream = client.responses.create(
        model="mock-model", input="go [mock:chunks=300] [mock:interval=0.05]", stream=True
    )
    events = iter(stream)
    created = next(events)
    next(events)
    stream.close()
    job_id = "job_" + created.response.id.removeprefix("resp_")  # type: ignore[union-attr]
    with clean_fleet.client() as fleet_client:
        for _ in range(100):
            if fleet_client.get(f"/v1/jobs/{job_id}").json()["status"] == "cancelled":
                break
            time.sleep(0.1)
        assert fleet_client.get(f"/v1/jobs/{job_id}").json()["status"] == "cancelled"


def test_a_conversation_continues_from_the_previous_response(clean_fleet: Fleet) -> None:
    client = sdk(clean_fleet.api_url)
    first = client.responses.create(model="mock-model", instructions="first rules", input="one")
    second = client.responses.create(
        model="mock-model", input="two", previous_response_id=first.id, instructions="new rules"
    )

    assert second.previous_response_id == first.id
    assert job_request(clean_fleet, second.id)["messages"] == [
        {"role": "system", "content": "new rules"},  # instructions are not carried over
        {"role": "user", "content": "one"},
        {"role": "assistant", "content": "Echo: one"},
        {"role": "user", "content": "two"},
    ]
    items = client.responses.input_items.list(second.id, order="asc")
    assert [(i.type, i.role) for i in items.data] == [("message", "user")]  # type: ignore[union-attr]


def test_cancel_a_background_response_and_delete_it(clean_fleet: Fleet) -> None:
    client = sdk(clean_fleet.api_url)
    running = client.responses.create(
        model="mock-model", input="long [mock:chunks=400] [mock:interval=0.05]", background=True
    )
    while client.responses.retrieve(running.id).status == "queued":
        time.sleep(0.05)
    started = time.monotonic()
    cancelled = client.responses.cancel(running.id)
    assert cancelled.status == "cancelled"
    assert time.monotonic() - started < 3
    # what was generated before the cancel is billed
    assert cancelled.usage is not None and cancelled.usage.output_tokens > 0

    foreground = client.responses.create(model="mock-model", input="quick")
    with pytest.raises(openai.BadRequestError):
        client.responses.cancel(foreground.id)

    client.responses.delete(foreground.id)
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(foreground.id)
    with pytest.raises(openai.NotFoundError):
        client.responses.create(model="mock-model", input="x", previous_response_id=foreground.id)


def test_what_cannot_be_translated_is_refused_naming_the_field(clean_fleet: Fleet) -> None:
    with httpx.Client(
        base_url=clean_fleet.api_url, headers={"Authorization": f"Bearer {MASTER_KEY}"}
    ) as c:
        unsupported = c.post(
            "/v1/responses",
            json={"model": "mock-model", "input": [{"type": "web_search_call", "id": "ws_1"}]},
        )
        unstored = c.post(
            "/v1/responses",
            json={"model": "mock-model", "input": "x", "background": True, "store": False},
        )
        tool = c.post(
            "/v1/responses",
            json={"model": "mock-model", "input": "x", "tools": [{"type": "web_search"}]},
        )
    assert unsupported.status_code == 400
    assert unsupported.json()["error"]["param"] == "input[0].type"
    assert unstored.status_code == 400 and "store" in unstored.json()["error"]["message"]
    assert tool.status_code == 400 and tool.json()["error"]["param"].startswith("tools.0")


def test_what_coding_agents_send_is_accepted(clean_fleet: Fleet) -> None:
    # Given a request as a coding agent sends it: reasoning, include, a prompt-cache key
    response = sdk(clean_fleet.api_url).responses.create(
        model="mock-model",
        input="refactor this",
        reasoning={"effort": "low", "summary": "auto"},
        include=["reasoning.encrypted_content"],
        prompt_cache_key="session-42",
    )
    # Then it is answered, the effort is the call's, and the cache key stays here
    assert response.status == "completed" and response.output_text == "Echo: refactor this"
    assert response.reasoning is not None and response.reasoning.effort == "low"
    sent = job_request(clean_fleet, response.id)
    assert sent["reasoning_effort"] == "low"
    assert "prompt_cache_key" not in sent and "include" not in sent
