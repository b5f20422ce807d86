"""The fair rooms' order against real Redis: tiers strictly, then the least recent
usage per weight, then first come; who may go past a busy room; what lets jobs
through. Each decision is one Lua call (models/fair_room.lua)."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
import redis
import redis.asyncio as aioredis

from models.fair_room import IDLE_MS, Entry, FairRoom, fleet_group, waited_s
from models.fair_share import Share
from tests.conftest import REDIS_BASE

ROOM_DB = 9  # shared with the router's tests, which run before or after, never beside
COST = 100


class Rooms:
    """A FairRoom with its loop: the coroutines run to completion one at a time."""

    def __init__(self, half_life_s: float = 30.0) -> None:
        self.loop = asyncio.new_event_loop()
        self.sync = redis.Redis.from_url(f"{REDIS_BASE}/{ROOM_DB}")
        self.aio = aioredis.Redis.from_url(f"{REDIS_BASE}/{ROOM_DB}")
        self.room = FairRoom(self.sync, self.aio, half_life_s)

    def run(self, coro: Any) -> Any:
        return self.loop.run_until_complete(coro)

    def wait(self, share: Share, job: str, priority: int = 5, **kw: Any) -> int:
        kw.setdefault("due_ms", None)
        kw.setdefault("score", None)
        return self.room.wait("g", share, job, priority, COST, **kw)

    def release(self, n: int = 1, group: str = "g") -> list[str]:
        return [r.job_id for r in self.run(self.room.release(group, n))]

    def admit(self, share: Share, job: str) -> Any:
        return self.run(self.room.admit("g", share, COST, job))

    def close(self) -> None:
        self.run(self.aio.aclose())
        self.loop.close()
        self.sync.close()


@pytest.fixture
def rooms() -> Iterator[Rooms]:
    r = Rooms()
    r.sync.flushdb()
    yield r
    r.sync.flushdb()
    r.close()


A, B, C = Share("team_a"), Share("team_b"), Share("team_c")


def test_a_light_tenants_job_goes_before_a_heavy_tenants_backlog(rooms: Rooms) -> None:
    # Given tenant A's 50 jobs waiting, 5 of them already let through (A's usage)
    for i in range(50):
        rooms.wait(A, f"a{i:02d}")
    assert rooms.release(5) == [f"a{i:02d}" for i in range(5)]
    # When tenant B's job and then C's come to wait too
    rooms.wait(B, "b0")
    rooms.wait(C, "c0")
    # Then they are let through next, before A's 45, then A's go on in order
    assert rooms.release(3) == ["b0", "c0", "a05"]
    waiting = {(w.tenant, w.jobs) for w in rooms.room.waiting()}
    assert waiting == {("team_a", 44)}


def test_tiers_order_strictly(rooms: Rooms) -> None:
    production = Share("key_prod", "production")
    experiments = Share("key_lab", "batch")
    # Given a production tenant that used a lot, a default one and a batch one waiting
    for i in range(3):
        rooms.wait(production, f"p{i}")
    rooms.release(3)
    for i in range(3):
        rooms.wait(experiments, f"x{i}")
        rooms.wait(A, f"a{i}")
        rooms.wait(production, f"p{3 + i}")
    # Then every production job goes first, then default, then batch, whatever the usage
    assert rooms.release(9) == ["p3", "p4", "p5", "a0", "a1", "a2", "x0", "x1", "x2"]


def test_weights_share_what_is_let_through_3_to_1(rooms: Rooms) -> None:
    heavy, light = Share("team_x", weight=3.0), Share("team_y", weight=1.0)
    # Given two tenants flooding the same room, weights 3 and 1
    for i in range(400):
        rooms.wait(heavy, f"x{i:03d}")
        rooms.wait(light, f"y{i:03d}")
    # When 400 jobs are let through one at a time
    served = Counter(job[0] for _ in range(400) for job in rooms.release(1))
    # Then the weight 3 tenant got three quarters of them
    assert served["x"] / served["y"] == pytest.approx(3.0, rel=0.1)


def test_within_a_tenant_higher_priority_first_then_first_come(rooms: Rooms) -> None:
    rooms.wait(A, "low", priority=2)
    rooms.wait(A, "first", priority=7)
    rooms.wait(A, "second", priority=7)
    assert rooms.release(3) == ["first", "second", "low"]


def test_usage_decays_so_a_tenant_that_stopped_flooding_is_soon_treated_as_new() -> None:
    rooms = Rooms(half_life_s=0.2)
    rooms.sync.flushdb()
    try:
        # Given tenant A who had 20 jobs let through, then B with one
        for i in range(20):
            rooms.wait(A, f"a{i}")
        rooms.release(20)
        rooms.wait(B, "b0")
        rooms.release(1)
        # When A and B wait again right away, B (less usage) goes first
        rooms.wait(A, "a-now")
        rooms.wait(B, "b-now")
        assert rooms.release(1) == ["b-now"]
        rooms.release(1)
        # and after 10 half-lives, A's flood hardly counts: once B has used a little
        # since, A's job goes before B's
        time.sleep(2.0)
        for i in range(5):
            rooms.wait(B, f"b-more{i}")
        rooms.release(5)
        rooms.wait(B, "b-later")
        rooms.wait(A, "a-later")
        assert rooms.release(2) == ["a-later", "b-later"]
    finally:
        rooms.sync.flushdb()
        rooms.close()


def test_who_may_go_past_a_busy_room(rooms: Rooms) -> None:
    # An empty room: everybody goes, and nothing is counted
    assert rooms.admit(A, "a0").go and not rooms.admit(A, "a0").contended
    # Given A's jobs waiting (A used some capacity)
    for i in range(3):
        rooms.wait(A, f"a{i}")
    rooms.release(1)
    # Then A's next job waits behind them (in the room, not in place), B's goes first
    a9 = rooms.admit(A, "a9")
    assert not a9.go and not a9.first
    b = rooms.admit(B, "b0")
    assert b.go and b.contended and b.score is None
    # and a job the room let through goes at once, with its place in the room
    let_through = rooms.admit(A, "a0")
    assert let_through.go and let_through.score is not None
    assert let_through.score is not None
    assert waited_s(let_through.score, int(time.time() * 1000)) < 5
    # When it finds the capacity gone again, it waits at the head of A's jobs
    rooms.wait(A, "a0", score=let_through.score)
    assert rooms.release(1) == ["a0"]


def test_a_production_job_goes_past_default_ones_that_wait(rooms: Rooms) -> None:
    for i in range(3):
        rooms.wait(B, f"b{i}")
    assert rooms.admit(Share("key_prod", "production"), "p0").go
    # and a batch-tier job waits; the first of its tenant, it may wait in place
    lab = rooms.admit(Share("key_lab", "batch"), "x0")
    assert not lab.go and lab.first


def test_the_tick_lets_through_what_came_due_and_wakes_idle_rooms(rooms: Rooms) -> None:
    now = int(time.time() * 1000)
    # Given a room whose jobs wait for a limit's window (due in 0.6 s) and one whose jobs
    # wait for a call's end (no due)
    for i in range(3):
        rooms.wait(A, f"a{i}", due_ms=now + 600)
    rooms.room.wait("h", B, "h0", 5, COST, due_ms=None, score=None)
    # Then nothing goes before the window, as many as came due after it, in fair order
    assert rooms.room.tick(now + 500) == []
    released = rooms.room.tick(now + 700)
    assert sorted((r.group, r.job_id) for r in released) == [("g", "a0"), ("g", "a1"), ("g", "a2")]
    # and a room where nothing was let through for a while lets one through
    idle = rooms.room.tick(now + IDLE_MS + 100)
    assert [(r.group, r.job_id) for r in idle] == [("h", "h0")]
    assert rooms.room.waiting() == []


def test_new_jobs_of_a_waiting_tenant_join_its_queue_at_intake(rooms: Rooms) -> None:
    # Given A's jobs waiting in the room of group g
    rooms.wait(A, "a0")
    # When new jobs of A, of B and of A for another group come in
    entries = [
        Entry("g", A, "a1", 5, COST),
        Entry("g", B, "b0", 5, COST),
        Entry("other", A, "o0", 5, COST),
    ]
    # Then only A's for g join the room (behind A's), the others go to the broker
    assert rooms.room.divert(entries) == [1, 0, 0]
    assert rooms.release(5) == ["a0", "a1"]


def test_while_the_fleet_is_busy_new_jobs_wait_for_a_worker_in_fair_order(rooms: Rooms) -> None:
    fleet = fleet_group("llmfleet.normal")

    def arrive(share: Share, job: str) -> int:
        [where] = rooms.room.divert([Entry("g", share, job, 5, COST, fleet)])
        return int(where)

    def turn() -> str | None:
        got = rooms.room.next_turn(fleet)
        return None if got is None else got[0].job_id

    # Given workers with room: a new job goes to the broker
    assert arrive(A, "a0") == 0
    # When a worker's lane is full, A's flood waits in the fleet room (each owed a turn)
    rooms.room.busy()
    assert [arrive(A, f"a{i}") for i in range(1, 6)] == [2] * 5
    assert turn() == "a1"  # a worker's turn: A's next
    # and then B's and a production key's jobs come in, while the room still has A's
    rooms.sync.delete(f"{rooms.room.prefix}:@busy")
    assert arrive(B, "b0") == 2
    assert arrive(Share("key_prod", "production"), "p0") == 2
    # Then the next turns go to the production job, then B's, then A's in order
    assert [turn() for _ in range(6)] == ["p0", "b0", "a2", "a3", "a4", "a5"]
    assert turn() is None
    # and a job let through for a turn got no ticket for its model group's room: there
    # it is asked in as any job (let ahead of C's, no place of its own: no score)
    rooms.wait(C, "c0")
    assert rooms.admit(A, "a2").score is None
    # Once the room is empty and the fleet not busy, new jobs go to the broker again
    assert arrive(B, "b1") == 0
    # and the fleet room was listed with who waited, as any room
    rooms.room.busy()
    arrive(A, "a9")
    assert sorted((w.group, w.tenant, w.jobs) for w in rooms.room.waiting()) == [
        (fleet, "team_a", 1),
        ("g", "team_c", 1),
    ]
