"""A streamed job's events: what workers write is what the API reads back, and a whole
answer turned into deltas assembles into the same answer."""

from __future__ import annotations

from typing import Any

from openai.types.chat import ChatCompletion

from models.stream_events import Assembly, Delta, End, decode_entry, deltas_of, encode_entry

ANSWER: dict[str, Any] = {
    "id": "chatcmpl-x",
    "object": "chat.completion",
    "created": 7,
    "model": "m",
    "choices": [
        {
            "index": 0,
            "message": {"role": "assistant", "content": "Paris, and the time."},
            "finish_reason": "stop",
            "logprobs": None,
        },
        {
            "index": 1,
            "message": {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": "call_1",
                        "type": "function",
                        "function": {"name": "get_time", "arguments": '{"tz":"CET"}'},
                    }
                ],
            },
            "finish_reason": "tool_calls",
            "logprobs": None,
        },
    ],
}


def test_entries_round_trip_with_their_claim() -> None:
    delta = Delta(1, "hé", ({"index": 0, "function": {"arguments": "{"}},), None)
    end = End("failed", None, {"message": "x", "status_code": 502})
    for attempt, event in ((3, delta), (4, end), (1, Delta(finish_reason="stop"))):
        fields = {k.encode(): v.encode() for k, v in encode_entry(attempt, event).items()}
        entry = decode_entry(b"5-1", fields)
        assert (entry.id, entry.attempt, entry.event) == ("5-1", attempt, event)


def test_a_whole_answer_as_deltas_assembles_back_into_itself() -> None:
    assembly = Assembly()
    for delta in deltas_of(ANSWER):
        assembly.add(delta)
    rebuilt = assembly.completion("chatcmpl-x", "m", 7)
    assert ChatCompletion.model_validate(rebuilt) == ChatCompletion.model_validate(ANSWER)
    assert assembly.pieces == 2
