"""Metrics, pure tier: bucket arithmetic, histogram counts and percentile bounds, per-minute
counters with the clock passed in, and the wire maps. No socket, no thread, no clock."""

from __future__ import annotations

import math

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from broker.metrics import (
    BUCKET_COUNT,
    MAX_EXP,
    MAX_UNFOLDED,
    MIN_EXP,
    SUB_BUCKETS,
    BrokerGauges,
    BrokerMetrics,
    Histogram,
    QueueMetrics,
    WindowedCounter,
    bucket_bounds,
    bucket_index,
)

values = st.floats(min_value=0.0, max_value=2.0 ** (MAX_EXP + 3), allow_nan=False)


# --------------------------------------------------------------------------- buckets


@given(values)
def test_a_value_lies_in_its_bucket(value: float) -> None:
    index = bucket_index(value)
    assert 0 <= index < BUCKET_COUNT
    lower, upper = bucket_bounds(index)
    assert lower <= value < upper


def test_buckets_tile_the_range_without_gaps() -> None:
    previous_upper = 0.0
    for index in range(BUCKET_COUNT):
        lower, upper = bucket_bounds(index)
        assert lower == previous_upper and upper > lower
        previous_upper = upper
    assert previous_upper == math.inf


def test_bucket_width_is_a_sixteenth_of_its_lower_bound() -> None:
    for index in range(1, BUCKET_COUNT - 1):
        lower, upper = bucket_bounds(index)
        assert upper - lower == pytest.approx(lower / SUB_BUCKETS / (1 + (index - 1) % 16 / 16))
    assert bucket_index(2.0**MIN_EXP) == 1
    assert bucket_index(2.0**MIN_EXP * 0.99) == 0
    assert bucket_index(2.0**MAX_EXP) == BUCKET_COUNT - 1
    assert bucket_index(-5) == 0


# --------------------------------------------------------------------------- histograms


@settings(max_examples=200)
@given(st.lists(values, min_size=1, max_size=300), st.floats(0.0, 100.0))
def test_counts_add_up_and_percentiles_are_within_one_bucket(
    observed: list[float], percent: float
) -> None:
    histogram = Histogram()
    for value in observed:
        histogram.observe(value)
    assert histogram.count == len(observed) == sum(histogram.buckets.values())
    assert histogram.min == min(observed) and histogram.max == max(observed)
    assert histogram.sum == pytest.approx(math.fsum(observed), rel=1e-9)
    ordered = sorted(observed)
    rank = max(1, math.ceil(percent / 100.0 * len(ordered)))  # nearest rank
    true = ordered[rank - 1]
    estimate = histogram.percentile(percent)
    assert estimate is not None
    if rank in (1, len(ordered)):
        assert estimate == true  # the extremes are exact
    lower, upper = bucket_bounds(bucket_index(true))
    assert true <= estimate
    if upper != math.inf:
        assert estimate <= upper
        assert estimate - true <= upper - lower
    else:
        assert estimate <= histogram.max


def test_percentiles_of_a_known_distribution() -> None:
    histogram = Histogram()
    for value in range(1, 1001):  # 1..1000 ms
        histogram.observe(float(value))
    p50, p99 = histogram.percentile(50), histogram.percentile(99)
    assert p50 is not None and p99 is not None
    assert 500 <= p50 < 500 * (1 + 1 / 16)
    assert 990 <= p99 < 990 * (1 + 1 / 16)
    assert histogram.percentile(100) == 1000.0
    assert histogram.percentile(0) == 1.0


def test_empty_histogram_and_bad_percent() -> None:
    histogram = Histogram()
    assert histogram.percentile(50) is None
    assert histogram.to_wire() == {
        "count": 0, "sum": 0.0, "min": None, "max": None, "p50": None, "p90": None, "p99": None,
    }
    with pytest.raises(ValueError):
        histogram.percentile(101)


def test_many_distinct_values_are_folded_and_still_add_up() -> None:
    histogram = Histogram()
    for value in range(5_000):
        histogram.observe(value / 7)
    assert len(histogram._unfolded) <= MAX_UNFOLDED
    assert histogram.count == 5_000 == sum(histogram.buckets.values())
    assert histogram.sum == pytest.approx(sum(v / 7 for v in range(5_000)))
    assert (histogram.min, histogram.max) == (0.0, 4_999 / 7)
    assert histogram._unfolded == {}


def test_negative_values_count_as_zero() -> None:
    histogram = Histogram()
    histogram.observe(-3.0)
    assert (histogram.count, histogram.min, histogram.sum, histogram.buckets) == (1, 0, 0, {0: 1})


@given(st.lists(values, max_size=50), st.lists(values, max_size=50))
def test_merge_equals_observing_both(first: list[float], second: list[float]) -> None:
    a, b, both = Histogram(), Histogram(), Histogram()
    for value in first:
        a.observe(value)
        both.observe(value)
    for value in second:
        b.observe(value)
        both.observe(value)
    a.merge(b)
    assert (a.buckets, a.count, a.min, a.max) == (both.buckets, both.count, both.min, both.max)


def test_wire_buckets_are_sparse_increasing_and_per_bucket() -> None:
    histogram = Histogram()
    for value in (0.001, 3.0, 3.0, 1e12):
        histogram.observe(value)
    body = histogram.to_wire(buckets=True)
    assert body["buckets"] == [[2.0**MIN_EXP, 1], [3.125, 2], [None, 1]]
    assert msgpack.unpackb(msgpack.packb(body), raw=False) == body


# --------------------------------------------------------------------------- counters


def test_windowed_counter_forgets_after_a_minute() -> None:
    counter = WindowedCounter()
    counter.add(1_000, 5)
    counter.add(30_500, 2)
    assert counter.last_minute(30_999) == 7
    assert counter.last_minute(60_999) == 7  # second 1 is the oldest of 1..60
    assert counter.last_minute(61_000) == 2
    assert counter.last_minute(90_999) == 0
    assert counter.total == 7


def test_windowed_counter_with_a_clock_step_back_or_a_long_gap() -> None:
    counter = WindowedCounter()
    counter.add(100_000)
    counter.add(95_000)  # behind, inside the window: counted there
    counter.add(10_000)  # more than a minute behind: total only
    assert counter.last_minute(100_000) == 2 and counter.total == 3
    counter.add(10_000_000)
    assert counter.last_minute(10_000_000) == 1


@settings(max_examples=100)
@given(st.lists(st.tuples(st.integers(0, 300_000), st.integers(1, 5)), max_size=80))
def test_windowed_counter_matches_a_plain_model(adds: list[tuple[int, int]]) -> None:
    counter = WindowedCounter()
    latest = -1
    kept: list[tuple[int, int]] = []
    for now, count in sorted(adds):  # a monotonic clock
        counter.add(now, count)
        kept.append((now // 1000, count))
        latest = now // 1000
        assert counter.last_minute(now) == sum(c for s, c in kept if latest - s < 60)
    assert counter.total == sum(c for _, c in adds)


# --------------------------------------------------------------------------- wire maps


def test_queue_metrics_wire_map() -> None:
    metrics = QueueMetrics()
    metrics.added.add(1_000, 3)
    metrics.completed.add(2_000)
    metrics.wait_ms.observe(4.0)
    metrics.processing_ms.observe(12.0)
    body = metrics.to_wire(2_000)
    assert body["added"] == {"total": 3, "last_minute": 3}
    assert body["failed"] == {"total": 0, "last_minute": 0}
    assert body["wait_ms"]["p50"] == 4.0 and body["processing_ms"]["count"] == 1
    assert "buckets" not in body["wait_ms"]
    assert msgpack.unpackb(msgpack.packb(body), raw=False) == body


def test_broker_metrics_wire_map() -> None:
    metrics = BrokerMetrics(started_at=10_000)
    metrics.commit_succeeded(jobs=50, latency_ms=1.5, now=11_000)
    metrics.commit_failed(now=11_500)
    gauges = BrokerGauges(connections=3, subscriptions=1, queues=2, rss_bytes=None,
                          journal_bytes=4096, wal_bytes=0)
    body = metrics.to_wire(12_000, gauges, buckets=True)
    assert body["uptime_ms"] == 2_000 and body["queues"] == 2
    assert body["commits"] == {"total": 1, "last_minute": 1}
    assert body["commit_failures"]["total"] == 1
    assert body["commit_batch_size"]["max"] == 50
    assert body["commit_latency_ms"]["buckets"] == [[1.5625, 1]]
    assert (body["connections"], body["rss_bytes"], body["journal_bytes"]) == (3, None, 4096)
    assert msgpack.unpackb(msgpack.packb(body), raw=False) == body
