"""The operator page's last hour, on the embedded default's SQLite (PostgreSQL's is
exercised through the fleet in test_ui.py)."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from pathlib import Path

from models import migrate
from models.accounting import Spend
from models.db import make_engine, make_sessionmaker
from models.tables import Job, JobStatus
from producer_api.activity import last_hour


def test_minutes_count_jobs_take_their_median_and_sum_spend(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'fleet.db'}"
    migrate.upgrade(url)
    engine = make_engine(url)
    now = dt.datetime(2026, 12, 5, 9, 30, 30, tzinfo=dt.UTC)
    sessions = make_sessionmaker(engine)
    with sessions.begin() as session:
        for i, (ago, run) in enumerate([(90, 1.0), (80, 3.0), (70, 2.0), (20, 0.5), (4000, 9)]):
            finished = now - dt.timedelta(seconds=ago)
            session.add(
                Job(
                    id=f"job_{i}",
                    status=JobStatus.SUCCEEDED,
                    model="m",
                    request={},
                    owner_key="master",
                    created_at=finished - dt.timedelta(seconds=run + 1),
                    started_at=finished - dt.timedelta(seconds=run),
                    finished_at=finished,
                )
            )
        session.flush()  # the jobs before the spend row that refers to one
        session.add(
            Spend(
                job_id="job_0",
                claim=1,
                owner_key="master",
                model_group="m",
                cost=Decimal("0.0000125"),
                called_at=now - dt.timedelta(seconds=90),
            )
        )
    with sessions() as session:
        minutes = last_hour(session, None, now)
        others = last_hour(session, "someone-else", now)
    engine.dispose()
    assert len(minutes) == 60 and minutes[-1].start == 9 * 3600 + 30 * 60 + _day(now)
    previous, current = minutes[-2], minutes[-1]
    # 9:29:00-9:29:59 held three jobs (1, 3 and 2 s); 9:30:10 one, 30 s into its minute
    assert (previous.jobs_per_s, previous.p50_s, previous.spend) == (0.05, 2.0, "0.0000125")
    assert (current.jobs_per_s, current.p50_s, current.spend) == (round(1 / 30, 3), 0.5, "0")
    assert sum(m.jobs_per_s for m in minutes[:-2]) == 0  # the job of 4,000 s ago is out
    assert all(m.jobs_per_s == 0 and m.p50_s is None for m in others)


def _day(now: dt.datetime) -> int:
    return int(now.replace(hour=0, minute=0, second=0).timestamp())
