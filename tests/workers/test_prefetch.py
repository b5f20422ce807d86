"""A message of several lines counts one prefetch slot per line, on kombu's own QoS."""

from __future__ import annotations

from types import SimpleNamespace

from kombu.common import QoS

from workers.prefetch import Prefetch, Taken


def consumer(prefetch_count: int) -> SimpleNamespace:
    applied: list[int] = []
    qos = QoS(lambda prefetch_count: applied.append(prefetch_count), prefetch_count)
    return SimpleNamespace(qos=qos, applied=applied)


def taken(prefetch: Prefetch, message_id: str) -> Taken:
    slots = prefetch.taken(message_id)
    assert slots is not None
    return slots


def test_each_line_takes_a_slot_until_it_ends() -> None:
    # Given a worker with -c 10
    c, prefetch = consumer(10), Prefetch()

    # When a message of 5 lines arrives, the worker counts 5 slots taken, not 1
    prefetch.received(c, "m1", 5)
    assert c.qos.value == 6
    # a second one leaves the floor of 2: room for one more message (an interactive job)
    prefetch.received(c, "m2", 5)
    assert c.qos.value == 2
    c.qos.update()
    assert c.applied == [2]  # what the consumer's loop applies before its next read
    # a third (taken in the floor's room) is a debt: the count stays at the floor
    prefetch.received(c, "m3", 5)
    assert c.qos.value == 2
    first, second, third = (taken(prefetch, m) for m in ("m1", "m2", "m3"))
    assert (first.count, second.count, third.count) == (4, 4, 4)

    # Then as lines end, the debt is paid first, then the slots come back
    first.give_all()
    assert c.qos.value == 2
    second.give(2)
    assert c.qos.value == 4
    second.give(10)  # never more than it took
    third.give_all()
    assert c.qos.value == 10
    assert prefetch.taken("m1") is None  # handed over once


def test_a_new_qos_after_a_reconnection_starts_afresh() -> None:
    c, prefetch = consumer(10), Prefetch()
    prefetch.received(c, "m1", 20)
    slots = taken(prefetch, "m1")
    assert c.qos.value == 2

    # The connection was rebuilt: the consumer has a fresh QoS at the full count
    c.qos = QoS(lambda prefetch_count: None, 10)
    slots.give_all()

    assert c.qos.value == 10


def test_a_worker_without_a_limit_counts_nothing() -> None:
    c, prefetch = consumer(0), Prefetch()  # prefetch 0: no limit
    prefetch.received(c, "m1", 20)
    taken(prefetch, "m1").give_all()
    assert c.qos.value == 0
