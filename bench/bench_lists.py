"""Job lists in the core: a deep page of a 1M-job waiting queue, and what the lazy waiting index
costs the hot path once it exists. No I/O, fake clock.

Steps:

1. enqueue N waiting jobs (default 1,000,000; 100-byte payloads; priorities 0..3) in one queue;
2. the first ``list_jobs`` of its waiting jobs, which builds the index (O(N), once);
3. page 1,000 (``offset`` 19,980, ``limit`` 20) and a page in the middle (``offset`` N/2,
   ``limit`` 100), each timed as the broker spends it: ``Core.list_jobs`` plus the reply's job
   descriptions and its frame cut (``job_info``, ``fit_job_infos``, ``to_wire``), median of 200;
4. enqueue+reserve+ack lifecycles (batch 100) on a queue whose index exists, against the same on a
   queue never listed (``bench_core``'s loop): the index's upkeep on the hot path.

Usage: ``python -m bench.bench_lists [--jobs N] [--lifecycles N]``
"""

from __future__ import annotations

import argparse
import gc
import random
import statistics
import time

from broker.core import Core, CoreConfig
from broker.replysize import CONN_KEY_SIZE, fit_job_infos, job_info
from protocol.model import AckItem, JobSpec, JobState

TARGET_PAGE_MS = 5.0
NOW = 1_700_000_000_000
WAITING = (JobState.WAITING,)


def fill(core: Core, count: int) -> None:
    payload = bytes(range(100))
    for start in range(0, count, 1_000):
        specs = [JobSpec(None, "send_email", payload, priority=(start // 1_000) % 4)
                 for _ in range(min(1_000, count - start))]
        core.enqueue("big", specs, NOW)
        core.take_changes()


def page_ms(core: Core, offset: int, limit: int, repeat: int = 200) -> float:
    """The median broker time of one ``list_jobs`` page, reply body included, in ms."""
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        jobs, _ = core.list_jobs("big", WAITING, offset, limit, NOW)
        infos = fit_job_infos([job_info(job) for job in jobs], 8 << 20, CONN_KEY_SIZE)
        body = [info.to_wire() for info in infos]
        times.append(time.perf_counter() - started)
        if len(body) != limit:
            raise AssertionError(f"expected {limit} jobs, got {len(body)}")
    return statistics.median(times) * 1000


def lifecycles(total: int, *, listed: bool) -> float:
    """enqueue+reserve+ack lifecycles per second (batch 100), with or without the index."""
    core = Core(CoreConfig(), rng=random.Random(0), token_base=1 << 40)
    # A backlog of 1,000 jobs; with ``listed`` a list reads the queue every round (as a dashboard
    # would), so its index is kept up to date through every enqueue and reserve.
    core.enqueue("default", [JobSpec(None, "x", b"") for _ in range(1_000)], NOW)
    specs = [JobSpec(None, "send_email", bytes(range(100))) for _ in range(100)]
    now = NOW
    gc.collect()
    started = time.perf_counter()
    for _ in range(total // 100):
        now += 1
        if listed:
            core.list_jobs("default", WAITING, 0, 1, now)
        core.enqueue("default", specs, now)
        core.take_changes()
        core.take_ready()
        reserved = core.reserve(("default",), 100, None, 1, now)
        core.take_changes()
        core.ack([AckItem(job.job_id, job.token, None) for job in reserved], now)
        core.take_changes()
        core.take_finished()
    return total // 100 * 100 / (time.perf_counter() - started)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=1_000_000, help="waiting jobs in the queue")
    parser.add_argument("--lifecycles", type=int, default=300_000,
                        help="lifecycles per hot-path run (0 to skip)")
    parser.add_argument("--repeat", type=int, default=3, help="hot-path runs; the best counts")
    args = parser.parse_args(argv)
    gc.set_threshold(50_000, 20, 10)  # as ``jobwire serve`` runs (broker/cli.py)

    core = Core(CoreConfig(), rng=random.Random(0), token_base=1 << 40)
    fill(core, args.jobs)
    started = time.perf_counter()
    core.list_jobs("big", WAITING, 0, 1, NOW)
    build_ms = (time.perf_counter() - started) * 1000
    deep = page_ms(core, 999 * 20, 20)
    middle = page_ms(core, args.jobs // 2, 100)
    ok = deep <= TARGET_PAGE_MS
    print(f"list_jobs, {args.jobs:,} waiting jobs: index built on the first list in "
          f"{build_ms:,.0f} ms (once); page 1,000 (offset 19,980, limit 20) {deep:.3f} ms; "
          f"offset {args.jobs // 2:,} limit 100 {middle:.3f} ms "
          f"[page 1,000 <= {TARGET_PAGE_MS} ms: {'PASS' if ok else 'FAIL'}]")
    if args.lifecycles:
        plain = max(lifecycles(args.lifecycles, listed=False) for _ in range(args.repeat))
        listed = max(lifecycles(args.lifecycles, listed=True) for _ in range(args.repeat))
        print(f"hot path (enqueue+reserve+ack, batch 100): never listed {plain:,.0f}/s, "
              f"with the waiting index kept {listed:,.0f}/s ({listed / plain - 1:+.1%})")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
