"""POST /v1/files leaves nothing on disk when it refuses or fails an upload.

Every test counts the files in the API's file storage (temporary `.part` files
included) before and after: a refused upload, an upload whose row the database refuses,
and a client that leaves mid-upload must all leave the count as it was, and no row.
The API process is one of this module's own, on the session fleet's DB and Redis, so
that its file storage, its temporary directory (where the multipart parser spools an
upload) and its limit are known to the test.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from sqlalchemy import text

from tests.conftest import MASTER_KEY, Fleet
from tests.support.processes import Proc, start_api

AUTH = {"Authorization": f"Bearer {MASTER_KEY}"}
#: Over the multipart parser's 1 MiB in memory, so that an upload is spooled to disk.
FILE_LIMIT = 2 * 1024 * 1024
LINE = b'{"custom_id": "a", "method": "POST", "url": "/v1/chat/completions", "body": {}}\n'
BODY = LINE * (FILE_LIMIT // 2 // len(LINE))


@dataclass
class UploadApi:
    url: str
    proc: Proc
    files_dir: Path
    tmp_dir: Path

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, headers=AUTH, timeout=60)

    def stored(self) -> set[str]:
        """Names of the files in file storage, temporary `.part` files included."""
        return {p.name for p in self.files_dir.rglob("*") if p.is_file()}

    def spooled(self) -> list[str]:
        """Files the API process holds open or left in its temporary directory: the
        multipart parser's spooled uploads (unlinked at once, so seen through /proc)."""
        held = []
        for fd in Path(f"/proc/{self.proc.popen.pid}/fd").iterdir():
            with_target = _readlink(fd)
            if with_target and with_target.startswith(str(self.tmp_dir)):
                held.append(with_target)
        return held + [p.name for p in self.tmp_dir.iterdir()]


def _readlink(fd: Path) -> str | None:
    try:
        return os.readlink(fd)
    except OSError:
        return None  # closed between the listing and the read


@pytest.fixture(scope="module")
def upload_api(fleet: Fleet, tmp_path_factory: pytest.TempPathFactory) -> Iterator[UploadApi]:
    root = tmp_path_factory.mktemp("files-api")
    files_dir, tmp_dir = root / "files", root / "tmp"
    files_dir.mkdir()
    tmp_dir.mkdir()
    env = {
        **fleet.env,
        "LLMFLEET_FILES_DIR": str(files_dir),
        "LLMFLEET_MAX_FILE_BYTES": str(FILE_LIMIT),
        "TMPDIR": str(tmp_dir),
    }
    proc, url = start_api(env, root, name="api-files")
    try:
        yield UploadApi(url, proc, files_dir, tmp_dir)
    finally:
        proc.stop()


def _rows(fleet: Fleet) -> int:
    with fleet.engine.connect() as conn:
        return int(conn.execute(text("SELECT count(*) FROM files")).scalar_one())


def _upload(api: UploadApi, filename: str, content: bytes = BODY) -> httpx.Response:
    with api.client() as client:
        return client.post(
            "/v1/files", files={"file": (filename, content)}, data={"purpose": "batch"}
        )


def _eventually(check: Callable[[], bool], what: str, timeout: float = 10) -> None:
    until = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < until, f"{what} not seen within {timeout}s"
        time.sleep(0.05)


def test_an_accepted_upload_is_stored_once(clean_fleet: Fleet, upload_api: UploadApi) -> None:
    before = upload_api.stored()

    response = _upload(upload_api, "in.jsonl")

    assert response.status_code == 200, response.text
    assert response.json()["bytes"] == len(BODY)
    assert upload_api.stored() - before == {response.json()["id"]}
    assert _rows(clean_fleet) == 1


@pytest.mark.parametrize(
    "filename",
    [b"x" * 600 + b".jsonl", b"x" * 256, b"in\x00.jsonl"],
    ids=["600-characters", "256-characters", "nul"],
)
def test_a_bad_filename_is_refused_before_a_byte_is_stored(
    clean_fleet: Fleet, upload_api: UploadApi, filename: bytes
) -> None:
    # Sent as raw bytes: httpx would percent-encode the NUL.
    before = upload_api.stored()
    headers, body = _multipart(filename, BODY)
    with upload_api.client() as client:
        response = client.post(
            "/v1/files", content=body, headers={"content-type": headers["content-type"]}
        )

    assert response.status_code == 400, response.text
    assert upload_api.stored() == before
    assert _rows(clean_fleet) == 0
    assert response.json()["error"]["param"] == "filename"


def test_a_filename_of_255_characters_is_accepted(
    clean_fleet: Fleet, upload_api: UploadApi
) -> None:
    response = _upload(upload_api, "é" * 249 + ".jsonl")

    assert response.status_code == 200, response.text
    assert response.json()["filename"] == "é" * 249 + ".jsonl"


def test_a_bad_purpose_is_refused_before_a_byte_is_stored(
    clean_fleet: Fleet, upload_api: UploadApi
) -> None:
    before = upload_api.stored()
    with upload_api.client() as client:
        response = client.post(
            "/v1/files", files={"file": ("in.jsonl", BODY)}, data={"purpose": "fine-tune"}
        )

    assert response.status_code == 400, response.text
    assert response.json()["error"]["param"] == "purpose"
    assert upload_api.stored() == before


def test_an_upload_over_the_limit_leaves_nothing(clean_fleet: Fleet, upload_api: UploadApi) -> None:
    # Within the multipart framing allowance: the body limit lets it through to the route.
    before = upload_api.stored()

    response = _upload(upload_api, "in.jsonl", b"x" * (FILE_LIMIT + 1))

    assert response.status_code == 413, response.text
    assert response.json()["error"]["param"] == "file"
    assert upload_api.stored() == before
    assert _rows(clean_fleet) == 0


def test_an_upload_whose_row_fails_leaves_nothing(
    clean_fleet: Fleet, upload_api: UploadApi
) -> None:
    # Given the files table locked against inserts, so the upload's INSERT waits
    before = upload_api.stored()
    answer: list[httpx.Response] = []
    with clean_fleet.engine.connect() as lock:
        lock.execute(text("LOCK TABLE files IN SHARE MODE"))
        sender = threading.Thread(target=lambda: answer.append(_upload(upload_api, "in.jsonl")))
        sender.start()
        _eventually(lambda: bool(_blocked_inserts(clean_fleet)), "the INSERT waiting", 30)
        # with its bytes in storage by then
        assert len(upload_api.stored() - before) == 1
        # When the database cancels that INSERT (as a statement timeout would), and
        # its retry on a fresh connection too
        _eventually(lambda: _cancel_inserts(clean_fleet, sender), "the upload's answer", 30)
        lock.rollback()
    sender.join(timeout=30)

    # Then the upload fails, and neither its bytes nor a row stay
    assert answer and answer[0].status_code == 503, answer
    assert upload_api.stored() == before
    assert _rows(clean_fleet) == 0


def _blocked_inserts(fleet: Fleet) -> list[int]:
    """Backends of an INSERT INTO files waiting for a lock."""
    query = text(
        "SELECT pid FROM pg_stat_activity WHERE datname = current_database()"
        " AND wait_event_type = 'Lock' AND query LIKE 'INSERT INTO files%'"
    )
    with fleet.engine.connect() as conn:
        return list(conn.execute(query).scalars())


def _cancel_inserts(fleet: Fleet, sender: threading.Thread) -> bool:
    """Cancel the waiting INSERTs; True once the upload has its answer."""
    with fleet.engine.connect() as conn:
        for pid in _blocked_inserts(fleet):
            conn.execute(text("SELECT pg_cancel_backend(:pid)"), {"pid": pid})
    return not sender.is_alive()


def test_a_client_leaving_mid_upload_leaves_nothing(
    clean_fleet: Fleet, upload_api: UploadApi
) -> None:
    before = upload_api.stored()
    # Given an upload that declares FILE_LIMIT bytes and sends 3/4 of them, so that
    # the parser has spooled it to disk
    headers, part = _multipart(b"in.jsonl", b"x" * (FILE_LIMIT * 3 // 4), declared=FILE_LIMIT)
    with socket.create_connection(_address(upload_api.url)) as sock:
        sock.sendall(_request_head(upload_api, headers))
        sock.sendall(part)
        _eventually(lambda: bool(upload_api.spooled()), "the spooled upload")
        # When the client goes away before the rest of the declared body
    # Then the spooled copy is released and nothing reaches file storage
    _eventually(lambda: not upload_api.spooled(), "the spooled upload released")
    assert upload_api.stored() == before
    assert _rows(clean_fleet) == 0
    assert upload_api.proc.popen.poll() is None


def _multipart(filename: bytes, content: bytes, declared: int = 0) -> tuple[dict[str, str], bytes]:
    """Headers and body of an upload with a `purpose` field and one file part, built
    by hand so that any bytes can be sent; with `declared`, the Content-Length claims
    a file of that many bytes and the body ends where `content` does."""
    boundary = "llmfleet-test-boundary"
    opening = (
        (
            f"--{boundary}\r\n"
            'Content-Disposition: form-data; name="purpose"\r\n\r\nbatch\r\n'
            f"--{boundary}\r\n"
            'Content-Disposition: form-data; name="file"; filename="'
        ).encode()
        + filename
        + b'"\r\nContent-Type: application/jsonl\r\n\r\n'
    )
    closing = f"\r\n--{boundary}--\r\n".encode()
    length = len(opening) + (declared or len(content)) + len(closing)
    headers = {
        "content-type": f"multipart/form-data; boundary={boundary}",
        "content-length": str(length),
    }
    return headers, opening + content + (b"" if declared else closing)


def _request_head(api: UploadApi, headers: dict[str, str]) -> bytes:
    host, port = _address(api.url)
    lines = [
        "POST /v1/files HTTP/1.1",
        f"Host: {host}:{port}",
        f"Authorization: Bearer {MASTER_KEY}",
        *(f"{name}: {value}" for name, value in headers.items()),
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def _address(url: str) -> tuple[str, int]:
    parsed = httpx.URL(url)
    assert parsed.port is not None
    return parsed.host, parsed.port
