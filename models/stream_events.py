"""A streamed job's events, as workers append them to its Redis Stream and the API
reads them back (models/redis_keys.py: `job_stream`). Pure: no I/O.

Every protocol's stream becomes the same `Delta`s (text or tool-call arguments added to
one choice, or its finish reason), whatever the provider spoke; the API renders them in
the shape its caller asked for (OpenAI's `chat.completion.chunk` for now). An entry
holds one event and the claim (attempt) that wrote it, so a reader can tell two
generations apart; the last entry of a claim that ended the job is an `End`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "Assembly",
    "Delta",
    "End",
    "Entry",
    "decode_entry",
    "deltas_of",
    "encode_entry",
    "without_stream",
]

#: A job request's fields that ask for a stream: the worker's, never sent as they are.
STREAM_FIELDS = ("stream", "stream_options")


def without_stream(request: dict[str, Any]) -> dict[str, Any]:
    """`request` as a call that is not streamed (the same answer)."""
    return {k: v for k, v in request.items() if k not in STREAM_FIELDS}


@dataclass(frozen=True, slots=True)
class Delta:
    """A piece of one choice: text added, tool-call pieces (OpenAI's chunk form:
    `index`, then `id`, `type` and `function.name` on a call's first piece and
    `function.arguments` text on every piece), or the choice's finish reason."""

    index: int = 0
    content: str | None = None
    tool_calls: tuple[dict[str, Any], ...] = ()
    finish_reason: str | None = None

    def as_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"i": self.index}
        if self.content is not None:
            out["c"] = self.content
        if self.tool_calls:
            out["t"] = list(self.tool_calls)
        if self.finish_reason is not None:
            out["f"] = self.finish_reason
        return out

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> Delta:
        return cls(int(raw["i"]), raw.get("c"), tuple(raw.get("t") or ()), raw.get("f"))


@dataclass(frozen=True, slots=True)
class End:
    """The claim's last event: the job's end status, the OpenAI `usage` object when the
    provider reported one, and the OpenAI-shaped error (with `status_code`) of a job
    that failed."""

    status: str
    usage: dict[str, Any] | None = None
    error: dict[str, Any] | None = None


Event = Delta | End


@dataclass(frozen=True, slots=True)
class Entry:
    """One entry of a job's stream: its Redis id, the claim that wrote it, its event."""

    id: str
    attempt: int
    event: Event


def encode_entry(attempt: int, event: Event) -> dict[str, str]:
    """The fields of the XADD for `event` written by claim `attempt`."""
    if isinstance(event, Delta):
        return {"a": str(attempt), "d": json.dumps(event.as_json(), separators=(",", ":"))}
    end = {"status": event.status, "usage": event.usage, "error": event.error}
    return {"a": str(attempt), "e": json.dumps(end, separators=(",", ":"))}


def decode_entry(entry_id: bytes | str, fields: dict[bytes, bytes]) -> Entry:
    ident = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
    attempt = int(fields[b"a"])
    if b"d" in fields:
        return Entry(ident, attempt, Delta.from_json(json.loads(fields[b"d"])))
    end = json.loads(fields[b"e"])
    return Entry(ident, attempt, End(end["status"], end.get("usage"), end.get("error")))


def deltas_of(response: dict[str, Any]) -> list[Delta]:
    """A whole `chat.completion` as the deltas a stream of it would have carried: one
    per choice with all its text and tool calls, then each choice's finish reason.
    For answers that were not streamed (a provider without streaming, the response
    cache) and for a reader whose stream is gone."""
    deltas: list[Delta] = []
    finishes: list[Delta] = []
    for position, choice in enumerate(response.get("choices") or []):
        index = int(choice.get("index", position))
        message = choice.get("message") or {}
        calls = tuple(
            {"index": i, **{k: v for k, v in call.items() if k in ("id", "type", "function")}}
            for i, call in enumerate(message.get("tool_calls") or [])
        )
        content = message.get("content")
        if content is not None or calls:
            deltas.append(Delta(index, content, calls))
        finishes.append(Delta(index, finish_reason=choice.get("finish_reason") or "stop"))
    return deltas + finishes


@dataclass
class _Choice:
    content: list[str] = field(default_factory=list)
    calls: dict[int, dict[str, Any]] = field(default_factory=dict)
    finish_reason: str | None = None


@dataclass
class Assembly:
    """Deltas put back together into the `chat.completion` the stream amounts to."""

    choices: dict[int, _Choice] = field(default_factory=dict)
    #: Deltas with text or tool-call pieces: roughly the tokens generated.
    pieces: int = 0

    def add(self, delta: Delta) -> None:
        choice = self.choices.setdefault(delta.index, _Choice())
        if delta.content:
            choice.content.append(delta.content)
        for piece in delta.tool_calls:
            call = choice.calls.setdefault(
                int(piece.get("index", 0)),
                {"id": None, "type": "function", "function": {"name": "", "arguments": ""}},
            )
            call["id"] = piece.get("id") or call["id"]
            call["type"] = piece.get("type") or call["type"]
            function = piece.get("function") or {}
            call["function"]["name"] += function.get("name") or ""
            call["function"]["arguments"] += function.get("arguments") or ""
        if delta.content or delta.tool_calls:
            self.pieces += 1
        if delta.finish_reason is not None:
            choice.finish_reason = delta.finish_reason

    def completion(self, ident: str, model: str, created: int) -> dict[str, Any]:
        choices = []
        for index in sorted(self.choices):
            choice = self.choices[index]
            message: dict[str, Any] = {"role": "assistant", "content": "".join(choice.content)}
            if choice.calls:
                message["tool_calls"] = [choice.calls[i] for i in sorted(choice.calls)]
                message["content"] = message["content"] or None
            choices.append(
                {
                    "index": index,
                    "message": message,
                    "finish_reason": choice.finish_reason or "stop",
                    "logprobs": None,
                }
            )
        return {
            "id": ident,
            "object": "chat.completion",
            "created": created,
            "model": model,
            "choices": choices,
        }
