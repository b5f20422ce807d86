"""/v1/files: OpenAI's Files API for batch input and output. Uploads are streamed to
file storage in chunks, never held whole in memory."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated, Any, BinaryIO

from fastapi import APIRouter, Depends, Form, Query, UploadFile
from fastapi.responses import StreamingResponse
from sqlalchemy import delete, select
from starlette.concurrency import run_in_threadpool

from models.ids import new_id
from models.schemas.files import FilePublic, FilesPublic
from models.storage import discarded_on_error, iter_chunks
from models.tables import File, utcnow
from models.wire import check_text
from producer_api import transactions
from producer_api.auth import Caller, require_key
from producer_api.context import ApiContext, get_context
from producer_api.errors import API_ERRORS, BODY_ERRORS, ApiError

router = APIRouter(prefix="/v1/files", tags=["files"], responses=API_ERRORS)

Ctx = Annotated[ApiContext, Depends(get_context)]
Auth = Annotated[Caller, Depends(require_key)]
UPLOAD_CHUNK = 1 << 20
#: A sane name for a file, well inside its column (String(512)).
MAX_FILENAME = 255
DEFAULT_FILENAME = "upload.jsonl"


@router.post("", response_model=FilePublic, responses=BODY_ERRORS)
async def upload_file(
    ctx: Ctx, caller: Auth, file: UploadFile, purpose: Annotated[str, Form()]
) -> FilePublic:
    """The form is parsed (the upload spooled by the framework) before this runs, so
    everything that can be refused is refused before a byte reaches storage; storing
    and recording then run in one thread, which a client leaving cannot interrupt."""
    filename = _checked_upload(file, purpose, ctx.settings.max_file_bytes)
    file_id = new_id("file")
    row = File(
        id=file_id,
        owner_key=caller.owner,
        purpose=purpose,
        filename=filename,
        bytes=0,
        storage_key=file_id,
        created_at=utcnow(),
    )
    await run_in_threadpool(_store, ctx, file.file, row)
    return FilePublic.from_row(row)


def _checked_upload(file: UploadFile, purpose: str, limit: int) -> str:
    """The upload's filename, once its purpose, filename and size are acceptable."""
    if purpose != "batch":
        raise ApiError(400, "purpose must be 'batch'", param="purpose", code="invalid_purpose")
    filename = file.filename or DEFAULT_FILENAME
    if len(filename) > MAX_FILENAME:
        raise ApiError(
            400,
            f"filename: at most {MAX_FILENAME} characters, not {len(filename)}",
            param="filename",
            code="invalid_value",
        )
    if problem := check_text(filename):
        raise ApiError(400, f"filename {problem}", param="filename", code="invalid_value")
    if file.size is not None and file.size > limit:
        raise _too_large(limit)
    return filename


def _too_large(limit: int) -> ApiError:
    return ApiError(413, f"files are limited to {limit} bytes", param="file")


def _store(ctx: ApiContext, source: BinaryIO, row: File) -> None:
    """Copy the upload into storage and insert its row; on any failure the stored
    bytes (or the writer's part file) are removed, so no file stays without a row."""
    limit = ctx.settings.max_file_bytes
    with discarded_on_error(ctx.storage, row.storage_key):
        with ctx.storage.writer(row.storage_key) as sink:
            for chunk in iter_chunks(source, UPLOAD_CHUNK):
                row.bytes += len(chunk)
                if row.bytes > limit:
                    raise _too_large(limit)
                sink.write(chunk)
        transactions.add(ctx.sessions, row)


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
