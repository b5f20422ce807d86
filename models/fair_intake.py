"""New jobs of a tenant that already has jobs waiting in their model group's fair room
(models.fair_room) join them there, with no broker message: an interactive job at
intake (producer_api.intake), a batch line at dispatch (workers.batches). A tenant's
flood queues behind itself, and the broker stays short, so another tenant's job
reaches a worker at once instead of behind the flood."""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Mapping
from typing import Any

from models.batch_lines import estimate_request_tokens
from models.fair_room import ROOM_LEASE_S, Entry, FairRoom
from models.fair_share import ShareBook
from models.tables import Job

__all__ = ["WAITING_TURN", "FairIntake", "waiting_row"]

log = logging.getLogger(__name__)

#: The wait reason of a job put in a room on arrival.
WAITING_TURN = "others waiting for its model's capacity go first (fair share)"


def waiting_row(now: dt.datetime) -> dict[str, Any]:
    """The columns of a job put in a fair room: published (no message is owed), its
    row looked at again by the sweeper only should the room lose it."""
    return {
        "published_at": now,
        "not_before": now + dt.timedelta(seconds=ROOM_LEASE_S),
        "wait_reason": WAITING_TURN,
    }


class FairIntake:
    def __init__(self, room: FairRoom, shares: ShareBook, aliases: Mapping[str, str]) -> None:
        self._room = room
        self._shares = shares
        self._aliases = aliases

    def divert(self, jobs: list[Job]) -> set[str]:
        """The ids of the jobs put in a room (the others are to be published). Without
        Redis every job is published: a worker puts it in its room if need be."""
        entries = [
            Entry(
                self._aliases.get(job.model, job.model),
                self._shares.share(job.owner_key),
                job.id,
                job.priority,
                job.estimated_tokens or estimate_request_tokens(job.request),
            )
            for job in jobs
        ]
        try:
            put = self._room.divert(entries)
        except Exception as exc:  # Redis away: publishing them is always safe
            log.warning("fair rooms not reached at intake: %s", type(exc).__name__)
            return set()
        return {entry.job_id for entry, waits in zip(entries, put, strict=True) if waits}
