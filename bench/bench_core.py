"""The core alone: job lifecycles per second and memory per waiting job. No I/O, fake clock.

Lifecycles: each round enqueues a batch of jobs (broker-assigned ids, 100-byte payloads), reserves
them in one call, and acks them in one call, then takes the changes, ready queues and finished ids
as the server would after each request. The clock advances 1 ms per round. Default retention
(keep the last 1,000 completed per queue) applies, so steady state includes pruning.

Memory: in a fresh process, enqueue N waiting jobs (100-byte payloads, distinct objects, as
decoding would produce) and report the traced allocation per job (tracemalloc: the Python objects
the core holds, payloads included) and the process RSS. tracemalloc's own bookkeeping inflates
that RSS, so it is an upper bound of the core's share of the broker's 600 MiB budget.

Usage: ``python -m bench.bench_core [--jobs N] [--batch B] [--memory-jobs M] [--profile]``
"""

from __future__ import annotations

import argparse
import gc
import random
import subprocess
import sys
import time
import tracemalloc
from typing import Any

from broker.core import Core, CoreConfig
from protocol.model import AckItem, JobSpec

TARGET_LIFECYCLES_PER_S = 300_000
MEMORY_BUDGET_MIB = 600


def _specs(count: int, *, distinct: bool) -> list[JobSpec]:
    payload = bytes(range(100))
    return [
        JobSpec(None, "send_email", bytes(bytearray(payload)) if distinct else payload)
        for _ in range(count)
    ]


def lifecycles(total: int, batch: int) -> float:
    """Run ``total`` enqueue+reserve+ack lifecycles in batches; return lifecycles per second."""
    core = Core(CoreConfig(), rng=random.Random(0), token_base=1 << 40)
    specs = _specs(batch, distinct=False)
    rounds = total // batch
    now = 1_700_000_000_000
    queues = ("default",)
    gc.collect()
    started = time.perf_counter()
    for _ in range(rounds):
        now += 1
        core.enqueue("default", specs, now)
        core.take_changes()
        core.take_ready()
        reserved = core.reserve(queues, batch, None, 1, now)
        core.take_changes()
        outcomes = core.ack([AckItem(job.job_id, job.token, None) for job in reserved], now)
        core.take_changes()
        core.take_finished()
        if len(outcomes) != batch:
            raise AssertionError(f"expected {batch} acks, got {len(outcomes)}")
    elapsed = time.perf_counter() - started
    stats = core.stats("default", now)["default"]
    if stats.total_completed != rounds * batch or stats.waiting or stats.active:
        raise AssertionError(f"bad final stats {stats}")
    return rounds * batch / elapsed


def memory(count: int, *, trace: bool) -> tuple[float, float]:
    """Enqueue ``count`` waiting jobs; return (traced bytes per job, process RSS MiB after).

    Run it in a fresh process (``--memory-only``) so the RSS is the core's alone, and without
    ``trace`` for the RSS (tracemalloc's own bookkeeping costs ~70 bytes per block). Payloads are
    made per batch, distinct objects as the decoder would produce, and counted in the traced
    figure.
    """
    core = Core(CoreConfig(), rng=random.Random(0), token_base=1 << 40)
    gc.collect()
    if trace:
        tracemalloc.start()
    before, _ = tracemalloc.get_traced_memory()
    now = 1_700_000_000_000
    template = bytes(range(100))
    for _ in range(count // 1_000):
        now += 1
        specs = [JobSpec(None, "send_email", bytes(bytearray(template))) for _ in range(1_000)]
        core.enqueue("default", specs, now)
        core.take_changes()
    after, _ = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    gc.collect()
    rss = _rss_mib()
    waiting = core.stats("default", now)["default"].waiting
    if waiting != count // 1_000 * 1_000:
        raise AssertionError(f"expected {count} waiting, got {waiting}")
    return (after - before) / waiting, rss


def _memory_in_subprocess(count: int, *, trace: bool) -> tuple[float, float]:
    command = [sys.executable, "-m", "bench.bench_core", "--memory-only", str(count)]
    if trace:
        command.append("--trace")
    output = subprocess.run(command, check=True, capture_output=True, text=True).stdout.split()
    return float(output[0]), float(output[1])


def _rss_mib() -> float:
    try:
        import psutil
    except ImportError:  # pragma: no cover - psutil is in the bench extra
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return float(psutil.Process().memory_info().rss) / (1 << 20)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=1_000_000, help="lifecycles to run")
    parser.add_argument("--batch", type=int, default=100, help="jobs per request")
    parser.add_argument("--repeat", type=int, default=3, help="runs; the best is reported")
    parser.add_argument("--memory-jobs", type=int, default=1_000_000,
                        help="waiting jobs for the memory measurement (0 to skip)")
    parser.add_argument("--profile", action="store_true", help="profile one run (pyinstrument)")
    parser.add_argument("--memory-only", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--trace", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.memory_only:
        per_job, rss = memory(args.memory_only, trace=args.trace)
        print(per_job, rss)
        return 0

    if args.profile:
        from pyinstrument import Profiler  # a local profiling aid, not a dependency

        profiler: Any = Profiler()
        profiler.start()
        lifecycles(args.jobs, args.batch)
        profiler.stop()
        print(profiler.output_text(unicode=True, color=False))
        return 0

    rates = [lifecycles(args.jobs, args.batch) for _ in range(args.repeat)]
    best = max(rates)
    verdict = "PASS" if best >= TARGET_LIFECYCLES_PER_S else "FAIL"
    print(f"core lifecycles (enqueue+reserve+ack, batch {args.batch}): "
          f"best {best:,.0f}/s of {', '.join(f'{r:,.0f}' for r in rates)} "
          f"[target >= {TARGET_LIFECYCLES_PER_S:,}/s: {verdict}]")
    ok = best >= TARGET_LIFECYCLES_PER_S
    if args.memory_jobs:
        per_job, _ = _memory_in_subprocess(min(args.memory_jobs, 100_000), trace=True)
        _, rss = _memory_in_subprocess(args.memory_jobs, trace=False)
        verdict = "PASS" if rss <= MEMORY_BUDGET_MIB else "FAIL"
        print(f"core memory: {args.memory_jobs:,} waiting jobs (100-byte payloads): "
              f"{per_job:,.0f} B/job (tracemalloc), process RSS {rss:,.0f} MiB "
              f"[core-only RSS <= {MEMORY_BUDGET_MIB} MiB: {verdict}]")
        ok = ok and rss <= MEMORY_BUDGET_MIB
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
