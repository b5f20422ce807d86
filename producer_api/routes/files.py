"""/v1/files: OpenAI's Files API for batch input and output. Uploads are streamed to
file storage in chunks, never held whole in memory."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Form, Query, UploadFile
from fastapi.responses import StreamingResponse
from sqlalchemy import delete, select
from starlette.concurrency import run_in_threadpool

from models.ids import new_id
from models.schemas.files import FilePublic, FilesPublic
from models.storage import iter_chunks
from models.tables import File, utcnow
from producer_api.auth import Caller, require_key
from producer_api.context import ApiContext, get_context
from producer_api.errors import API_ERRORS, BODY_ERRORS, ApiError

router = APIRouter(prefix="/v1/files", tags=["files"], responses=API_ERRORS)

Ctx = Annotated[ApiContext, Depends(get_context)]
Auth = Annotated[Caller, Depends(require_key)]
UPLOAD_CHUNK = 1 << 20


@router.post("", response_model=FilePublic, responses=BODY_ERRORS)
async def upload_file(
    ctx: Ctx, caller: Auth, file: UploadFile, purpose: Annotated[str, Form()]
) -> FilePublic:
    if purpose != "batch":
        raise ApiError(400, "purpose must be 'batch'", param="purpose", code="invalid_purpose")
    file_id = new_id("file")
    size = 0
    with ctx.storage.writer(file_id) as sink:
        while chunk := await file.read(UPLOAD_CHUNK):
            size += len(chunk)
            if size > ctx.settings.max_file_bytes:
                limit = ctx.settings.max_file_bytes
                raise ApiError(413, f"files are limited to {limit} bytes", param="file")
            await run_in_threadpool(sink.write, chunk)
    row = File(
        id=file_id,
        owner_key=caller.owner,
        purpose=purpose,
        filename=file.filename or "upload.jsonl",
        bytes=size,
        storage_key=file_id,
        created_at=utcnow(),
    )
    await run_in_threadpool(_add, ctx, row)
    return FilePublic.from_row(row)


def _add(ctx: ApiContext, row: File) -> None:
    with ctx.sessions.begin() as session:
        session.add(row)


def load_file(ctx: ApiContext, caller: Caller, file_id: str) -> File:
    with ctx.sessions() as session:
        stmt = select(File).where(File.id == file_id)
        if not caller.is_admin:
            stmt = stmt.where(File.owner_key == caller.owner)
        row = session.scalars(stmt).first()
    if row is None:
        raise ApiError(404, f"No file with id {file_id!r}", param="file_id", code="not_found")
    return row


@router.get("", response_model=FilesPublic)
def list_files(
    ctx: Ctx,
    caller: Auth,
    purpose: str | None = None,
    after: str | None = None,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 100,
    order: Annotated[str, Query(pattern="^(asc|desc)$")] = "desc",
) -> FilesPublic:
    stmt = select(File).limit(limit + 1)
    stmt = stmt.order_by(File.id.desc() if order == "desc" else File.id.asc())
    if not caller.is_admin:
        stmt = stmt.where(File.owner_key == caller.owner)
    if purpose:
        stmt = stmt.where(File.purpose == purpose)
    if after:
        stmt = stmt.where(File.id < after if order == "desc" else File.id > after)
    with ctx.sessions() as session:
        rows = list(session.scalars(stmt))
    page = [FilePublic.from_row(r) for r in rows[:limit]]
    return FilesPublic(
        data=page,
        first_id=page[0].id if page else None,
        last_id=page[-1].id if page else None,
        has_more=len(rows) > limit,
    )


@router.get("/{file_id}", response_model=FilePublic)
def get_file(file_id: str, ctx: Ctx, caller: Auth) -> FilePublic:
    return FilePublic.from_row(load_file(ctx, caller, file_id))


@router.get("/{file_id}/content")
def file_content(file_id: str, ctx: Ctx, caller: Auth) -> StreamingResponse:
    row = load_file(ctx, caller, file_id)

    def stream() -> Iterator[bytes]:
        with ctx.storage.reader(row.storage_key) as handle:
            yield from iter_chunks(handle)

    return StreamingResponse(
        stream(),
        media_type="application/jsonl",
        headers={"Content-Length": str(row.bytes)},
    )


@router.delete("/{file_id}")
def delete_file(file_id: str, ctx: Ctx, caller: Auth) -> dict[str, Any]:
    row = load_file(ctx, caller, file_id)
    with ctx.sessions.begin() as session:
        session.execute(delete(File).where(File.id == row.id))
    ctx.storage.delete(row.storage_key)
    return {"id": row.id, "object": "file", "deleted": True}
