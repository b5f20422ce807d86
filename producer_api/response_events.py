"""A response's job events as the Responses API's stream, the sequence the `openai`
SDK's `responses.stream()` and `responses.retrieve(..., stream=True)` read:

    response.created, response.in_progress (at the first delta or the end)
    response.output_item.added (a message), response.content_part.added,
        response.output_text.delta ..., response.output_text.done,
        response.content_part.done, response.output_item.done
    response.output_item.added (a function_call), response.function_call_arguments.delta
        ..., response.function_call_arguments.done, response.output_item.done
    response.completed | response.incomplete | response.failed; a cancelled response
        ends with an `error` event (code `response_cancelled`)

Every event has a `sequence_number`, counted from the start of the job's stream, so the
same entries always give the same numbers: a client that reconnects with
`starting_after=N` is sent exactly the events after N."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from sse_starlette import ServerSentEvent

from models.responses_shape import FINISH_STATUS, output_items, response_object, response_usage
from models.stream_events import Assembly
from producer_api.responses_service import error_of
from producer_api.stream_relay import Finished, Piece

__all__ = ["ResponseRenderer"]


@dataclass
class ResponseRenderer:
    ident: str
    request: dict[str, Any]
    created_at: int
    #: Events numbered up to this one are not sent again.
    after: int = -1
    _seq: int = 0
    _started: bool = False
    _assembly: Assembly = field(default_factory=Assembly)
    #: The open message's output index; each tool call's (by its index).
    _text: int | None = None
    _calls: dict[int, int] = field(default_factory=dict)
    _items: int = 0
    _open_calls: list[int] = field(default_factory=list)

    @property
    def _hex(self) -> str:
        return self.ident.removeprefix("resp_")

    def opening(self) -> list[ServerSentEvent]:
        return self._emit("response.created", response=self._object("queued"))

    def piece(self, piece: Piece) -> list[ServerSentEvent]:
        delta = piece.delta
        self._assembly.add(delta)
        out = self._start()
        if delta.content:
            if self._text is None:
                out += self._open_text()
            out += self._emit(
                "response.output_text.delta",
                item_id=f"msg_{self._hex}",
                output_index=self._text,
                content_index=0,
                delta=delta.content,
                logprobs=[],
            )
        for call in delta.tool_calls:
            index = int(call.get("index", 0))
            if index not in self._calls:
                out += self._close_text() + self._open_call(index, call)
            arguments = (call.get("function") or {}).get("arguments")
            if arguments:
                out += self._emit(
                    "response.function_call_arguments.delta",
                    item_id=f"fc_{self._hex}_{index}",
                    output_index=self._calls[index],
                    delta=arguments,
                )
        return out

    def finished(self, end: Finished) -> list[ServerSentEvent]:
        out = self._start()
        if end.status == "cancelled":
            message = "the response was cancelled"
            return out + self._emit("error", code="response_cancelled", message=message, param=None)
        if end.status != "succeeded":
            failed = self._object("failed", error=error_of(end.error))
            return out + self._emit("response.failed", response=failed)
        out += self._close_text()
        for index in self._open_calls:
            out += self._close_call(index)
        completion = self._assembly.completion(self.ident, str(self.request["model"]), 0)
        finish = FINISH_STATUS.get(
            completion["choices"][0]["finish_reason"] if completion["choices"] else "stop"
        )
        status, reason = finish if finish else ("completed", None)
        whole = self._object(
            status,
            output=output_items(completion, self._hex),
            usage=response_usage(end.usage),
            incomplete=reason,
        )
        return out + self._emit(f"response.{status}", response=whole)

    def _start(self) -> list[ServerSentEvent]:
        if self._started:
            return []
        self._started = True
        return self._emit("response.in_progress", response=self._object("in_progress"))

    def _open_text(self) -> list[ServerSentEvent]:
        self._text = self._items
        self._items += 1
        item = {
            "id": f"msg_{self._hex}",
            "type": "message",
            "role": "assistant",
            "status": "in_progress",
            "content": [],
        }
        part = {"type": "output_text", "text": "", "annotations": [], "logprobs": []}
        return self._emit(
            "response.output_item.added", output_index=self._text, item=item
        ) + self._emit(
            "response.content_part.added",
            item_id=item["id"],
            output_index=self._text,
            content_index=0,
            part=part,
        )

    def _close_text(self) -> list[ServerSentEvent]:
        if self._text is None:
            return []
        index, self._text = self._text, None
        text = "".join(self._assembly.choices[0].content) if 0 in self._assembly.choices else ""
        item_id = f"msg_{self._hex}"
        part = {"type": "output_text", "text": text, "annotations": [], "logprobs": []}
        where = {"item_id": item_id, "output_index": index, "content_index": 0}
        item = {
            "id": item_id,
            "type": "message",
            "role": "assistant",
            "status": "completed",
            "content": [part],
        }
        return (
            self._emit("response.output_text.done", **where, text=text, logprobs=[])
            + self._emit("response.content_part.done", **where, part=part)
            + self._emit("response.output_item.done", output_index=index, item=item)
        )

    def _open_call(self, index: int, call: dict[str, Any]) -> list[ServerSentEvent]:
        self._calls[index] = self._items
        self._items += 1
        self._open_calls.append(index)
        item = self._call_item(index, call.get("id"), (call.get("function") or {}).get("name"))
        return self._emit("response.output_item.added", output_index=self._calls[index], item=item)

    def _close_call(self, index: int) -> list[ServerSentEvent]:
        choice = self._assembly.choices.get(0)
        whole = choice.calls.get(index, {}) if choice else {}
        function = whole.get("function") or {}
        item = self._call_item(index, whole.get("id"), function.get("name"), "completed")
        item["arguments"] = function.get("arguments") or ""
        position = self._calls[index]
        return self._emit(
            "response.function_call_arguments.done",
            item_id=item["id"],
            output_index=position,
            name=item["name"],
            arguments=item["arguments"],
        ) + self._emit("response.output_item.done", output_index=position, item=item)

    def _call_item(
        self, index: int, call_id: Any, name: Any, status: str = "in_progress"
    ) -> dict[str, Any]:
        return {
            "id": f"fc_{self._hex}_{index}",
            "type": "function_call",
            "call_id": call_id or f"call_{self._hex}_{index}",
            "name": name or "",
            "arguments": "",
            "status": status,
        }

    def _object(self, status: str, **extra: Any) -> dict[str, Any]:
        return response_object(self.ident, self.request, self.created_at, status, **extra)

    def _emit(self, kind: str, /, **data: Any) -> list[ServerSentEvent]:
        seq, self._seq = self._seq, self._seq + 1
        if seq <= self.after:
            return []
        body = json.dumps({"type": kind, **data, "sequence_number": seq}, ensure_ascii=False)
        return [ServerSentEvent(body, event=kind)]
