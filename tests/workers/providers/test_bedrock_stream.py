"""Bedrock's ConverseStream against recorded events, framed as AWS event-stream messages:
the framing and every event read back by botocore's own event-stream parser against the
ConverseStream output shape, the deltas assembled into an answer that parses as
openai's `ChatCompletion`, and the request signed for exactly the bytes sent."""

from __future__ import annotations

import binascii
import json
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import botocore.session
import pytest
from botocore.eventstream import EventStream
from botocore.parsers import EventStreamJSONParser
from openai.types.chat import ChatCompletion

from models.fleet_config import parse_fleet_config
from tests.support.provider_streams import Recorded, assemble, run_stream
from workers.providers import errors
from workers.providers.bedrock import BedrockProtocol

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "bedrock"
RUNTIME = botocore.session.get_session().get_service_model("bedrock-runtime")
CONVERSE_STREAM = RUNTIME.operation_model("ConverseStream")
REQUEST = {"model": "claude", "messages": [{"role": "user", "content": "Weather in Paris?"}]}
EVENTS = "application/vnd.amazon.eventstream"


def frame(headers: dict[str, str], payload: bytes) -> bytes:
    """One AWS event-stream message (string headers only), CRCs included."""
    encoded = b"".join(
        struct.pack("B", len(k)) + k.encode() + b"\x07" + struct.pack(">H", len(v)) + v.encode()
        for k, v in headers.items()
    )
    total = 12 + len(encoded) + len(payload) + 4
    prelude = struct.pack(">II", total, len(encoded))
    prelude += struct.pack(">I", binascii.crc32(prelude) & 0xFFFFFFFF)
    message = prelude + encoded + payload
    return message + struct.pack(">I", binascii.crc32(message) & 0xFFFFFFFF)


def event(name: str, body: dict[str, Any]) -> bytes:
    headers = {":event-type": name, ":content-type": "application/json", ":message-type": "event"}
    return frame(headers, json.dumps(body).encode())


def exception(name: str, message: str) -> bytes:
    headers = {":exception-type": name, ":content-type": "application/json"}
    return frame(
        {**headers, ":message-type": "exception"}, json.dumps({"message": message}).encode()
    )


class _Raw:
    def __init__(self, data: bytes) -> None:
        self.data = data

    def stream(self) -> Iterator[bytes]:
        yield self.data


def recorded() -> bytes:
    """The recorded events as the wire carries them, read back by botocore's parser."""
    body = b"".join(
        event(n, b)
        for n, b in json.loads((FIXTURES / "converse_stream_tool_use.json").read_bytes())
    )
    shape = CONVERSE_STREAM.output_shape.members["stream"]
    parsed = list(EventStream(_Raw(body), shape, EventStreamJSONParser(), CONVERSE_STREAM.name))
    assert [next(iter(e)) for e in parsed][-1] == "metadata"
    return body


def stream(handler: Any) -> list[Any]:
    params = {
        "model": "bedrock/anthropic.claude-3-5-sonnet-20240620-v1:0",
        "aws_access_key_id": "AKIDEXAMPLE",
        "aws_secret_access_key": "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
        "aws_region_name": "us-east-1",
    }
    raw = {"model_list": [{"model_name": "claude", "litellm_params": params}]}
    return run_stream(
        BedrockProtocol(), parse_fleet_config(raw, {}).model_list[0], REQUEST, handler
    )


def test_text_and_a_tool_call_stream_into_one_openai_answer_with_its_usage() -> None:
    upstream = Recorded(recorded(), EVENTS)

    whole, usages = assemble(stream(upstream))

    assert upstream.urls == [
        "https://bedrock-runtime.us-east-1.amazonaws.com/model/"
        "anthropic.claude-3-5-sonnet-20240620-v1%3A0/converse-stream"
    ]
    assert upstream.sent[0]["messages"] == [
        {"role": "user", "content": [{"text": "Weather in Paris?"}]}
    ]
    completion = ChatCompletion.model_validate(whole)
    message = completion.choices[0].message
    assert message.content == "I'll check the weather."
    (call,) = message.tool_calls or []
    assert call.id == "tooluse_kZJMlvQmRJ6eAyJE5GIl7Q"
    assert json.loads(call.function.arguments) == {"city": "Paris"}  # type: ignore[union-attr]
    assert completion.choices[0].finish_reason == "tool_calls"
    (usage,) = usages
    assert (usage.prompt_tokens, usage.completion_tokens) == (412, 57)


def test_an_exception_event_a_cut_stream_and_a_garbled_frame_map_to_the_error_tree() -> None:
    first = event("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"text": "Hi"}})
    with pytest.raises(errors.RateLimitedError, match="Too many tokens"):
        stream(Recorded(first + exception("throttlingException", "Too many tokens"), EVENTS))
    with pytest.raises(errors.UnavailableError):
        stream(Recorded(first + exception("modelStreamErrorException", "broke"), EVENTS))
    with pytest.raises(errors.ProviderConnectionError, match="before its last event"):
        stream(Recorded(first, EVENTS))
    garbled = bytearray(first)
    garbled[-1] ^= 0xFF
    with pytest.raises(errors.MalformedResponseError, match="not an AWS event stream"):
        stream(Recorded(bytes(garbled), EVENTS))
