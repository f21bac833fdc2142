"""Broker histograms (SPEC §9.10: 16 buckets per power of two, per-bucket counts, values below
``upper``) become cumulative Prometheus buckets at powers of two, exactly."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from client.gateway.metrics import Snapshot, render
from client.gateway.metrics_measured import MS_BOUNDS, prometheus_buckets


def test_buckets_are_cumulative_sums_at_power_of_two_bounds() -> None:
    histogram = {"count": 6, "sum": 40.5, "buckets": [
        [0.53125, 1], [1.0, 2], [1.0625, 1], [17.0, 1], [None, 1]]}
    got = dict(prometheus_buckets(histogram, MS_BOUNDS[:4], 1e-3))
    # bounds 0.25, 1, 4, 16 ms → 0.00025, 0.001, 0.004, 0.016 s
    assert got == {"0.00025": 0.0, "0.001": 3.0, "0.004": 4.0, "0.016": 4.0, "+Inf": 6.0}


def test_a_snapshot_with_measured_metrics_renders_parseable_text() -> None:
    measured = {
        "broker": {"rss_bytes": 5_000_000, "journal_bytes": 4096, "wal_bytes": 0,
                   "subscriptions": 1, "commits": {"total": 3, "last_minute": 3},
                   "commit_failures": {"total": 0, "last_minute": 0},
                   "commit_batch_size": {"count": 3, "sum": 7.0, "buckets": [[2.0, 1], [5.0, 2]]},
                   "commit_latency_ms": {"count": 3, "sum": 3.0, "buckets": [[1.0, 3]]}},
        "queues": {"q": {"added": {"total": 7, "last_minute": 7},
                         "retried": {"total": 1, "last_minute": 1},
                         "expired": {"total": 0, "last_minute": 0},
                         "wait_ms": {"count": 0, "sum": 0.0, "buckets": []},
                         "processing_ms": {"count": 1, "sum": 2.0, "buckets": [[2.125, 1]]}}},
    }
    text = render(Snapshot({}, {}, measured)).decode()
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for family in text_string_to_metric_families(text) for s in family.samples}
    assert samples[("jobwire_jobs_added_total", (("queue", "q"),))] == 7
    assert samples[("jobwire_journal_commit_batch_size_bucket", (("le", "4.0"),))] == 1
    assert samples[("jobwire_journal_commit_batch_size_bucket", (("le", "8.0"),))] == 3
    assert samples[("jobwire_job_processing_seconds_sum", (("queue", "q"),))] == 0.002
    assert samples[("jobwire_broker_resident_memory_bytes", ())] == 5_000_000
    assert samples[("jobwire_journal_commits_total", ())] == 3
