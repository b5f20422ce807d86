"""File storage behind a small interface: the bytes of uploaded and produced files.
Metadata lives in the `files` table; storage only knows keys. The local directory is
the default; another store (S3, GCS) is another class with these four methods."""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO, Protocol

__all__ = ["FileStorage", "LocalFileStorage", "discarded_on_error", "iter_chunks"]

CHUNK = 1 << 20


class FileStorage(Protocol):
    def writer(self, key: str) -> contextlib.AbstractContextManager[BinaryIO]: ...

    def reader(self, key: str) -> contextlib.AbstractContextManager[BinaryIO]: ...

    def delete(self, key: str) -> None: ...

    def size(self, key: str) -> int: ...


class LocalFileStorage:
    """Files under one directory. Writes go to a temporary name and are renamed when
    complete, so a crash never leaves a half-written file under a real key."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def _path(self, key: str) -> Path:
        path = (self.root / key).resolve()
        if self.root.resolve() not in path.parents:
            raise ValueError(f"storage key {key!r} escapes the storage root")
        return path

    @contextlib.contextmanager
    def writer(self, key: str) -> Iterator[BinaryIO]:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.part")
        try:
            with tmp.open("wb") as handle:
                yield handle
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)

    @contextlib.contextmanager
    def reader(self, key: str) -> Iterator[BinaryIO]:
        with self._path(key).open("rb") as handle:
            yield handle

    def delete(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)

    def size(self, key: str) -> int:
        return self._path(key).stat().st_size


@contextlib.contextmanager
def discarded_on_error(storage: FileStorage, key: str) -> Iterator[None]:
    """Delete `key` again unless the block completes. Bytes are stored before the row
    that points at them; if that row is never written (a refused value, a database
    error, a cancelled request), nothing else would ever find and remove them."""
    try:
        yield
    except BaseException:
        storage.delete(key)
        raise


def iter_chunks(handle: BinaryIO, size: int = CHUNK) -> Iterator[bytes]:
    while chunk := handle.read(size):
        yield chunk
