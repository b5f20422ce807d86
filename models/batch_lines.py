"""Validation of a batch input file, line by line, without holding the file.

Every bad line is reported (code, message, line number, param), not only the first;
a file with any bad line runs nothing. The same parser serves the second pass that
turns good lines into jobs, so the two passes cannot disagree.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ValidationError

from models import wire
from models.schemas.chat import ChatCompletionRequest
from models.schemas.embeddings import EmbeddingsRequest

__all__ = [
    "MAX_BYTES",
    "MAX_ERRORS",
    "MAX_LINES",
    "BatchLine",
    "LineError",
    "ValidationReport",
    "parse_lines",
    "validate_file",
]

MAX_LINES = 50_000
MAX_BYTES = 200 * 1024 * 1024
#: Errors reported per file; past this one more entry says how many were left out.
MAX_ERRORS = 10_000

SCHEMAS: dict[str, type[BaseModel]] = {
    "/v1/chat/completions": ChatCompletionRequest,
    "/v1/embeddings": EmbeddingsRequest,
}


@dataclass(frozen=True, slots=True)
class BatchLine:
    line: int
    custom_id: str
    model: str
    body: dict[str, Any]
    #: The line's `cache: {"ttl"}` (stripped from the body), if it gave one.
    cache_ttl: int | None = None


@dataclass(frozen=True, slots=True)
class LineError:
    code: str
    message: str
    line: int | None = None
    param: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"code": self.code, "message": self.message, "line": self.line, "param": self.param}


def parse_lines(
    lines: Iterable[bytes],
    endpoint: str,
    model_known: Callable[[str], bool],
    model_allowed: Callable[[str], bool] | None = None,
) -> Iterator[BatchLine | LineError]:
    """Yield each non-blank line as a BatchLine or a LineError (1-based line numbers).
    Duplicate custom_ids are reported on their second occurrence. `model_allowed` is
    the caller's model access (a line for another model is `model_not_allowed`)."""
    schema = SCHEMAS[endpoint]
    seen: set[str] = set()
    for number, raw in enumerate(lines, start=1):
        if not raw.strip():
            continue
        result = _parse_line(number, raw, endpoint, schema, model_known, model_allowed)
        if isinstance(result, BatchLine):
            if result.custom_id in seen:
                result = LineError(
                    "duplicate_custom_id",
                    f"custom_id {result.custom_id!r} appears more than once",
                    number,
                    "custom_id",
                )
            else:
                seen.add(result.custom_id)
        yield result


def _parse_line(
    number: int,
    raw: bytes,
    endpoint: str,
    schema: type[BaseModel],
    model_known: Callable[[str], bool],
    model_allowed: Callable[[str], bool] | None = None,
) -> BatchLine | LineError:
    try:
        item = wire.loads(raw)
    except wire.WireError as exc:
        return LineError("invalid_value", str(exc), number, exc.param or None)
    except json.JSONDecodeError as exc:
        return LineError("invalid_json", f"line is not valid JSON: {exc.msg}", number)
    except ValueError:
        return LineError("invalid_json", "line is not valid UTF-8 JSON", number)
    if not isinstance(item, dict):
        return LineError("invalid_request", "line must be a JSON object", number)
    custom_id = item.get("custom_id")
    if not isinstance(custom_id, str) or not custom_id:
        return LineError(
            "missing_custom_id", "custom_id must be a non-empty string", number, "custom_id"
        )
    if item.get("method") != "POST":
        return LineError("invalid_method", "method must be POST", number, "method")
    if item.get("url") != endpoint:
        message = f"url {item.get('url')!r} does not match the batch endpoint {endpoint}"
        return LineError("mismatched_url", message, number, "url")
    body = item.get("body")
    if not isinstance(body, dict):
        return LineError("invalid_body", "body must be a JSON object", number, "body")
    try:
        request = schema.model_validate(body)
    except ValidationError as exc:
        first = exc.errors()[0]
        param = "body." + ".".join(str(p) for p in first["loc"])
        return LineError("invalid_body", f"{param}: {first['msg']}", number, param)
    if body.get("stream"):
        return LineError(
            "invalid_body", "body.stream: batch requests are not streamed", number, "body.stream"
        )
    model = str(body["model"])
    if model_allowed is not None and not model_allowed(model):
        message = f"this API key may not use the model {model!r}"
        return LineError("model_not_allowed", message, number, "body.model")
    if not model_known(model):
        message = f"the model {model!r} is not served by this fleet"
        return LineError("model_not_found", message, number, "body.model")
    if isinstance(request, ChatCompletionRequest):
        return BatchLine(number, custom_id, model, request.provider_body(), request.cache_ttl())
    provider_body = request.model_dump(mode="json", exclude_unset=True, exclude={"stream"})
    return BatchLine(number, custom_id, model, provider_body)


@dataclass
class ValidationReport:
    lines: int = 0
    models: set[str] = field(default_factory=set)
    errors: list[LineError] = field(default_factory=list)
    hidden_errors: int = 0
    estimated_prompt_tokens: int = 0

    @property
    def ok(self) -> bool:
        return not self.errors

    def error_dicts(self) -> list[dict[str, Any]]:
        out = [e.as_dict() for e in self.errors]
        if self.hidden_errors:
            out.append(
                LineError(
                    "too_many_errors", f"{self.hidden_errors} more bad lines were not listed"
                ).as_dict()
            )
        return out


def validate_file(
    lines: Iterable[bytes],
    size: int,
    endpoint: str,
    model_known: Callable[[str], bool],
    model_allowed: Callable[[str], bool] | None = None,
) -> ValidationReport:
    """The whole-file check before anything is created."""
    report = ValidationReport()
    if size > MAX_BYTES:
        report.errors.append(
            LineError("file_too_large", f"the file has {size} bytes; at most {MAX_BYTES}")
        )
        return report
    for result in parse_lines(lines, endpoint, model_known, model_allowed):
        report.lines += 1
        if isinstance(result, LineError):
            if len(report.errors) < MAX_ERRORS:
                report.errors.append(result)
            else:
                report.hidden_errors += 1
        else:
            report.models.add(result.model)
            report.estimated_prompt_tokens += estimate_tokens(result.body)
    if report.lines == 0:
        report.errors.append(LineError("empty_file", "the file has no requests"))
    elif report.lines > MAX_LINES:
        report.errors.insert(
            0,
            LineError(
                "too_many_requests", f"the file has {report.lines} requests; at most {MAX_LINES}"
            ),
        )
    return report


def estimate_tokens(body: dict[str, Any]) -> int:
    """About four characters a token of prompt text: enough for a cost estimate."""
    text = 0
    for message in body.get("messages", []):
        content = message.get("content")
        if isinstance(content, str):
            text += len(content)
        elif isinstance(content, list):
            text += sum(len(str(p.get("text", ""))) for p in content if isinstance(p, dict))
    raw_input = body.get("input")
    if isinstance(raw_input, str):
        text += len(raw_input)
    elif isinstance(raw_input, list):
        text += sum(len(x) if isinstance(x, str) else 1 for x in raw_input)
    return text // 4 + 1


def estimate_request_tokens(body: dict[str, Any]) -> int:
    """Prompt tokens plus the completion budget the caller allows: what a call may use
    at most, as far as can be told before it runs."""
    budget = body.get("max_completion_tokens") or body.get("max_tokens") or 0
    return estimate_tokens(body) + int(budget)
