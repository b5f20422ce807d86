"""The Responses API's intake and reads: a response is a job plus its ResponseRecord
(models/responses.py), stored in one transaction; its Response object is presented
from both (models/responses_shape.py)."""

from __future__ import annotations

import datetime as dt
from typing import Any

from pydantic import ValidationError
from sqlalchemy import select, update

from models.contract import CHAT_COMPLETIONS, PRIORITY_DEFAULT, PRIORITY_SYNC
from models.ids import new_id
from models.responses import ResponseRecord, response_id_of
from models.responses_shape import (
    FINISH_STATUS,
    ResponsesShapeError,
    assistant_message,
    chat_body,
    chat_messages,
    input_items,
    output_items,
    response_object,
    response_usage,
)
from models.schemas.chat import ChatCompletionRequest
from models.schemas.responses import ResponseCreate
from models.tables import Job, JobStatus, utcnow
from producer_api.auth import Caller
from producer_api.context import ApiContext
from producer_api.errors import ApiError, first_problem
from producer_api.jobs_service import cancel_job, insert_job, load_job

__all__ = [
    "create_response",
    "delete_response",
    "error_of",
    "load_response",
    "present",
    "status_of",
]

#: Job status -> Response status (a succeeded job may still be `incomplete`).
_STATUS = {
    JobStatus.QUEUED: "queued",
    JobStatus.RUNNING: "in_progress",
    JobStatus.SUCCEEDED: "completed",
    JobStatus.FAILED: "failed",
    JobStatus.EXPIRED: "failed",
    JobStatus.CANCELLED: "cancelled",
}


def create_response(
    ctx: ApiContext, caller: Caller, body: ResponseCreate
) -> tuple[ResponseRecord, Job]:
    """Translate, then store the job and its record together and publish the job. The
    job always streams its deltas, so any response can be followed as it runs."""
    job_id = new_id("job")
    ident = response_id_of(job_id)
    history: list[dict[str, Any]] = []
    if body.previous_response_id is not None:
        history = _history(ctx, caller, body.previous_response_id)
    try:
        items = input_items(body.input, ident.removeprefix("resp_"))
        conversation = history + chat_messages(items)
        chat = chat_body(body, conversation)
        ChatCompletionRequest.model_validate(chat)
    except ResponsesShapeError as exc:
        raise ApiError(400, str(exc), param=exc.param) from None
    except ValidationError as exc:
        raise first_problem(exc) from None
    request = body.model_dump(mode="json", exclude_none=True, by_alias=True, exclude={"input"})
    record = ResponseRecord(
        id=ident,
        job_id=job_id,
        owner_key=caller.owner,
        request={**request, "input": items},
        conversation=conversation,
        background=bool(body.background),
        store=body.store is not False,
        created_at=utcnow(),
    )
    foreground = not body.background
    deadline = utcnow() + dt.timedelta(seconds=ctx.settings.sync_capacity_wait_seconds)
    job = insert_job(
        ctx,
        caller,
        kind=CHAT_COMPLETIONS,
        model=body.model,
        request={**chat, "stream": True},
        priority=PRIORITY_SYNC if foreground else PRIORITY_DEFAULT,
        deadline=deadline if foreground else None,
        metadata=body.metadata,
        job_id=job_id,
        companions=(record,),
    )
    return record, job


def _history(ctx: ApiContext, caller: Caller, previous_id: str) -> list[dict[str, Any]]:
    """The conversation a response continues: the previous one's, then its answer."""
    try:
        record, job = load_response(ctx, caller, previous_id)
    except ApiError:
        raise ApiError(
            404, f"No response with id {previous_id!r}", param="previous_response_id"
        ) from None
    if job.status != JobStatus.SUCCEEDED or job.response is None:
        raise ApiError(
            400,
            f"response {previous_id!r} has not completed ({status_of(job)})",
            param="previous_response_id",
        )
    return [*record.conversation, assistant_message(job.response)]


def load_response(ctx: ApiContext, caller: Caller, response_id: str) -> tuple[ResponseRecord, Job]:
    """The caller's stored, not deleted response, or a 404."""
    with ctx.sessions() as session:
        stmt = select(ResponseRecord).where(
            ResponseRecord.id == response_id,
            ResponseRecord.deleted_at.is_(None),
            ResponseRecord.store.is_(True),
        )
        if not caller.is_admin:
            stmt = stmt.where(ResponseRecord.owner_key == caller.owner)
        record = session.scalars(stmt).first()
    if record is None:
        raise ApiError(404, f"No response with id {response_id!r}", param="response_id")
    return record, load_job(ctx, caller, record.job_id)


def status_of(job: Job) -> str:
    status = _STATUS[JobStatus(job.status)]
    if status == "completed" and FINISH_STATUS.get(_finish(job.response)):
        return FINISH_STATUS[_finish(job.response)][0]
    return status


def error_of(error: dict[str, Any] | None) -> dict[str, Any]:
    """A stored job error as a Response error (its `code` one of OpenAI's)."""
    error = error or {}
    status = int(error.get("status_code") or 500)
    code = "rate_limit_exceeded" if status == 429 else "server_error"
    if 400 <= status < 500 and status not in (408, 429):
        code = "invalid_prompt"
    return {"code": code, "message": str(error.get("message") or "the response failed")}


def present(record: ResponseRecord, job: Job) -> dict[str, Any]:
    """The Response object of a record and its job as they are now."""
    status = status_of(job)
    finish = FINISH_STATUS.get(_finish(job.response))
    return response_object(
        record.id,
        record.request,
        int(record.created_at.timestamp()),
        status,
        output=output_items(job.response, record.id.removeprefix("resp_")),
        usage=response_usage(job.openai_usage()),
        error=error_of(job.error) if status == "failed" else None,
        incomplete=finish[1] if finish and status == "incomplete" else None,
    )


def delete_response(ctx: ApiContext, caller: Caller, response_id: str) -> None:
    """Gone from every read; a response still running is cancelled first."""
    record, job = load_response(ctx, caller, response_id)
    if job.status in (JobStatus.QUEUED, JobStatus.RUNNING):
        cancel_job(ctx, caller, job.id)
    with ctx.sessions.begin() as session:
        session.execute(
            update(ResponseRecord).where(ResponseRecord.id == record.id).values(deleted_at=utcnow())
        )


def _finish(response: dict[str, Any] | None) -> str:
    choices = (response or {}).get("choices") or [{}]
    return str(choices[0].get("finish_reason") or "stop")
