"""The bench harness's pure parts: HDR histograms that merge through their encoding, and the
median run of the suite, the disk floor's timing. The scenarios themselves:
``tests/process/test_bench.py``.
"""

from __future__ import annotations

import random
from pathlib import Path

from bench import bench_disk
from bench.hdr import Recorder, encode, merge, new_histogram, record_ns, summary_ms
from bench.suite import median_run, runs_note


def test_histograms_merge_through_their_encoding() -> None:
    first, second, both = new_histogram(), new_histogram(), new_histogram()
    for micros in range(1, 1001):
        record_ns(first if micros % 2 else second, micros * 1000)
        record_ns(both, micros * 1000)
    merged = merge([encode(first), encode(second)])
    assert merged.get_total_count() == 1000
    assert summary_ms(merged) == summary_ms(both)
    assert summary_ms(new_histogram()) is None


def test_a_recorder_holds_exactly_what_direct_recording_does() -> None:
    rng = random.Random(5)
    direct, folded, big = new_histogram(), Recorder(max_pending=16), Recorder()
    for _ in range(5_000):
        elapsed_ns = int(rng.lognormvariate(13, 2))  # ~0.4 ms median, long tail, some < 1 us
        record_ns(direct, elapsed_ns)
        folded.record_ns(elapsed_ns)
        big.record_ns(elapsed_ns)
    for recorder in (folded, big):
        assert recorder.histogram().get_total_count() == 5_000
        assert summary_ms(recorder.histogram()) == summary_ms(direct)
        assert summary_ms(merge([recorder.encode()])) == summary_ms(direct)


def test_the_median_run_is_reported_with_every_runs_figure() -> None:
    runs = [{"jobs_per_s": 3.0, "id": "a"}, {"jobs_per_s": 1.0, "id": "b"},
            {"jobs_per_s": 2.0, "id": "c"}, {"jobs_per_s": 4.0, "id": "d"}]
    chosen = median_run(runs)
    assert chosen["id"] == "c" and chosen["runs_jobs_per_s"] == [3.0, 1.0, 2.0, 4.0]
    assert "runs_jobs_per_s" not in median_run(runs[:1])


def test_a_latency_step_is_ranked_by_its_p99() -> None:
    runs = [{"jobs_per_s": 500.0, "latency_ms": {"p99": 1.5}, "id": "a"},
            {"jobs_per_s": 500.1, "latency_ms": {"p99": 0.7}, "id": "b"},
            {"jobs_per_s": 499.9, "latency_ms": {"p99": 0.9}, "id": "c"}]
    chosen = median_run(runs, "latency_ms.p99")
    assert chosen["id"] == "c"
    assert chosen["runs_of"] == "latency_ms.p99" and chosen["runs_figures"] == [1.5, 0.7, 0.9]
    assert "runs_jobs_per_s" not in chosen
    chosen["name"] = "latency-500"
    assert runs_note(chosen) == ("latency-500: 3 runs, p99 ms 1.500, 0.700, 0.900 (in run "
                                 "order); the row is the median run")


def test_the_disk_floor_times_each_fdatasync(tmp_path: Path) -> None:
    for overwrite in (False, True):
        histogram = bench_disk.measure(tmp_path / "f", 20, 0.0, overwrite)
        assert histogram.get_total_count() == 20
        assert not (tmp_path / "f").exists()  # the file is removed
        line = bench_disk.report("append", histogram)
        assert line.startswith("fdatasync append") and "p99" in line and "(20 syncs)" in line
