"""Recovery after a Redis server lost its data (FLUSHALL, a restart without persistence).

The database is the truth: a job there `queued` with a published message may have lost
that message with the broker, and a job waiting for capacity may have lost its entry in
the delayed set. Each Redis the fleet uses carries an epoch marker; the sweeper finds it
gone, sets it again and re-publishes every such job. A job whose message survived gets a
second one, which is harmless: the claim is a conditional UPDATE, so only one runs it.
Router state (windows, cooldowns, latencies) starts afresh by itself."""

from __future__ import annotations

import datetime as dt
import logging
import uuid
from collections.abc import Callable, Iterable
from typing import Any

import redis
from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from models.fair_intake import WAITING_WORKER
from models.redis_keys import EPOCH
from models.tables import Job, JobStatus, locked_in_id_order, utcnow
from workers.delayed import DelayedJobs

__all__ = ["epoch_lost", "republish_queued"]

log = logging.getLogger(__name__)

CHUNK = 500


def epoch_lost(clients: Iterable[redis.Redis]) -> bool:
    """Set each server's epoch marker where it is missing; True when one was missing."""
    lost = False
    for client in clients:
        if client.set(EPOCH, uuid.uuid4().hex, nx=True):
            lost = True
    return lost


def republish_queued(
    sessions: sessionmaker[Session],
    delayed: DelayedJobs,
    publish: Callable[[str, int], None],
) -> int:
    """Publish again every queued job that was published, and put every job waiting for
    capacity back in the delayed set; returns how many jobs were handled."""
    handled = 0
    after = ""
    while True:
        now = utcnow()
        with sessions.begin() as session:
            rows = session.execute(
                select(Job.id, Job.priority, Job.not_before, Job.wait_reason)
                .where(
                    Job.status == JobStatus.QUEUED,
                    Job.published_at.is_not(None),
                    Job.id > after,
                )
                .order_by(Job.id)
                .limit(CHUNK)
            ).all()
            now_ids = [r.id for r in rows if not _waits_until(r, now)]
            if now_ids:
                session.execute(
                    update(Job)
                    .where(Job.id.in_(locked_in_id_order(Job.id.in_(now_ids))))
                    .values(published_at=now)
                    .execution_options(synchronize_session=False)
                )
        for row in rows:  # after commit, as everywhere: the sweeper covers a crash here
            if _waits_until(row, now):
                assert row.not_before is not None
                delayed.add(row.id, row.priority, int(row.not_before.timestamp() * 1000))
            else:
                publish(row.id, row.priority)
        handled += len(rows)
        if len(rows) < CHUNK:
            return handled
        after = rows[-1].id


def _waits_until(row: Any, now: dt.datetime) -> bool:
    """The job waits for a time (capacity coming back); not one that waited for a
    free worker in a fleet room, which the loss of Redis' data emptied."""
    return row.not_before is not None and row.not_before > now and row.wait_reason != WAITING_WORKER
