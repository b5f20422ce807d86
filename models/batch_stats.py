"""Figures about a batch read from its jobs, shared by the API (live view) and the
workers (the figures stored when a batch ends)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from models.schemas.batches import usage_from_sums
from models.tables import Job

__all__ = ["status_counts", "usage_of"]


def usage_of(session: Session, batch_id: str) -> dict[str, Any]:
    sums = session.execute(
        select(
            func.coalesce(func.sum(Job.prompt_tokens), 0),
            func.coalesce(func.sum(Job.completion_tokens), 0),
            func.coalesce(func.sum(Job.cached_tokens), 0),
            func.coalesce(func.sum(Job.reasoning_tokens), 0),
        ).where(Job.batch_id == batch_id)
    ).one()
    return usage_from_sums(*(int(v) for v in sums))


def status_counts(session: Session, batch_id: str) -> dict[str, int]:
    rows = session.execute(
        select(Job.status, func.count()).where(Job.batch_id == batch_id).group_by(Job.status)
    ).all()
    return {status: int(n) for status, n in rows}
