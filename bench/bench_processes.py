"""CPU-bound handlers: ``jobwire worker --processes 1`` against ``--processes N`` (issue 13).

A plain ``def`` handler that spins in pure Python holds the GIL: one worker process runs one at a
time however many threads its pool has, so only more processes use more cores. This bench starts
its own broker (``--sync off``: the journal is beside the point), writes a handler module that
spins for a fixed number of loop iterations (calibrated here to ``--ms`` milliseconds on one
core, so every run does the same work, whatever the load), and for each round runs
``jobwire worker bench_cpu:handlers --processes P --concurrency C`` for every P in ``--compare``
in turn (alternated, so a change in the machine's load hits all of them alike). In each run the
workers connect first (the start-up of the processes is not timed); then ``--jobs`` jobs are
enqueued in one batch and the time until the last completion is measured. The supervisor is
stopped with SIGTERM after each run.

Results: per P, the median seconds over ``--rounds`` rounds and jobs per second, the speed-up
of each P against the first (median against median), and the cores the worker processes used
while the batch ran (their CPU seconds over the wall time, from psutil): on a machine whose cores
other programs also use, that says how much of the machine the children could get. The 1-minute
load average is printed before and after: on a shared machine, compare the ratio within one
sitting, not the seconds across sittings.

Usage: ``python -m bench.bench_processes [--jobs 200] [--ms 20] [--rounds 3] [--compare 1 2]``
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import psutil

from bench.broker_proc import BrokerProcess
from client import Client

HANDLERS = textwrap.dedent("""
    def spin(iterations):
        total = 0
        for i in range(iterations):
            total += i * i % 7
        return total

    def cpu(job):
        spin(job.data)
        return None

    handlers = {"cpu": cpu}
""")


def _spin(iterations: int) -> int:  # the same loop as the handler's
    total = 0
    for i in range(iterations):
        total += i * i % 7
    return total


def calibrate(ms: float) -> int:
    """Loop iterations that take about ``ms`` milliseconds of CPU here (the fastest of 5 tries;
    CPU time, so other programs on the machine do not shrink the work)."""
    probe = 200_000
    best = min(_timed(probe) for _ in range(5))
    return max(1, round(probe * ms / 1000 / best))


def _timed(iterations: int) -> float:
    started = time.thread_time()
    _spin(iterations)
    return time.thread_time() - started


async def _workers(client: Client, count: int) -> bool:
    return len({w["client"] for w in await client.workers()}) >= count


def _cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of ``pid`` and its descendants (the worker processes)."""
    total = 0.0
    root = psutil.Process(pid)
    for proc in [root, *root.children(recursive=True)]:
        with contextlib.suppress(psutil.NoSuchProcess):
            times = proc.cpu_times()
            total += times.user + times.system
    return total


async def one_run(url: str, workdir: Path, processes: int, concurrency: int, jobs: int,
                  iterations: int, queue_name: str) -> tuple[float, float]:
    """Seconds from enqueueing ``jobs`` jobs to the last completion, with ``processes``
    worker processes already connected, and the CPU seconds the worker processes used then."""
    worker = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "jobwire", "worker", "bench_cpu:handlers", "--queue", queue_name,
        "--processes", str(processes), "--concurrency", str(concurrency), "--url", url,
        "--grace", "5", "--log-level", "warning", cwd=workdir, stdout=subprocess.DEVNULL,
    )
    try:
        async with Client(url) as client:
            async with asyncio.timeout(60):
                while True:  # the workers connect first: their start-up is not timed
                    if await _workers(client, processes):
                        break
                    await asyncio.sleep(0.05)
            queue = client.queue(queue_name)
            cpu_before = _cpu_seconds(worker.pid)
            started = time.perf_counter()
            handles = await queue.add_bulk([("cpu", iterations)] * jobs)
            for handle in handles:
                await handle.wait(timeout=600)
            took = time.perf_counter() - started
            return took, _cpu_seconds(worker.pid) - cpu_before
    finally:
        worker.terminate()
        if await worker.wait() != 0:
            raise RuntimeError(f"jobwire worker --processes {processes} exited {worker.returncode}")


async def bench(args: argparse.Namespace, url: str,
                workdir: Path) -> dict[int, list[tuple[float, float]]]:
    iterations = calibrate(args.ms)
    print(f"handler: {iterations} loop iterations (~{args.ms:g} ms on one core); "
          f"{args.jobs} jobs per run, --concurrency {args.concurrency}")
    runs: dict[int, list[tuple[float, float]]] = {p: [] for p in args.compare}
    for round_no in range(args.rounds):
        for processes in args.compare:
            took, cpu = await one_run(url, workdir, processes, args.concurrency, args.jobs,
                                      iterations, f"cpu-{round_no}-{processes}")
            runs[processes].append((took, cpu))
            print(f"round {round_no + 1}: --processes {processes}: {took:.2f} s "
                  f"({args.jobs / took:.0f} jobs/s; workers used {cpu / took:.2f} cores, "
                  f"{cpu / args.jobs * 1000:.1f} ms CPU per job)")
    return runs


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=200, help="jobs per run")
    parser.add_argument("--ms", type=float, default=20.0, help="CPU per job on one core, ms")
    parser.add_argument("--rounds", type=int, default=3, help="runs per process count")
    parser.add_argument("--concurrency", type=int, default=10, help="--concurrency per process")
    parser.add_argument("--compare", type=int, nargs="+", default=[1, 2],
                        help="process counts to compare (the first is the baseline)")
    parser.add_argument("--json", metavar="PATH", help="also write the figures as JSON")
    args = parser.parse_args(argv)
    load_before = os.getloadavg()[0]
    with BrokerProcess(sync="off") as broker, tempfile.TemporaryDirectory() as tmp:
        broker.start()
        workdir = Path(tmp)
        (workdir / "bench_cpu.py").write_text(HANDLERS)
        runs = asyncio.run(bench(args, f"jobwire://{broker.address}", workdir))
    load_after = os.getloadavg()[0]
    base = statistics.median(took for took, _ in runs[args.compare[0]])
    print(f"load average (1 min): {load_before:.2f} before, {load_after:.2f} after; "
          f"{os.cpu_count()} CPUs")
    print(f"{'processes':>9} {'median s':>9} {'jobs/s':>8} {'speed-up':>9} {'cores':>6}")
    summary = {}
    for processes, measured in runs.items():
        median = statistics.median(took for took, _ in measured)
        cores = statistics.median(cpu / took for took, cpu in measured)
        summary[processes] = {"seconds": [took for took, _ in measured],
                              "cpu_seconds": [cpu for _, cpu in measured],
                              "median_s": median, "speedup": base / median, "cores": cores}
        print(f"{processes:>9} {median:>9.2f} {args.jobs / median:>8.0f} "
              f"{base / median:>8.2f}x {cores:>6.2f}")
    if args.json:
        Path(args.json).write_text(json.dumps({
            "jobs": args.jobs, "ms": args.ms, "concurrency": args.concurrency,
            "loadavg_1m": [load_before, load_after], "cpus": os.cpu_count(),
            "runs": summary}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
