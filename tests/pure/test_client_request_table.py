"""The client's request table, without I/O: no socket, no thread, no event loop; time is given."""

from __future__ import annotations

import pytest

from client.request_table import COMPACT_MIN, TIMEOUT_SLACK, RequestTable
from protocol.checks import MAX_REQUEST_ID


class Waiter:
    """A stand-in for the connection's future: only ``done()`` matters to the table."""

    def __init__(self, name: str = "") -> None:
        self.name = name
        self.finished = False

    def done(self) -> bool:
        return self.finished

    def __repr__(self) -> str:
        return f"Waiter({self.name!r})"


def table(limit: int = 10_000) -> RequestTable[Waiter, Waiter]:
    return RequestTable(limit)


def test_ids_are_sequential_wrap_around_and_skip_pending_ones() -> None:
    t = table()
    assert [t.add(Waiter(), 0.0, 1.0) for _ in range(3)] == [1, 2, 3]
    t._next_id = MAX_REQUEST_ID
    assert t.add(Waiter(), 0.0, 1.0) == MAX_REQUEST_ID
    assert t.add(Waiter(), 0.0, 1.0) == 4  # wrapped past 1, 2 and 3, still pending
    t.match(1)
    t._next_id = 1
    assert t.add(Waiter(), 0.0, 1.0) == 1  # free again


def test_a_reply_matches_its_waiter_once() -> None:
    t = table()
    first, second = Waiter("a"), Waiter("b")
    ids = t.add(first, 0.0, 5.0), t.add(second, 0.0, 5.0)
    assert t.match(ids[1]) is second and t.match(ids[1]) is None
    assert t.match(999) is None
    assert len(t) == 1 and t.match(ids[0]) is first and len(t) == 0


def test_the_timer_follows_the_earliest_deadline() -> None:
    t = table()
    assert t.timer_at is None
    t.add(Waiter(), 10.0, 5.0)
    assert t.timer_at == 15.0
    t.add(Waiter(), 10.0, 9.0)
    assert t.timer_at == 15.0  # a later deadline does not move the timer
    t.add(Waiter(), 11.0, 1.0)
    assert t.timer_at == 12.0  # an earlier one does


def test_expire_fails_only_due_requests_in_deadline_order() -> None:
    t = table()
    late, soon, sooner = Waiter("late"), Waiter("soon"), Waiter("sooner")
    t.add(late, 0.0, 3.0)
    t.add(soon, 0.0, 2.0)
    t.add(sooner, 0.0, 1.0)
    assert t.expire(0.5) == [] and t.timer_at == 1.0
    assert t.expire(2.0) == [(sooner, 1.0), (soon, 2.0)]
    assert t.timer_at == 3.0 and list(t.pending.values()) == [late]
    assert t.expire(3.0) == [(late, 3.0)]
    assert t.timer_at is None and len(t) == 0


def test_the_next_sweep_is_never_sooner_than_the_slack() -> None:
    t = table()
    t.add(Waiter(), 0.0, 1.0)
    t.add(Waiter(), 0.0, 1.0 + TIMEOUT_SLACK / 2)
    assert len(t.expire(1.0)) == 1
    assert t.timer_at == pytest.approx(1.0 + TIMEOUT_SLACK)


def test_answered_requests_do_not_time_out() -> None:
    t = table()
    request_id = t.add(Waiter(), 0.0, 1.0)
    t.match(request_id)
    assert t.expire(5.0) == [] and t.timer_at is None


def test_a_waiter_its_caller_gave_up_on_keeps_its_slot_until_the_reply() -> None:
    t = table(limit=1)
    abandoned = Waiter()
    request_id = t.add(abandoned, 0.0, 1.0)
    abandoned.finished = True
    assert t.expire(2.0) == []
    assert not t.has_slot() and t.match(request_id) is abandoned and t.has_slot()


def test_the_deadline_heap_is_compacted() -> None:
    t = table()
    t.add(Waiter(), 0.0, 1000.0)  # keeps the timer from moving, so adds compact
    for _ in range(10 * COMPACT_MIN):
        t.match(t.add(Waiter(), 0.0, 2000.0))
    assert len(t._deadlines) <= 2 * len(t) + COMPACT_MIN + 1


def test_slot_waiters_are_woken_first_come_first_served_when_a_slot_frees() -> None:
    t = table(limit=2)
    ids = [t.add(Waiter(), 0.0, 1.0) for _ in range(2)]
    assert not t.has_slot()
    gone, first, second = Waiter("gone"), Waiter("first"), Waiter("second")
    for waiter in (gone, first, second):
        t.wait_slot(waiter)
    gone.finished = True
    assert t.next_slot_waiter() is None  # no slot free yet
    t.match(ids[0])
    assert t.next_slot_waiter() is first  # "gone" no longer waits: skipped
    t.add(Waiter(), 0.0, 1.0)
    assert t.next_slot_waiter() is None
    assert t.take_slot_waiters() == [second] and t.slot_waiters == []


def test_clear_hands_back_every_pending_waiter_and_stops_the_timer() -> None:
    t = table()
    waiters = [Waiter(str(i)) for i in range(3)]
    for waiter in waiters:
        t.add(waiter, 0.0, 1.0)
    assert t.clear() == waiters
    assert len(t) == 0 and t.timer_at is None and t.expire(10.0) == []
