"""The rate-limit policy (broker/ratelimit.py): a sliding-window log with the clock passed in.

The property that matters: whatever the request pattern, no window of ``period_ms`` (every
window, not only aligned ones) holds more than ``limit`` starts, and a caller that takes all the
room it is offered is never refused once the oldest start has left the window.
"""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from broker.ratelimit import SLOTS, SlidingWindow


def test_full_window_refuses_until_the_oldest_start_leaves() -> None:
    window = SlidingWindow(3, 1_000)
    assert window.room(0) == 3
    window.record(0, 2)
    window.record(400, 1)
    assert window.room(999) == 0
    assert window.next_room(999) == 1_000
    assert window.room(1_000) == 2  # the two starts at 0 left the window (now - 1000, now]
    assert window.room(1_399) == 2
    assert window.room(1_400) == 3


def test_no_refill_burst_at_a_window_boundary() -> None:
    """A token bucket of capacity 10 lets 10 go at 999 and 10 more soon after; this does not."""
    window = SlidingWindow(10, 1_000)
    window.record(999, window.room(999))
    assert window.room(1_000) == 0
    assert window.room(1_998) == 0
    assert window.room(1_999) == 10


def test_lowering_the_limit_waits_for_enough_starts_to_leave() -> None:
    window = SlidingWindow(10, 1_000)
    for at in range(0, 10):
        window.record(at * 10, 1)
    lowered = window.resized(4, 1_000)
    assert lowered.room(100) == 0
    # 10 starts logged, room for one more only once 7 have left: the 7th at 60 leaves at 1060.
    assert lowered.next_room(100) == 1_060
    assert lowered.room(1_060) == 1
    raised = window.resized(20, 1_000)
    assert raised.room(100) == 10


def test_long_periods_are_coarsened_and_never_free_early() -> None:
    period = 86_400_000  # a day: slots of period // 1024 ms
    window = SlidingWindow(5, period)
    slot = period // SLOTS
    window.record(1, 5)
    assert window.next_room(2) == slot + period  # logged at its slot's end: late, not early
    assert window.room(period) == 0
    assert window.room(slot + period) == 5


def test_memory_is_bounded_by_the_slots() -> None:
    window = SlidingWindow(1_000_000, 10_000_000)
    for at in range(0, 10_000_000, 997):
        window.record(at, 1)
    assert len(window._log) <= SLOTS + 2


def test_a_clock_that_steps_back_only_delays() -> None:
    window = SlidingWindow(2, 1_000)
    window.record(5_000, 1)
    window.record(4_000, 1)  # logged at 5000, not 4000
    assert window.room(5_999) == 0
    assert window.room(6_000) == 2


@pytest.mark.parametrize(("limit", "period"), [(0, 1_000), (1, 0), (-1, 5)])
def test_bad_limits_are_refused(limit: int, period: int) -> None:
    with pytest.raises(ValueError):
        SlidingWindow(limit, period)


@given(
    limit=st.integers(1, 6),
    period=st.sampled_from((1, 7, 100, 1_000, 5_000)),
    steps=st.lists(st.tuples(st.integers(0, 1_500), st.integers(0, 8)), max_size=60),
)
def test_no_window_holds_more_than_limit_starts(
    limit: int, period: int, steps: list[tuple[int, int]]
) -> None:
    window = SlidingWindow(limit, period)
    now = 0
    starts: list[int] = []
    for advance, wanted in steps:
        now += advance
        room = window.room(now)
        granted = min(room, wanted)
        window.record(now, granted)
        starts += [now] * granted
        in_window = sum(1 for at in starts if at > now - period)
        if period <= SLOTS:  # exact: room is what the window leaves
            assert room == max(0, limit - (in_window - granted))
            if room == 0:
                assert window.next_room(now) > now
    for first in starts:  # every window [first, first + period) that begins at a start
        assert sum(1 for at in starts if first <= at < first + period) <= limit
