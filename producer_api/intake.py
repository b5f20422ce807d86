"""Accepted jobs stored and published in groups, by one writer thread per API process.

A request checks its key and admits its job itself (a refusal is its own answer), then
hands the row to the writer and waits. The writer takes every row handed over since its
last round and, for all of them at once: inserts them in one transaction, publishes
their execute messages, and marks the published ones in one more transaction. That is
two commits a round instead of two a job (on SQLite each commit is a sync to disk, and
one writer at a time), and no request waits on another's commit in the database's lock.

Each job keeps the order that makes the row the truth: persisted, then published, then
marked. A publish that fails leaves its job queued and unmarked, for the sweeper to
publish; a mark that fails only costs the sweeper a duplicate message, which the claim
turns away. When a group's insert fails, each of its rows is tried on its own, so a row
the database refuses fails its own request only; a database that is down fails each
(the error handler answers 503).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

from sqlalchemy import update
from sqlalchemy.orm import Session, sessionmaker

from models.fair_intake import WAITING_TURN, WAITING_WORKER, Diverted, waiting_row
from models.grouping import GroupThread
from models.tables import Job, JobStatus, utcnow
from producer_api import transactions
from producer_api.publish import Publisher

__all__ = ["Intake"]

log = logging.getLogger(__name__)

#: Rows stored in one round, at most.
MAX_GROUP = 500
#: How long `close` waits for the rows handed over to be stored.
CLOSE_TIMEOUT_S = 10.0
#: Puts jobs in a fair room instead of the broker (models.fair_intake.FairIntake).
Divert = Callable[[list[Job], bool], Diverted]


@dataclass(frozen=True, slots=True)
class _Handed:
    job: Job
    done: Future[None]
    #: Rows stored with the job, in its transaction (a Responses API record).
    companions: tuple[Any, ...] = ()

    @property
    def rows(self) -> list[Any]:
        return [self.job, *self.companions]


class Intake:
    def __init__(
        self, sessions: sessionmaker[Session], publisher: Publisher, divert: Divert | None = None
    ) -> None:
        self._sessions = sessions
        self._publisher = publisher
        self._divert = divert
        self._thread = GroupThread("llmfleet-intake", MAX_GROUP, self._round)

    def store(self, job: Job, companions: tuple[Any, ...] = ()) -> Future[None]:
        """Hand `job` (a new, queued row) over, with rows to store in its transaction:
        the future is done once they are stored (and the job published, or left for
        the sweeper), or holds why they could not be stored."""
        done: Future[None] = Future()
        self._thread.put(_Handed(job, done, companions))
        return done

    def close(self) -> None:
        self._thread.close(CLOSE_TIMEOUT_S)

    def _round(self, group: list[_Handed]) -> None:
        try:
            self._store(group)
        except BaseException as exc:  # each request hears why
            for handed in group:
                if not handed.done.done():
                    handed.done.set_exception(exc)

    def _store(self, group: list[_Handed]) -> None:
        stored = self._insert(group)
        jobs = [h.job for h in stored]
        # a job put in a fair room (models.fair_intake) waits there, unpublished; one
        # waiting for a free worker is owed a turn on its queue instead of its message
        waiting = self._divert(jobs, True) if self._divert is not None and jobs else Diverted()
        published = [job for job in jobs if self._publish(job, waiting)]
        self._mark_published(published, waiting)
        for handed in stored:
            handed.done.set_result(None)

    def _insert(self, group: list[_Handed]) -> list[_Handed]:
        """The rows of `group` that are stored; the others' futures hold their error."""
        try:
            transactions.add_all(self._sessions, [row for h in group for row in h.rows])
            return group
        except Exception as exc:
            if len(group) == 1 or transactions.is_transient(exc):  # the database's, not a row's
                for handed in group:
                    handed.done.set_exception(exc)
                return []
        stored = []
        for handed in group:  # one at a time: a row the database refuses fails alone
            try:
                transactions.add_all(self._sessions, handed.rows)
            except Exception as exc:
                handed.done.set_exception(exc)
            else:
                stored.append(handed)
        return stored

    def _publish(self, job: Job, waiting: Diverted) -> bool:
        if job.id in waiting.rooms:
            return True
        if job.id in waiting.turns:  # a turn lost is made up by the room's idle tick
            self._publisher.publish_turn(waiting.turns[job.id])
            return True
        return self._publisher.publish_execute(job.id, job.priority)

    def _mark_published(self, jobs: list[Job], waiting: Diverted) -> None:
        """Only saves the sweeper a publish: should it fail, the jobs are still accepted,
        and the sweeper publishes them again (a duplicate delivery, which the claim
        turns away). A job waiting in a fair room is published by the sweeper only if
        still there after a lease (the room lost it)."""
        if not jobs:
            return
        published = utcnow()
        try:
            with self._sessions.begin() as session:
                session.execute(
                    update(Job)
                    .where(Job.id.in_([job.id for job in jobs if job.id not in waiting]))
                    .values(published_at=published)
                    .execution_options(synchronize_session=False)
                )
                for ids, reason in ((waiting.rooms, WAITING_TURN), (waiting.turns, WAITING_WORKER)):
                    if not ids:
                        continue
                    session.execute(
                        update(Job)
                        .where(Job.id.in_(list(ids)), Job.status == JobStatus.QUEUED)
                        .values(**waiting_row(published, reason))
                        .execution_options(synchronize_session=False)
                    )
        except Exception as exc:  # the jobs are accepted all the same
            log.warning("%d job(s) published but not marked so: %s", len(jobs), type(exc).__name__)
            return
        for job in jobs:
            job.published_at = published
