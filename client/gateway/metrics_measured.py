"""``/metrics`` families from the broker's ``metrics`` operation (SPEC §8.23): counters since the
broker started, histograms of wait time, processing time and commits, and process gauges.

The broker's histograms (§9.10) cut each power of two into 16 buckets, so Prometheus buckets
whose bounds are powers of two are exact sums of them. One difference in edges: a broker bucket
holds values ``< upper``, a Prometheus bucket values ``<= le``; an observation exactly on a
power-of-two bound is counted in the next Prometheus bucket. Durations are converted from the
broker's milliseconds to seconds (base units).

The counters here (``added``, ``retried``, ``expired``) restart at zero with the broker, which
Prometheus' ``rate``/``increase`` treat as a counter reset. Completed and failed jobs come from
``stats``' durable totals instead (``client.gateway.metrics``).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any, Final

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)

MS_BOUNDS: Final = tuple(2.0 ** exponent for exponent in range(-2, 24, 2))
"""Duration buckets in ms: 0.25 ms, 1 ms, 4 ms ... 4,194 s (powers of four)."""
COUNT_BOUNDS: Final = tuple(float(2 ** exponent) for exponent in range(0, 17))
"""Commit batch size buckets: 1, 2, 4 ... 65,536 job rows."""


def prometheus_buckets(histogram: Mapping[str, Any], bounds: Sequence[float],
                       scale: float) -> list[tuple[str, float]]:
    """Cumulative ``(le, count)`` buckets from a broker histogram's ``buckets`` (§9.10)."""
    pairs = histogram.get("buckets") or []
    out: list[tuple[str, float]] = []
    for bound in bounds:
        below = sum(count for upper, count in pairs if upper is not None and upper <= bound)
        out.append((repr(bound * scale), float(below)))  # as prometheus_client writes "le"
    out.append(("+Inf", float(histogram.get("count", 0))))
    return out


def add_histogram(family: HistogramMetricFamily, labels: list[str],
                  histogram: Mapping[str, Any] | None, bounds: Sequence[float],
                  scale: float) -> None:
    if not isinstance(histogram, Mapping):
        return
    family.add_metric(labels, prometheus_buckets(histogram, bounds, scale),
                      float(histogram.get("sum") or 0.0) * scale)


COUNTERS: Final = (
    ("added", "jobwire_jobs_added", "Jobs enqueued since the broker started (duplicates not "
     "counted)."),
    ("retried", "jobwire_jobs_retried", "Failed attempts followed by another attempt since the "
     "broker started."),
    ("expired", "jobwire_jobs_expired", "Attempts whose lease ended without an outcome since the "
     "broker started."),
)


def queue_measured_families(measured: Mapping[str, Any]) -> Iterator[Metric]:
    """Per-queue counters and the wait / processing histograms."""
    queues: Mapping[str, Any] = measured.get("queues") or {}
    counters = {key: CounterMetricFamily(name, text, labels=["queue"])
                for key, name, text in COUNTERS}
    wait = HistogramMetricFamily(
        "jobwire_job_wait_seconds", "From a job becoming waiting to being reserved, since the "
        "broker started.", labels=["queue"])
    processing = HistogramMetricFamily(
        "jobwire_job_processing_seconds", "From reservation to ack, since the broker started.",
        labels=["queue"])
    for name in sorted(queues):
        body = queues[name]
        for key, family in counters.items():
            counter = body.get(key)
            if isinstance(counter, Mapping):
                family.add_metric([name], float(counter.get("total", 0)))
        add_histogram(wait, [name], body.get("wait_ms"), MS_BOUNDS, 1e-3)
        add_histogram(processing, [name], body.get("processing_ms"), MS_BOUNDS, 1e-3)
    yield from counters.values()
    yield from (wait, processing)


def broker_measured_families(measured: Mapping[str, Any]) -> Iterator[Metric]:
    """Process gauges, commit counters and the commit histograms."""
    broker: Mapping[str, Any] = measured.get("broker") or {}
    if not broker:
        return
    gauges = (
        ("rss_bytes", "jobwire_broker_resident_memory_bytes", "The broker process's resident "
         "memory."),
        ("journal_bytes", "jobwire_journal_bytes", "Size of the journal's SQLite database file."),
        ("wal_bytes", "jobwire_journal_wal_bytes", "Size of the journal's WAL file."),
        ("subscriptions", "jobwire_broker_subscriptions", "Event subscriptions, all "
         "connections."),
    )
    for key, name, text in gauges:
        value = broker.get(key)
        if isinstance(value, int | float) and not isinstance(value, bool):
            yield GaugeMetricFamily(name, text, value=float(value))
    for key, name, text in (
        ("commits", "jobwire_journal_commits", "Journal transactions committed."),
        ("commit_failures", "jobwire_journal_commit_failures", "Journal transactions that "
         "failed."),
    ):
        counter = broker.get(key)
        if isinstance(counter, Mapping):
            yield CounterMetricFamily(name, text, value=float(counter.get("total", 0)))
    size = HistogramMetricFamily("jobwire_journal_commit_batch_size", "Job rows written per "
                                 "committed transaction.", labels=[])
    add_histogram(size, [], broker.get("commit_batch_size"), COUNT_BOUNDS, 1.0)
    latency = HistogramMetricFamily("jobwire_journal_commit_seconds", "From handing a "
                                    "transaction to SQLite to its commit.", labels=[])
    add_histogram(latency, [], broker.get("commit_latency_ms"), MS_BOUNDS, 1e-3)
    yield from (size, latency)
