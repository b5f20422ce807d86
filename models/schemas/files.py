"""Files across the HTTP border, in OpenAI's FileObject shape."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel

from models.tables import File

__all__ = ["FilePublic", "FilesPublic"]

FilePurpose = Literal["batch", "batch_output"]


class FilePublic(BaseModel):
    id: str
    object: Literal["file"] = "file"
    bytes: int
    created_at: int
    expires_at: int | None = None
    filename: str
    purpose: str
    status: Literal["processed"] = "processed"
    status_details: str | None = None

    @classmethod
    def from_row(cls, row: File) -> FilePublic:
        return cls(
            id=row.id,
            bytes=row.bytes,
            created_at=int(row.created_at.timestamp()),
            filename=row.filename,
            purpose=row.purpose,
        )


class FilesPublic(BaseModel):
    object: Literal["list"] = "list"
    data: list[FilePublic]
    first_id: str | None
    last_id: str | None
    has_more: bool
