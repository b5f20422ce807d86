"""A worker holds a short lease on each job it runs and renews it while the job runs.

A worker that dies (kill -9, a lost machine) stops renewing, so the sweeper hands its
jobs to another worker within one lease, however long a job may take; a live worker
keeps its jobs for up to `job_timeout`. One UPDATE per process renews every job it
holds, every third of a lease."""

from __future__ import annotations

import contextlib
import datetime as dt
import itertools
import logging
import threading
import time
from collections.abc import Iterator

from sqlalchemy import update
from sqlalchemy.orm import Session, sessionmaker

from models.tables import Job, JobStatus, locked_in_id_order, utcnow

__all__ = ["Leases"]

log = logging.getLogger(__name__)

RENEW_CHUNK = 500


class Leases:
    def __init__(
        self, sessions: sessionmaker[Session], lease_seconds: float, max_seconds: float
    ) -> None:
        self.lease_seconds = lease_seconds
        self._sessions = sessions
        self._max_seconds = max_seconds
        self._held: dict[int, tuple[str, float]] = {}  # token -> (job id, renew until)
        self._tokens = itertools.count()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @contextlib.contextmanager
    def holding(self, job_id: str) -> Iterator[None]:
        """Renew `job_id`'s lease while the block runs."""
        token = self.hold(job_id)
        try:
            yield
        finally:
            self.release(token)

    def hold(self, job_id: str) -> int:
        """Start renewing `job_id`'s lease; returns the token that `release` takes (a token
        per holder, so that a duplicate delivery ending early does not stop the renewals
        of the real run)."""
        self._start()
        token = next(self._tokens)
        with self._lock:
            self._held[token] = (job_id, time.monotonic() + self._max_seconds)
        return token

    def release(self, token: int) -> None:
        with self._lock:
            self._held.pop(token, None)

    def renew(self) -> int:
        """Extend the lease of every running job this process holds; returns how many."""
        now = time.monotonic()
        with self._lock:
            ids = sorted({job_id for job_id, until in self._held.values() if until > now})
        renewed = 0
        until = utcnow() + dt.timedelta(seconds=self.lease_seconds)
        for start in range(0, len(ids), RENEW_CHUNK):
            with self._sessions.begin() as session:
                result = session.execute(
                    update(Job)
                    .where(
                        Job.id.in_(locked_in_id_order(Job.id.in_(ids[start : start + RENEW_CHUNK])))
                    )
                    .where(Job.status == JobStatus.RUNNING)
                    .values(lease_until=until)
                    .execution_options(synchronize_session=False)
                )
                renewed += int(getattr(result, "rowcount", 0) or 0)
        return renewed

    def stop(self) -> None:
        self._stop.set()

    def _start(self) -> None:
        if self._thread is not None:
            return
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="llmfleet-leases", daemon=True
                )
                self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.lease_seconds / 3):
            try:
                self.renew()
            except Exception as exc:  # the database may be away: try again next time
                log.warning("lease renewal failed: %s", type(exc).__name__)
