"""Claims grouped across messages: one thread per worker process takes every claim the
tasks asked for since its last round and makes them in one UPDATE
(`jobstore.claim_many`), as the writer stores ends (workers.writer).

A task asks with the ids its message carries (one job, or a wave of batch lines) and
waits; it gets back the claims of those ids, in their order, without the ones not
claimable (done, cancelled, running elsewhere). A job asked for twice in one round (two
messages of it, delivered at once) is claimed once, for the first asker. A round that
fails (the database or its connection) fails every asker with its error, as a claim
of its own would have: the task sends its message again (workers.tasks)."""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import Future
from dataclasses import dataclass

from sqlalchemy.orm import Session, sessionmaker

from models.grouping import GroupThread
from workers.jobstore import Claim, claim_many

__all__ = ["Claimer"]

#: Asks (messages) claimed in one round, at most.
MAX_GROUP = 200
#: How long `close` waits for the round under way.
CLOSE_TIMEOUT_S = 30.0


@dataclass(frozen=True, slots=True)
class _Asked:
    job_ids: list[str]
    claims: Future[list[Claim]]


class Claimer:
    def __init__(self, sessions: sessionmaker[Session], lease_seconds: float) -> None:
        self._sessions = sessions
        self._lease_seconds = lease_seconds
        self._thread = GroupThread("llmfleet-claimer", MAX_GROUP, self._round)

    def claim(self, job_ids: Sequence[str]) -> list[Claim]:
        """Claim what may run now of `job_ids`, with other tasks' asks; raises what the
        UPDATE raised."""
        asked = _Asked(list(job_ids), Future())
        self._thread.put(asked)
        return asked.claims.result()

    def close(self) -> None:
        self._thread.close(CLOSE_TIMEOUT_S)

    def _round(self, group: list[_Asked]) -> None:
        ids = list(dict.fromkeys(job_id for asked in group for job_id in asked.job_ids))
        try:
            claims = claim_many(self._sessions, ids, self._lease_seconds)
        except BaseException as exc:  # never lose the thread: each task hears why
            for asked in group:
                asked.claims.set_exception(exc)
            return
        unhanded = {claimed.job_id: claimed for claimed in claims}
        for asked in group:
            mine = [unhanded.pop(job_id) for job_id in asked.job_ids if job_id in unhanded]
            asked.claims.set_result(mine)
