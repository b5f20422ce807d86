"""New jobs of a tenant that already has jobs waiting in their model group's fair room
(models.fair_room) join them there, with no broker message: an interactive job at
intake (producer_api.intake), a batch line at dispatch (workers.batches). A tenant's
flood queues behind itself, and the broker stays short, so another tenant's job
reaches a worker at once instead of behind the flood.

At intake, while the fleet's workers are saturated, a normal or background job waits in
its queue's fleet room instead, and a turn goes to the broker in its stead: whichever
worker takes the turn runs the job that is fairly next then."""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from models.batch_lines import estimate_request_tokens
from models.contract import QUEUE_LOW, QUEUE_NORMAL, queue_for_priority
from models.fair_room import ROOM_LEASE_S, Entry, FairRoom, fleet_group
from models.fair_share import ShareBook
from models.tables import Job

__all__ = [
    "FLEET_QUEUES",
    "WAITING_TURN",
    "WAITING_WORKER",
    "Diverted",
    "FairIntake",
    "waiting_row",
]

log = logging.getLogger(__name__)

#: The wait reason of a job put in a room on arrival.
WAITING_TURN = "others waiting for its model's capacity go first (fair share)"
#: The wait reason of a job put in a fleet room on arrival.
WAITING_WORKER = "waiting for a free worker, in fair order (fair share)"
#: The queues whose jobs may wait in a fleet room: not the interactive queue, whose
#: lane waits for room at the worker, nor batch lines, which the dispatcher feeds.
FLEET_QUEUES = (QUEUE_NORMAL, QUEUE_LOW)


#: A job waiting for a free worker is published again by the sweeper if still waiting
#: after this: a fleet's backlog may take minutes to drain, and should Redis lose the
#: rooms, the worker that sees the loss publishes these jobs at once (workers.recovery).
FLEET_LEASE_S = 600.0


def waiting_row(now: dt.datetime, reason: str = WAITING_TURN) -> dict[str, Any]:
    """The columns of a job put in a fair room: published (no message is owed), its
    row looked at again by the sweeper only should the room lose it."""
    lease = FLEET_LEASE_S if reason == WAITING_WORKER else ROOM_LEASE_S
    return {
        "published_at": now,
        "not_before": now + dt.timedelta(seconds=lease),
        "wait_reason": reason,
    }


@dataclass
class Diverted:
    """Jobs put in a room: their model group's, or (`turns`, job id -> queue) a fleet
    room, each owed a turn message on its queue."""

    rooms: set[str] = field(default_factory=set)
    turns: dict[str, str] = field(default_factory=dict)

    def __contains__(self, job_id: object) -> bool:
        return job_id in self.rooms or job_id in self.turns


class FairIntake:
    def __init__(self, room: FairRoom, shares: ShareBook, aliases: Mapping[str, str]) -> None:
        self._room = room
        self._shares = shares
        self._aliases = aliases

    def divert(self, jobs: list[Job], fleet: bool = False) -> Diverted:
        """The jobs put in a room (the others are to be published). `fleet`: jobs may
        wait for a free worker too (at intake, not batch lines). Without Redis every
        job is published: a worker puts it in its room if need be."""
        entries = []
        for job in jobs:
            queue = queue_for_priority(job.priority)
            entries.append(
                Entry(
                    self._aliases.get(job.model, job.model),
                    self._shares.share(job.owner_key),
                    job.id,
                    job.priority,
                    job.estimated_tokens or estimate_request_tokens(job.request),
                    fleet_group(queue) if fleet and queue in FLEET_QUEUES else "",
                )
            )
        diverted = Diverted()
        try:
            put = self._room.divert(entries)
        except Exception as exc:  # Redis away: publishing them is always safe
            log.warning("fair rooms not reached at intake: %s", type(exc).__name__)
            return diverted
        for job, where in zip(jobs, put, strict=True):
            if where == 1:
                diverted.rooms.add(job.id)
            elif where == 2:
                diverted.turns[job.id] = queue_for_priority(job.priority)
        return diverted
