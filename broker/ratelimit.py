"""A queue's rate limit: at most ``limit`` job starts in any window of ``period_ms``. Pure: the
clock is passed in.

Algorithm: a sliding-window log, not a token bucket
----------------------------------------------------
The promise is "no window of ``period_ms`` holds more than ``limit`` starts", for *every*
window, not only windows aligned to a clock tick. A fixed window (count per calendar second)
lets ``2 * limit`` through around a boundary; a token bucket of capacity ``limit`` refilling at
``limit / period`` lets a full bucket go at the end of one window and refilled tokens right
after, so a sliding window can see up to about ``2 * limit``. A log of the start times answers
the question exactly: a start at ``now`` is allowed while fewer than ``limit`` logged starts lie
in ``(now - period_ms, now]``. Then any half-open window ``[a, a + period_ms)`` holds at most
``limit`` starts: at the last start in it, every earlier start in it was in the log's window.

Memory is bounded by coalescing: starts are logged per *slot* of ``slot_ms = max(1, period_ms //
SLOTS)`` milliseconds, each entry ``[slot_end, count]``, so the log holds at most ``SLOTS + 2``
entries whatever the limit. A start is logged at the *end* of its slot (rounded up), so it counts
for up to ``slot_ms`` longer than it happened: a slot frees late by at most ``period_ms /
SLOTS`` (0.1%), never early. Periods up to ``SLOTS`` ms (about 1 s) are exact to the millisecond.

Invariants: entry times are non-decreasing (a clock that steps back logs at the last entry's
time, which only delays); ``total`` is the sum of the entries' counts.
"""

from __future__ import annotations

from collections import deque
from typing import Final

SLOTS: Final = 1024
"""Slots per period (the log holds at most two entries more): the resolution of a long period."""


class SlidingWindow:
    """The start log of one rate-limited queue.

    Args:
        limit: the most starts in any window of ``period_ms``; at least 1.
        period_ms: the window's length in milliseconds; at least 1.

    Raises:
        ValueError: ``limit`` or ``period_ms`` is below 1.
    """

    __slots__ = ("_log", "limit", "period_ms", "slot_ms", "total")

    def __init__(self, limit: int, period_ms: int) -> None:
        if limit < 1 or period_ms < 1:
            raise ValueError(f"limit and period_ms must be >= 1, got {limit}, {period_ms}")
        self.limit = limit
        self.period_ms = period_ms
        self.slot_ms = max(1, period_ms // SLOTS)
        self._log: deque[list[int]] = deque()
        self.total = 0

    def _expire(self, now: int) -> None:
        log = self._log
        horizon = now - self.period_ms
        while log and log[0][0] <= horizon:
            self.total -= log.popleft()[1]

    def room(self, now: int) -> int:
        """How many jobs may start at ``now`` (0 when the window is full)."""
        self._expire(now)
        return max(0, self.limit - self.total)

    def record(self, now: int, count: int) -> None:
        """Log ``count`` starts at ``now`` (the caller stays within ``room(now)``)."""
        if count <= 0:
            return
        self._expire(now)
        slot = self.slot_ms
        at = -(-now // slot) * slot  # the end of now's slot: counts a little long, never short
        log = self._log
        if log:
            last = log[-1]
            if at <= last[0]:
                last[1] += count
                self.total += count
                return
        log.append([at, count])
        self.total += count

    def next_room(self, now: int) -> int:
        """The earliest time ``>= now`` at which ``room`` is above 0."""
        self._expire(now)
        excess = self.total - self.limit  # >= 0 when full; above 0 after the limit was lowered
        if excess < 0:
            return now
        for at, count in self._log:
            excess -= count
            if excess < 0:
                return at + self.period_ms
        return now  # unreachable: the log's counts sum to total

    def resized(self, limit: int, period_ms: int) -> SlidingWindow:
        """The same starts under a new limit and period (a limit changed at run time)."""
        window = SlidingWindow(limit, period_ms)
        for at, count in self._log:
            window.record(at, count)
        return window
