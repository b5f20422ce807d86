"""A worker holds a short lease on each job it runs and renews it while the job runs.

A worker that dies (kill -9, a lost machine) stops renewing, so the sweeper hands its
jobs to another worker within one lease, however long a job may take; a live worker
keeps its jobs for up to `job_timeout`. One UPDATE per process renews every job it
holds, every third of a lease. A lease is held for one claim (the job's `attempts`
number): a run whose job was taken over after its lease lapsed renews nothing, so it
cannot keep the newer claim alive should that one's worker die."""

from __future__ import annotations

import contextlib
import datetime as dt
import itertools
import logging
import threading
import time
from collections.abc import Iterator

from sqlalchemy import tuple_, update
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
        #: token -> (job id, claim number, renew until)
        self._held: dict[int, tuple[str, int, float]] = {}
        self._tokens = itertools.count()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @contextlib.contextmanager
    def holding(self, job_id: str, claim: int) -> Iterator[None]:
        """Renew the lease of `job_id`'s claim number `claim` while the block runs."""
        token = self.hold(job_id, claim)
        try:
            yield
        finally:
            self.release(token)

    def hold(self, job_id: str, claim: int) -> int:
        """Start renewing the lease of `job_id`'s claim `claim`; returns the token that
        `release` takes."""
        self._start()
        token = next(self._tokens)
        with self._lock:
            self._held[token] = (job_id, claim, time.monotonic() + self._max_seconds)
        return token

    def release(self, token: int) -> None:
        with self._lock:
            self._held.pop(token, None)

    def renew(self) -> int:
        """Extend the lease of every running job this process holds; returns how many."""
        now = time.monotonic()
        with self._lock:
            held = sorted(
                {(job_id, claim) for job_id, claim, until in self._held.values() if until > now}
            )
        renewed = 0
        until = utcnow() + dt.timedelta(seconds=self.lease_seconds)
        for start in range(0, len(held), RENEW_CHUNK):
            claims = held[start : start + RENEW_CHUNK]
            mine = tuple_(Job.id, Job.attempts).in_(claims)
            with self._sessions.begin() as session:
                result = session.execute(
                    update(Job)
                    .where(Job.id.in_(locked_in_id_order(mine)))
                    .where(Job.status == JobStatus.RUNNING, mine)
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
