"""Batch lifecycle on the worker side, as plain functions run by the batch tick:

- dispatch: publish batch jobs only as the broker's batch queue drains, so a 50,000-
  line batch never floods Redis; the room is shared equally among running batches, so
  a small batch behind a big one progresses at once (fair share, round robin);
- redispatch: lines whose worker died (`release_lapsed`) or whose message was lost
  (`redispatch_lost`) go back to dispatch;
- expire: at the completion window, lines not started end `expired`;
- finalize: once no line is queued or running, write the output and error files
  (streaming, never the whole batch in memory), sum usage, and end the batch.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import ColumnElement, and_, func, select, update
from sqlalchemy.orm import Session, sessionmaker

from models.batch_stats import usage_of
from models.fair_intake import FairIntake, waiting_row
from models.ids import new_id
from models.schemas.batches import output_line
from models.storage import FileStorage, discarded_on_error
from models.tables import Batch, File, Job, JobStatus, locked_in_id_order, utcnow
from models.webhooks import record_event

__all__ = [
    "TickReport",
    "dispatch",
    "expire_due",
    "finalize_ready",
    "redispatch_lost",
    "release_lapsed",
]

log = logging.getLogger(__name__)

ACTIVE = ("in_progress", "cancelling")


@dataclass
class TickReport:
    published: int = 0
    expired_jobs: int = 0
    finalized: list[str] = field(default_factory=list)


def dispatch(
    sessions: sessionmaker[Session],
    room: int,
    publish: Callable[[list[str]], None],
    per_message: int = 1,
    fair: FairIntake | None = None,
) -> int:
    """Publish up to `room` jobs, an equal share per running batch, `per_message` lines
    of one batch to a message. With `fair`, the lines of a tenant whose jobs wait in
    their model group's fair room join them there instead (models.fair_intake)."""
    if room <= 0:
        return 0
    with sessions() as session:
        batch_ids = list(
            session.scalars(
                select(Batch.id).where(Batch.status == "in_progress").order_by(Batch.id)
            )
        )
    if not batch_ids:
        return 0
    share = math.ceil(room / len(batch_ids))
    published = 0
    for batch_id in batch_ids:
        with sessions() as session:
            ids = list(
                session.scalars(
                    select(Job.id)
                    .where(
                        Job.batch_id == batch_id,
                        Job.status == JobStatus.QUEUED,
                        Job.published_at.is_(None),
                    )
                    .order_by(Job.id)
                    .limit(min(share, room - published))
                )
            )
        waiting = _divert(sessions, ids, fair) if fair is not None else set()
        to_send = [i for i in ids if i not in waiting]
        _publish_lines(sessions, to_send, publish, per_message, Job.published_at.is_(None))
        published += len(ids)
        if published >= room:
            break
    return published


def _divert(sessions: sessionmaker[Session], ids: list[str], fair: FairIntake) -> set[str]:
    """The lines put in a fair room, marked as published, their row looked at again
    by the sweeper only should the room lose them."""
    if not ids:
        return set()
    with sessions() as session:
        rows = list(session.scalars(select(Job).where(Job.id.in_(ids))))
    waiting = fair.divert(rows).rooms
    if waiting:
        now = utcnow()
        with sessions.begin() as session:
            session.execute(
                update(Job)
                .where(
                    Job.id.in_(locked_in_id_order(Job.id.in_(waiting))),
                    Job.status == JobStatus.QUEUED,
                )
                .values(**waiting_row(now))
                .execution_options(synchronize_session=False)
            )
    return waiting


def _publish_lines(
    sessions: sessionmaker[Session],
    ids: list[str],
    publish: Callable[[list[str]], None],
    per_message: int,
    *where: ColumnElement[bool],
) -> None:
    """Publish, then mark: a crash in between leaves lines unmarked, and the next tick
    publishes them again (a second message is turned away by the claim). Marking first
    would leave them marked with no message, waiting for nobody."""
    for start in range(0, len(ids), per_message):
        publish(ids[start : start + per_message])
    if ids:
        with sessions.begin() as session:
            session.execute(
                update(Job)
                .where(Job.id.in_(locked_in_id_order(Job.id.in_(ids))), *where)
                .values(published_at=utcnow())
                .execution_options(synchronize_session=False)
            )


def release_lapsed(sessions: sessionmaker[Session]) -> int:
    """Lines of running batches still `running` past their lease: their worker died (or
    lost its database for longer than a lease) while their calls ran. They go back to
    dispatch at the next tick, rather than wait for the sweeper's next round. A run
    that was only late finds its claim fenced when it ends (jobstore)."""
    lapsed = and_(
        Job.status == JobStatus.RUNNING,
        Job.lease_until < utcnow(),
        Job.batch_id.in_(select(Batch.id).where(Batch.status == "in_progress")),
    )
    count = _unpublish(sessions, lapsed, status=JobStatus.QUEUED, lease_until=None)
    if count:
        log.warning("batch tick: %d line(s) past their lease sent again", count)
    return count


def redispatch_lost(sessions: sessionmaker[Session], older_than_s: float) -> int:
    """Lines published more than `older_than_s` ago that are still `queued`, not
    waiting for capacity, while the batch queue is empty (the caller checks): a worker
    acknowledges a message once it has claimed its lines, so their message is gone
    (a worker that took it died before it claimed them, or the broker lost it), and
    nothing else would send them. They go back to dispatch. Should the message still be
    held by a worker, the second one is turned away by the claim."""
    before = utcnow() - dt.timedelta(seconds=older_than_s)
    lost = and_(
        Job.status == JobStatus.QUEUED,
        Job.published_at < before,
        Job.not_before.is_(None),
        Job.batch_id.in_(select(Batch.id).where(Batch.status == "in_progress")),
    )
    count = _unpublish(sessions, lost)
    if count:
        log.warning("batch tick: %d line(s) published long ago sent again", count)
    return count


def _unpublish(
    sessions: sessionmaker[Session], where: ColumnElement[bool], **values: object
) -> int:
    with sessions.begin() as session:
        result = session.execute(
            update(Job)
            .where(Job.id.in_(locked_in_id_order(where)), where)
            .values(published_at=None, **values)
            .execution_options(synchronize_session=False)
        )
    return int(getattr(result, "rowcount", 0) or 0)


def expire_due(sessions: sessionmaker[Session]) -> int:
    """Lines not yet started in a batch past its completion window end `expired`."""
    now = utcnow()
    with sessions.begin() as session:
        due = list(
            session.scalars(
                select(Batch.id).where(Batch.status == "in_progress", Batch.expires_at < now)
            )
        )
        if not due:
            return 0
        result = session.execute(
            update(Job)
            .where(
                Job.id.in_(
                    locked_in_id_order(Job.batch_id.in_(due), Job.status == JobStatus.QUEUED)
                ),
                Job.status == JobStatus.QUEUED,
            )
            .values(
                status=JobStatus.EXPIRED,
                finished_at=now,
                error={
                    "message": "the batch's completion window ended before this request ran",
                    "type": "expired",
                    "param": None,
                    "code": "batch_expired",
                },
            )
        )
    return int(getattr(result, "rowcount", 0) or 0)


def finalize_ready(
    sessions: sessionmaker[Session],
    storage: FileStorage,
    publish_webhook: Callable[[str], Any] | None = None,
) -> list[str]:
    """End every active batch with no line left queued or running; a batch with a
    `webhook_url` records its `batch.<status>` event in the same transaction."""
    with sessions() as session:
        ready = list(
            session.scalars(
                select(Batch.id)
                .where(Batch.status.in_(ACTIVE))
                .where(
                    ~select(Job.id)
                    .where(
                        Job.batch_id == Batch.id,
                        Job.status.in_([JobStatus.QUEUED, JobStatus.RUNNING]),
                    )
                    .exists()
                )
            )
        )
    for batch_id in ready:
        delivery = _finalize(sessions, storage, batch_id)
        if delivery is not None and publish_webhook is not None:
            publish_webhook(delivery)  # after commit; a lost message is the sweeper's
    return ready


def _finalize(sessions: sessionmaker[Session], storage: FileStorage, batch_id: str) -> str | None:
    with sessions.begin() as session:
        claimed = session.execute(
            update(Batch)
            .where(Batch.id == batch_id, Batch.status.in_(ACTIVE))
            .values(status="finalizing", finalizing_at=utcnow())
            .returning(Batch.owner_key, Batch.cancelling_at)
        ).first()
    if claimed is None:
        return None  # another tick got it
    files = _write_files(sessions, storage, batch_id, claimed.owner_key)
    with sessions.begin() as session:
        batch = session.get(Batch, batch_id)
        assert batch is not None
        batch.usage = usage_of(session, batch_id)
        batch.output_file_id, batch.error_file_id = files
        now = utcnow()
        expired = session.scalar(
            select(func.count()).where(Job.batch_id == batch_id, Job.status == JobStatus.EXPIRED)
        )
        if claimed.cancelling_at is not None:
            batch.status, batch.cancelled_at = "cancelled", now
        elif expired:
            batch.status, batch.expired_at = "expired", now
        else:
            batch.status, batch.completed_at = "completed", now
        delivery = None
        if batch.webhook_url:
            event = f"batch.{batch.status}"
            delivery = record_event(session, batch.webhook_url, event, {"id": batch_id})
    log.info("batch %s: %s", batch_id, batch.status)
    return delivery


def _write_files(
    sessions: sessionmaker[Session], storage: FileStorage, batch_id: str, owner: str
) -> tuple[str | None, str | None]:
    ids = {"output": new_id("file"), "error": new_id("file")}
    counts = {"output": 0, "error": 0}
    sizes = {"output": 0, "error": 0}
    # Should the rows not be written, nothing else would ever find these bytes.
    with discarded_on_error(storage, ids["output"]), discarded_on_error(storage, ids["error"]):
        with (
            storage.writer(ids["output"]) as out,
            storage.writer(ids["error"]) as err,
            sessions() as session,
        ):
            sinks = {"output": out, "error": err}
            stmt = (
                select(Job)
                .where(Job.batch_id == batch_id)
                .order_by(Job.id)
                .execution_options(yield_per=500)
            )
            for job in session.scalars(stmt):
                which, line = output_line(job)
                data = json.dumps(line).encode() + b"\n"
                sinks[which].write(data)
                counts[which] += 1
                sizes[which] += len(data)
        now = utcnow()
        kept: dict[str, str | None] = {}
        with sessions.begin() as session:
            for which in ("output", "error"):
                if counts[which] == 0:
                    storage.delete(ids[which])
                    kept[which] = None
                    continue
                session.add(
                    File(
                        id=ids[which],
                        owner_key=owner,
                        purpose="batch_output",
                        filename=f"{batch_id}_{which}.jsonl",
                        bytes=sizes[which],
                        storage_key=ids[which],
                        created_at=now,
                    )
                )
                kept[which] = ids[which]
    return kept["output"], kept["error"]
