"""OpenAI's error shape, used by every endpoint and stored on failed jobs."""

from __future__ import annotations

from pydantic import BaseModel

__all__ = ["ErrorBody", "ErrorResponse"]


class ErrorBody(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorResponse(BaseModel):
    error: ErrorBody
