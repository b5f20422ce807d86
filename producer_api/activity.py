"""The last hour of the fleet, minute by minute, for the operator page's chart: jobs
ended per second, the median run time of those jobs (start to end), and spend. Read
from what the fleet stores anyway (the jobs' `finished_at`, indexed, and the spend
rows' `called_at`), no counter of its own."""

from __future__ import annotations

import datetime as dt
import statistics
from collections import defaultdict
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from sqlalchemy import Integer, cast, func, select
from sqlalchemy.orm import Session
from sqlalchemy.sql.elements import ColumnElement

from models.accounting import Spend, money
from models.tables import Job, JobStatus

__all__ = ["MINUTES", "Minute", "last_hour"]

MINUTES = 60
#: SQLite has no median: its run times are read (at most this many) and ranked here.
SQLITE_SAMPLE = 50_000
ENDED = (JobStatus.SUCCEEDED, JobStatus.FAILED)


@dataclass(frozen=True, slots=True)
class Minute:
    start: int
    jobs_per_s: float
    p50_s: float | None
    spend: str


def _minute(column: Any, dialect: str) -> ColumnElement[Any]:
    """The epoch minute a timestamp falls in, in the database's own SQL."""
    if dialect == "postgresql":
        return cast(func.floor(func.extract("epoch", column) / 60), Integer)
    return cast(func.strftime("%s", column), Integer) // 60


def last_hour(session: Session, owner: str | None, now: dt.datetime) -> list[Minute]:
    """The last `MINUTES` minutes up to `now`, oldest first, the current one so far
    (its rate over the seconds it has had); `owner`: one key's only."""
    dialect = session.get_bind().dialect.name
    current = int(now.timestamp()) // 60
    first = current - MINUTES + 1
    since = dt.datetime.fromtimestamp(first * 60, dt.UTC)
    until = now
    ended = [Job.finished_at >= since, Job.finished_at <= until, Job.status.in_(ENDED)]
    spent = [Spend.called_at >= since, Spend.called_at <= until]
    if owner is not None:
        ended.append(Job.owner_key == owner)
        spent.append(Spend.owner_key == owner)
    job_minute = _minute(Job.finished_at, dialect)
    counts: dict[int, int] = dict(
        session.execute(select(job_minute, func.count()).where(*ended).group_by(job_minute)).all()
    )
    medians = _medians(session, ended, job_minute, dialect)
    spend_minute = _minute(Spend.called_at, dialect)
    costs: dict[int, Any] = dict(
        session.execute(
            select(spend_minute, func.coalesce(func.sum(Spend.cost), 0))
            .where(*spent)
            .group_by(spend_minute)
        ).all()
    )
    return [
        Minute(
            start=m * 60,
            jobs_per_s=round(counts.get(m, 0) / (_elapsed(now) if m == current else 60), 3),
            p50_s=medians.get(m),
            spend=money(Decimal(costs.get(m, 0))),
        )
        for m in range(first, first + MINUTES)
    ]


def _elapsed(now: dt.datetime) -> float:
    """Seconds of the current minute gone by (at least one)."""
    return max(1.0, now.timestamp() % 60)


def _medians(
    session: Session, ended: list[Any], minute: ColumnElement[Any], dialect: str
) -> dict[int, float]:
    if dialect == "postgresql":
        run = func.extract("epoch", Job.finished_at - Job.started_at)
        p50 = func.percentile_cont(0.5).within_group(run)
        rows = session.execute(
            select(minute, p50).where(*ended, Job.started_at.is_not(None)).group_by(minute)
        ).all()
        return {int(m): round(float(v), 3) for m, v in rows if v is not None}
    by_minute: dict[int, list[float]] = defaultdict(list)
    rows = session.execute(
        select(Job.started_at, Job.finished_at)
        .where(*ended, Job.started_at.is_not(None))
        .limit(SQLITE_SAMPLE)
    ).all()
    for started, finished in rows:
        if started is not None and finished is not None:  # the query asks for both
            seconds = (finished - started).total_seconds()
            by_minute[int(finished.timestamp()) // 60].append(seconds)
    return {m: round(statistics.median(v), 3) for m, v in by_minute.items()}
