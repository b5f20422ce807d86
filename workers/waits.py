"""What a claim's calls may come to short of an end: a wait for capacity (`Deferral`,
timed or in a group's fair room) or a group that did what it could (`Exhausted`)."""

from __future__ import annotations

from dataclasses import dataclass

from models.fair_share import Share
from workers.failures import FallbackList

__all__ = ["Deferral", "Exhausted", "RoomWait"]


@dataclass(frozen=True, slots=True)
class RoomWait:
    """Wait in `group`'s fair room (models.fair_room) until let through; `due_ms`:
    when the capacity it waits for is due back (None: a call's end frees it); `score`
    keeps the place of a job the room had let through already."""

    group: str
    share: Share
    cost: int
    due_ms: int | None
    score: float | None = None


@dataclass(frozen=True, slots=True)
class Deferral:
    """Try again at `due_s` (epoch seconds); `reason` says what the job waits for;
    `room`: wait in a group's fair room instead (workers.fair_turn)."""

    due_s: float
    reason: str
    room: RoomWait | None = None


@dataclass(frozen=True, slots=True)
class Exhausted:
    """A group has done what it can for this claim: go on with the `then` fallbacks;
    `wait` is set when it is only out of capacity for now."""

    then: FallbackList
    wait: Deferral | None = None
