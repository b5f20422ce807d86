"""The Responses events of a job's deltas, read by the `openai` SDK's own stream state
(what `responses.stream()` runs): every event parses as its `ResponseStreamEvent`
type, the SDK assembles the same answer the stored job gives, and `starting_after`
drops exactly the events already sent."""

from __future__ import annotations

import json
from typing import Any

import pytest
from openai import omit
from openai.lib.streaming.responses._responses import ResponseStreamState
from openai.types.responses import Response, ResponseStreamEvent
from pydantic import TypeAdapter

from models.responses_shape import output_items
from models.stream_events import Assembly, Delta
from producer_api.response_events import ResponseRenderer
from producer_api.stream_relay import Finished, Piece

EVENT: TypeAdapter[Any] = TypeAdapter(ResponseStreamEvent)
REQUEST = {"model": "mock-model", "input": [], "tools": [{"type": "function", "name": "f"}]}
USAGE = {"prompt_tokens": 9, "completion_tokens": 6, "total_tokens": 15}
DELTAS = [
    Delta(content="Let me "),
    Delta(content="look."),
    Delta(
        tool_calls=(
            {
                "index": 0,
                "id": "call_a",
                "type": "function",
                "function": {"name": "f", "arguments": ""},
            },
        )
    ),
    Delta(tool_calls=({"index": 0, "function": {"arguments": '{"q":'}},)),
    Delta(tool_calls=({"index": 0, "function": {"arguments": ' "x"}'}},)),
    Delta(finish_reason="tool_calls"),
]


def rendered(after: int = -1, end: Finished | None = None) -> list[Any]:
    renderer = ResponseRenderer("resp_abc", REQUEST, 1_700_000_000, after=after)
    events = renderer.opening()
    for i, delta in enumerate(DELTAS):
        events += renderer.piece(Piece(f"{i}-0", delta))
    events += renderer.finished(end or Finished("succeeded", USAGE))
    return [EVENT.validate_python(json.loads(e.data)) for e in events]


def test_the_sdk_assembles_text_and_a_function_call_into_the_stored_answer() -> None:
    events = rendered()

    state: ResponseStreamState[Any] = ResponseStreamState(input_tools=[], text_format=omit)
    for event in events:
        state.handle_event(event)
    final = events[-1].response
    assert events[-1].type == "response.completed"
    assert final.output_text == "Let me look."
    (call,) = [item for item in final.output if item.type == "function_call"]
    assert (call.call_id, call.name, json.loads(call.arguments)) == ("call_a", "f", {"q": "x"})
    assert final.usage.output_tokens == 6
    # the items streamed are the items a later GET presents (same ids, same order)
    assembly = Assembly()
    for delta in DELTAS:
        assembly.add(delta)
    stored = output_items(assembly.completion("x", "m", 0), "abc")
    as_stored = Response.model_validate({**final.model_dump(), "output": stored})
    assert final.output == as_stored.output
    assert [e.sequence_number for e in events] == list(range(len(events)))


@pytest.mark.parametrize("after", [0, 4, 9])
def test_starting_after_sends_exactly_the_events_after_it(after: int) -> None:
    whole = rendered()
    assert rendered(after) == whole[after + 1 :]


def test_a_failure_and_a_cancel_end_the_stream_as_the_sdk_expects() -> None:
    error = {"message": "provider down", "type": "server_error", "status_code": 503}
    failed = rendered(end=Finished("failed", None, error))[-1]
    assert failed.type == "response.failed"
    assert failed.response.status == "failed"
    assert failed.response.error.code == "server_error"
    cancelled = rendered(end=Finished("cancelled"))[-1]
    assert (cancelled.type, cancelled.code) == ("error", "response_cancelled")
