"""Broker and queue metrics: bounded histograms and per-minute counters, with the clock passed in.

Theory of operation
-------------------
The I/O layer tells this module what happened (a job added, reserved after waiting so long,
acked after running so long; a commit of so many jobs that took so long), always with ``now``
in integer milliseconds; nothing here reads a clock. The ``metrics`` operation turns the state
into plain maps and lists with ``to_wire`` (``protocol/SPEC.md`` §9.9-9.12 documents every
field), which the HTTP gateway renders as Prometheus text.

* ``Histogram`` keeps counts in fixed buckets, as HDR histograms do: each power of two of
  milliseconds is cut into ``SUB_BUCKETS`` equal parts, from ``2**MIN_EXP`` ms (31 µs) to
  ``2**MAX_EXP`` ms (about a year), plus one bucket below and one above. Buckets are stored
  sparsely (index -> count), so a histogram costs memory for the buckets it used, at most
  ``BUCKET_COUNT``; no sample is ever kept.
* ``WindowedCounter`` counts since start and over the last minute: a ring of 60 one-second
  slots, cleared as the clock moves on.

Invariants:

1. A histogram's ``count`` equals the number of ``observe`` calls and the sum of its bucket
   counts; ``sum``, ``min`` and ``max`` are exact.
2. A percentile estimate is the upper bound of the bucket holding the true (nearest-rank)
   value, clamped into ``[min, max]``: never below the true value and at most one bucket width
   (1/16 of the bucket's lower bound, 6.25 %) above it, except at or above ``2**MAX_EXP`` ms
   where the bucket is open (the estimate is then at most ``max``). The first and last ranks
   are exact (``min``, ``max``).
3. ``last_minute(now)`` is the sum over the seconds ``now // 1000 - 59 .. now // 1000``; a
   count given a time more than a minute behind the latest seen lands only in ``total``.
4. Memory is bounded per queue (5 counters of 60 slots, 2 histograms of at most
   ``BUCKET_COUNT`` buckets and ``MAX_UNFOLDED`` values waiting to be folded) and per broker;
   nothing grows with traffic.
"""

from __future__ import annotations

import math
from array import array
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Final

SUB_BUCKETS: Final = 16
"""Buckets per power of two: a bucket is at most 1/16 (6.25 %) of its lower bound wide."""
MIN_EXP: Final = -5
"""Values below ``2**MIN_EXP`` ms (31.25 µs) share the first bucket."""
MAX_EXP: Final = 35
"""Values from ``2**MAX_EXP`` ms (about 397 days) on share the last bucket."""
BUCKET_COUNT: Final = 2 + (MAX_EXP - MIN_EXP) * SUB_BUCKETS
_OVERFLOW: Final = BUCKET_COUNT - 1
_LOWEST: Final = 2.0**MIN_EXP
_HIGHEST: Final = 2.0**MAX_EXP
PERCENTILES: Final = (("p50", 50.0), ("p90", 90.0), ("p99", 99.0))
MAX_UNFOLDED: Final = 1_024
"""Distinct values a histogram counts exactly before folding them into its buckets."""

WINDOW_SECONDS: Final = 60


def bucket_index(value: float) -> int:
    """The bucket holding ``value`` (negative values count as 0)."""
    if value < _LOWEST:
        return 0
    if value >= _HIGHEST:
        return _OVERFLOW
    mantissa, exponent = math.frexp(value)  # value = mantissa * 2**exponent, 0.5 <= m < 1
    sub = int((mantissa * 2.0 - 1.0) * SUB_BUCKETS)
    return 1 + (exponent - 1 - MIN_EXP) * SUB_BUCKETS + sub


def bucket_bounds(index: int) -> tuple[float, float]:
    """``(lower, upper)`` of a bucket: it holds ``lower <= value < upper`` (upper is ``inf`` for
    the last)."""
    if index <= 0:
        return 0.0, _LOWEST
    if index >= _OVERFLOW:
        return _HIGHEST, math.inf
    doubling, sub = divmod(index - 1, SUB_BUCKETS)
    base = 2.0 ** (doubling + MIN_EXP)
    return base * (1 + sub / SUB_BUCKETS), base * (1 + (sub + 1) / SUB_BUCKETS)


class Histogram:
    """A bounded histogram of non-negative values (milliseconds, or a count such as jobs per
    commit): counts per fixed bucket, plus the exact count, sum, min and max.

    ``observe`` is on the broker's per-job path, so it only counts the exact value in a small
    map (``MAX_UNFOLDED`` distinct values at most, plus the values of one ``observe_many``); the
    values are folded into the buckets when the histogram is read or the map is full. Reading
    ``buckets``, ``count``, ``sum``, ``min`` or ``max`` folds first. ``observe_many`` counts a
    request's values in one C call (``Counter.update``): the reserve and ack hot paths collect
    their jobs' durations in a list and hand it over once.
    """

    __slots__ = ("_buckets", "_count", "_max", "_min", "_sum", "_unfolded")

    def __init__(self) -> None:
        self._unfolded: Counter[float] = Counter()
        self._buckets: dict[int, int] = {}
        self._count = 0
        self._sum = 0.0
        self._min = math.inf
        self._max = 0.0

    def observe(self, value: float) -> None:
        """Record ``value``; a negative value (a clock step back) counts as 0."""
        unfolded = self._unfolded
        unfolded[value] = unfolded.get(value, 0) + 1
        if len(unfolded) > MAX_UNFOLDED:
            self._fold()

    def observe_many(self, values: Iterable[float]) -> None:
        """Record each of ``values`` (as ``observe`` does, counted in C)."""
        unfolded = self._unfolded
        unfolded.update(values)
        if len(unfolded) > MAX_UNFOLDED:
            self._fold()

    def _fold(self) -> None:
        unfolded = self._unfolded
        if not unfolded:
            return
        buckets = self._buckets
        total = 0.0
        low = self._min
        high = self._max
        for value, times in unfolded.items():
            if value < 0:
                value = 0.0
            index = bucket_index(value)
            buckets[index] = buckets.get(index, 0) + times
            self._count += times
            total += value * times
            if value < low:
                low = value
            if value > high:
                high = value
        self._sum += total
        self._min = low
        self._max = high
        unfolded.clear()

    @property
    def buckets(self) -> dict[int, int]:
        """Bucket index -> observations (only the buckets used)."""
        self._fold()
        return self._buckets

    @property
    def count(self) -> int:
        self._fold()
        return self._count

    @property
    def sum(self) -> float:
        self._fold()
        return self._sum

    @property
    def min(self) -> float:
        """The smallest observation (``inf`` while empty)."""
        self._fold()
        return self._min

    @property
    def max(self) -> float:
        """The largest observation (0 while empty)."""
        self._fold()
        return self._max

    def merge(self, other: Histogram) -> None:
        """Add every observation of ``other`` (e.g. to sum queues)."""
        self._fold()
        buckets = self._buckets
        for index, times in other.buckets.items():
            buckets[index] = buckets.get(index, 0) + times
        self._count += other.count
        self._sum += other.sum
        self._min = min(self._min, other.min)
        self._max = max(self._max, other.max)

    def percentile(self, percent: float) -> float | None:
        """The estimated value below which ``percent`` % of observations fall (invariant 2);
        ``None`` when empty.

        Raises:
            ValueError: ``percent`` is outside 0..100.
        """
        if not 0.0 <= percent <= 100.0:
            raise ValueError(f"percent must be in 0..100, got {percent}")
        if self.count == 0:
            return None
        rank = max(1, math.ceil(percent / 100.0 * self.count))
        if rank == 1:
            return self.min  # the smallest and the largest observation are known exactly
        if rank >= self.count:
            return self.max
        seen = 0
        buckets = self._buckets
        for index in sorted(buckets):
            seen += buckets[index]
            if seen >= rank:
                return min(max(bucket_bounds(index)[1], self.min), self.max)
        return self.max  # unreachable while the counts add up (invariant 1)

    def to_wire(self, *, buckets: bool = False) -> dict[str, Any]:
        """``{count, sum, min, max, p50, p90, p99}`` (nil when empty) and, with ``buckets``,
        ``buckets``: ``[[upper, count], ...]`` for the used buckets in increasing order, ``upper``
        nil for the last (unbounded) bucket; counts are per bucket, not cumulative."""
        empty = self.count == 0
        body: dict[str, Any] = {
            "count": self.count,
            "sum": self.sum,
            "min": None if empty else self.min,
            "max": None if empty else self.max,
        }
        for key, percent in PERCENTILES:
            body[key] = self.percentile(percent)
        if buckets:
            used = self._buckets
            body["buckets"] = [
                [None if index == _OVERFLOW else bucket_bounds(index)[1], used[index]]
                for index in sorted(used)
            ]
        return body


class WindowedCounter:
    """A count since start and over the last minute (invariant 3)."""

    __slots__ = ("_second", "_slots", "total")

    def __init__(self) -> None:
        self.total = 0
        self._slots = array("q", bytes(8 * WINDOW_SECONDS))
        self._second: int | None = None
        """The latest second seen; slot ``s % 60`` holds second ``s`` for the 60 up to it."""

    def add(self, now: int, count: int = 1) -> None:
        """Count ``count`` events that happened at ``now`` (ms)."""
        second = now // 1000
        self._advance(second)
        latest = self._second
        assert latest is not None
        if latest - second < WINDOW_SECONDS:
            self._slots[second % WINDOW_SECONDS] += count
        self.total += count

    def last_minute(self, now: int) -> int:
        """Events counted in the seconds ``now // 1000 - 59`` to ``now // 1000``."""
        self._advance(now // 1000)
        return sum(self._slots)

    def _advance(self, second: int) -> None:
        latest = self._second
        if latest is None:
            self._second = second
            return
        if second <= latest:
            return
        slots = self._slots
        if second - latest >= WINDOW_SECONDS:
            for index in range(WINDOW_SECONDS):
                slots[index] = 0
        else:
            for passed in range(latest + 1, second + 1):
                slots[passed % WINDOW_SECONDS] = 0
        self._second = second

    def to_wire(self, now: int) -> dict[str, int]:
        """``{total, last_minute}``."""
        return {"total": self.total, "last_minute": self.last_minute(now)}


class QueueMetrics:
    """One queue's counters and durations.

    ``added``: jobs enqueued (not duplicates). ``completed``: acked. ``failed``: jobs that ended
    in ``failed`` (attempts used up or not retryable). ``retried``: failed attempts followed by
    another attempt. ``expired``: attempts whose lease ended without an outcome (also counted in
    ``retried`` or ``failed``). ``wait_ms``: from becoming waiting (enqueued, due, released or
    retried) to being reserved. ``processing_ms``: from reserved to acked.
    """

    __slots__ = ("added", "completed", "expired", "failed", "processing_ms", "retried",
                 "wait_ms")

    def __init__(self) -> None:
        self.added = WindowedCounter()
        self.completed = WindowedCounter()
        self.failed = WindowedCounter()
        self.retried = WindowedCounter()
        self.expired = WindowedCounter()
        self.wait_ms = Histogram()
        self.processing_ms = Histogram()

    def to_wire(self, now: int, *, buckets: bool = False) -> dict[str, Any]:
        """The queue's metrics map (``protocol/SPEC.md`` §9.12, QueueMetrics)."""
        return {
            "added": self.added.to_wire(now),
            "completed": self.completed.to_wire(now),
            "failed": self.failed.to_wire(now),
            "retried": self.retried.to_wire(now),
            "expired": self.expired.to_wire(now),
            "wait_ms": self.wait_ms.to_wire(buckets=buckets),
            "processing_ms": self.processing_ms.to_wire(buckets=buckets),
        }


@dataclass(frozen=True, slots=True)
class BrokerGauges:
    """Values the I/O layer reads when the ``metrics`` op is answered (sizes of files, the
    process's RSS, open connections): passed in, so this module reads nothing itself."""

    connections: int
    subscriptions: int
    queues: int
    rss_bytes: int | None
    journal_bytes: int
    wal_bytes: int


class BrokerMetrics:
    """The broker's commit metrics (each queue's ``QueueMetrics`` lives with the queue, in the
    core's ``QueueState``).

    Args:
        started_at: when the broker started (ms), for ``uptime_ms``.
    """

    __slots__ = ("commit_batch_size", "commit_failures", "commit_latency_ms", "commits",
                 "started_at")

    def __init__(self, started_at: int) -> None:
        self.started_at = started_at
        self.commits = WindowedCounter()
        self.commit_failures = WindowedCounter()
        self.commit_batch_size = Histogram()
        """Jobs written per successful commit (a count, not milliseconds)."""
        self.commit_latency_ms = Histogram()

    def commit_succeeded(self, jobs: int, latency_ms: float, now: int) -> None:
        """A transaction of ``jobs`` job rows committed after ``latency_ms``."""
        self.commits.add(now)
        self.commit_batch_size.observe(jobs)
        self.commit_latency_ms.observe(latency_ms)

    def commit_failed(self, now: int) -> None:
        self.commit_failures.add(now)

    def to_wire(self, now: int, gauges: BrokerGauges, *, buckets: bool = False) -> dict[str, Any]:
        """The broker's metrics map (``protocol/SPEC.md`` §9.11, BrokerMetrics)."""
        return {
            "now": now,
            "uptime_ms": max(0, now - self.started_at),
            "connections": gauges.connections,
            "subscriptions": gauges.subscriptions,
            "rss_bytes": gauges.rss_bytes,
            "journal_bytes": gauges.journal_bytes,
            "wal_bytes": gauges.wal_bytes,
            "queues": gauges.queues,
            "commits": self.commits.to_wire(now),
            "commit_failures": self.commit_failures.to_wire(now),
            "commit_batch_size": self.commit_batch_size.to_wire(buckets=buckets),
            "commit_latency_ms": self.commit_latency_ms.to_wire(buckets=buckets),
        }
