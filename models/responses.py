"""The Responses API's own table: a response is a job (its run, result, usage and
billing are the job's), plus what the job format does not keep: the request as the
caller gave it (instructions, input items, tools, text format) and the conversation it
continues, for `previous_response_id`, `input_items` and the Response object."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import JSON, Boolean, ForeignKey, Index, String
from sqlalchemy.orm import Mapped, mapped_column

from models.tables import Base, UTCDateTime

__all__ = ["ResponseRecord", "job_id_of", "response_id_of"]


def response_id_of(job_id: str) -> str:
    """A response's id is its job's, as OpenAI spells it (`resp_...`)."""
    return "resp_" + job_id.removeprefix("job_")


def job_id_of(response_id: str) -> str:
    return "job_" + response_id.removeprefix("resp_")


class ResponseRecord(Base):
    __tablename__ = "responses"

    id: Mapped[str] = mapped_column(String(48), primary_key=True)
    job_id: Mapped[str] = mapped_column(
        String(48), ForeignKey("jobs.id", ondelete="CASCADE"), unique=True
    )
    owner_key: Mapped[str] = mapped_column(String(64))
    #: The request as accepted (input items normalized, with their ids).
    request: Mapped[dict[str, Any]] = mapped_column(JSON)
    #: The chat messages of the conversation up to and with this input, instructions
    #: aside (they are not carried over to a next response).
    conversation: Mapped[list[Any]] = mapped_column(JSON)
    background: Mapped[bool] = mapped_column(Boolean)
    store: Mapped[bool] = mapped_column(Boolean)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    deleted_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)

    __table_args__ = (Index("ix_responses_owner", "owner_key", "id"),)
