"""The disk's floor under ``--sync full``: how long one ``fdatasync`` of a small write takes in
the brokers' data directory, at the latency step's pace.

Every durable reply waits for one commit, and a commit under ``--sync full`` is SQLite writing its
WAL frames and calling ``fdatasync`` once. So no durable latency percentile can be lower than the
same percentile of a bare ``fdatasync`` on that disk: ``latency-500``'s start latency (enqueue
call to handler start) waits for the enqueue's commit, and this prints what the disk alone costs
at that pace, in the same directory, right after it. Two patterns, as the journal's WAL sees
them: ``append`` (a file that grows, as a fresh broker's WAL does until its first checkpoint)
and ``overwrite`` (a file written once already, as the WAL is reused after a checkpoint).

Usage: ``python -m bench.bench_disk [--dir DIR] [--count N] [--rate PER_S]``.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.hdr import Recorder, summary_ms

PAGE = 4096
"""Bytes per write: one WAL frame's page."""


def measure(path: Path, count: int, rate: float, overwrite: bool) -> Any:
    """``count`` page writes each followed by ``fdatasync``, ``rate`` per second: the histogram
    of the ``fdatasync`` times."""
    recorder = Recorder()
    page = os.urandom(PAGE)
    pause = 1.0 / rate if rate > 0 else 0.0
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        if overwrite:
            os.write(fd, bytes(PAGE * count))
            os.fsync(fd)
        for index in range(count):
            os.pwrite(fd, page, index * PAGE)
            started = time.perf_counter_ns()
            os.fdatasync(fd)
            recorder.record_ns(time.perf_counter_ns() - started)
            if pause:
                time.sleep(pause)
    finally:
        os.close(fd)
        path.unlink(missing_ok=True)
    return recorder.histogram()


def report(name: str, histogram: Any) -> str:
    """One line: the percentiles of ``histogram`` in milliseconds."""
    summary = summary_ms(histogram)
    if summary is None:
        return f"fdatasync {name:9s}: no syncs"
    parts = " ".join(f"{key} {summary[key]:.3f}" for key in ("p50", "p90", "p99", "p999", "max"))
    return f"fdatasync {name:9s} ms: {parts} ({summary['count']} syncs)"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.bench_disk",
        description="Time fdatasync of one 4 KiB write in a directory (the --sync full floor).",
    )
    parser.add_argument("--dir", default=tempfile.gettempdir(),
                        help="directory to measure (default: the system temp dir, where the "
                        "suite's brokers keep their journals)")
    parser.add_argument("--count", type=int, default=2_500,
                        help="syncs per pattern (default 2,500: 5 s each at 500/s)")
    parser.add_argument("--rate", type=float, default=500.0,
                        help="syncs per second (default 500: the latency step's pace; 0: flat out)")
    args = parser.parse_args(argv)
    directory = Path(args.dir)
    for name, overwrite in (("append", False), ("overwrite", True)):
        path = directory / f"jobwire-bench-disk-{os.getpid()}-{name}"
        print(report(name, measure(path, args.count, args.rate, overwrite)), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
