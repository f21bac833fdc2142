"""Run one set of load processes: spawn, start together, watch progress, stop, collect results.

``run_load`` is the only place that owns load processes. It spawns one process per ``LoadSpec``
(``multiprocessing`` spawn context, so each child is a fresh interpreter with its own core time),
waits until every child is connected, starts the broker's resource sampler, sets ``go`` and then
polls the shared counters every 100 ms: the progress bar, a time series of (seconds, enqueued,
completed), and the ``done`` predicate. When ``done`` holds (or every child has reported) the
sampler stops, ``stop`` is set, and every child's result dict is collected. A child that dies or
reports an error fails the run with its traceback; whatever happens, no child outlives the call.
"""

from __future__ import annotations

import multiprocessing
import queue
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
)

from bench.broker_proc import ResourceSampler, ResourceUsage
from bench.loadgen import LoadSpec, Shared, child_main

READY_TIMEOUT_S = 120.0
COLLECT_TIMEOUT_S = 120.0
POLL_S = 0.1

DonePredicate = Callable[[int, int, float], bool]
"""``done(enqueued, completed, elapsed_s)``: whether the measured phase is over."""


class BenchError(RuntimeError):
    """A bench run could not complete (a load process failed, or a timeout)."""


@dataclass(slots=True)
class LoadRun:
    """What one ``run_load`` produced."""

    results: list[dict[str, Any]]
    go_ns: int
    end_ns: int
    usage: ResourceUsage | None
    samples: list[tuple[float, int, int]] = field(default_factory=list)
    """(seconds since go, jobs enqueued, jobs completed), every 100 ms."""

    def of_role(self, role: str) -> list[dict[str, Any]]:
        return [r for r in self.results if r["role"] == role]

    def count(self, role: str) -> int:
        return sum(int(r["count"]) for r in self.of_role(role))

    def last_ns(self, role: str) -> int:
        return max((int(r["last_ns"]) for r in self.of_role(role)), default=self.end_ns)

    def cpu_s(self) -> float | None:
        """CPU seconds the load processes used in the measured phase (``None``: there were none)."""
        if not self.results:
            return None
        return round(sum(float(r["cpu_s"]) for r in self.results), 3)


class LoadProgress:
    """A rich progress bar on stderr (disabled when ``quiet``), driven by ``run_load``.

    Args:
        label: what is running.
        total: the bar's total, in ``unit``.
        unit: ``enqueued``, ``completed`` or ``seconds``: which figure fills the bar.
        quiet: draw nothing.
    """

    def __init__(self, label: str, total: float, unit: str, *, quiet: bool = False) -> None:
        self.unit = unit
        self.progress = Progress(
            TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
            TextColumn("{task.fields[rate]}"), TimeElapsedColumn(),
            console=Console(stderr=True), disable=quiet, transient=True,
        )
        self.task = self.progress.add_task(label, total=total, rate="")
        self._last = (0.0, 0)

    def update(self, enqueued: int, completed: int, elapsed: float) -> None:
        value = {"enqueued": enqueued, "completed": completed}.get(self.unit, elapsed)
        figure = completed if self.unit == "seconds" or self.unit == "completed" else enqueued
        last_t, last_n = self._last
        rate = ""
        if elapsed - last_t >= 0.5:
            rate = f"{(figure - last_n) / (elapsed - last_t):>10,.0f} jobs/s"
            self._last = (elapsed, figure)
            self.progress.update(self.task, completed=value, rate=rate)
        else:
            self.progress.update(self.task, completed=value)

    def __enter__(self) -> LoadProgress:
        self.progress.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.progress.stop()


def _collect(shared: Shared, results: dict[int, dict[str, Any]], timeout: float) -> None:
    """Move every result waiting on the queue into ``results`` (waiting up to ``timeout``)."""
    try:
        item = shared.results.get(timeout=timeout)
    except queue.Empty:
        return
    while True:
        results[int(item["index"])] = item
        error = item.get("error")
        if error:
            raise BenchError(f"{item['role']} process {item['index']} failed:\n{error}")
        try:
            item = shared.results.get_nowait()
        except queue.Empty:
            return


def _check_alive(procs: Sequence[Any], results: dict[int, dict[str, Any]]) -> None:
    for index, proc in enumerate(procs):
        if index not in results and not proc.is_alive() and proc.exitcode not in (None, 0):
            raise BenchError(f"load process {proc.name} died (exit code {proc.exitcode})")


def run_load(
    specs: Sequence[LoadSpec],
    *,
    done: DonePredicate,
    progress: LoadProgress,
    sampler: ResourceSampler | None = None,
    timeout: float = 900.0,
) -> LoadRun:
    """Run load processes until ``done`` (or all of them report), then stop and collect them.

    Args:
        specs: one per process; ``spec.index`` must be its position in ``specs``.
        done: the end of the measured phase, from the shared counters.
        progress: the progress bar to drive.
        sampler: the broker's resource sampler, running during the measured phase only.
        timeout: seconds the measured phase may last.

    Returns:
        Every process's result dict, the start instant, the end instant (when ``done`` held),
        the broker's resource usage and the counter time series.

    Raises:
        BenchError: a process failed or died, or a phase timed out.
    """
    ctx = multiprocessing.get_context("spawn")
    count = len(specs)
    shared = Shared(
        counters=ctx.Array("q", count, lock=False), ready=ctx.Value("i", 0), go=ctx.Event(),
        go_ns=ctx.Value("q", 0, lock=False), stop=ctx.Event(), results=ctx.Queue(),
    )
    producers = [s.index for s in specs if s.role == "producer"]
    workers = [s.index for s in specs if s.role == "worker"]
    procs = [
        ctx.Process(target=child_main, args=(spec, shared), name=f"bench-{spec.role}-{spec.index}",
                    daemon=True)
        for spec in specs
    ]
    results: dict[int, dict[str, Any]] = {}
    sampling = False
    try:
        for proc in procs:
            proc.start()
        deadline = time.monotonic() + READY_TIMEOUT_S
        while shared.ready.value < count:
            _collect(shared, results, POLL_S)
            _check_alive(procs, results)
            if time.monotonic() > deadline:
                raise BenchError(f"load processes not ready after {READY_TIMEOUT_S} s")
        if sampler is not None:
            sampler.start()
            sampling = True
        go_ns = time.monotonic_ns()
        shared.go_ns.value = go_ns
        shared.go.set()
        samples: list[tuple[float, int, int]] = []
        with progress:
            while True:
                _collect(shared, results, POLL_S)
                counters = shared.counters[:]
                enqueued = sum(counters[i] for i in producers)
                completed = sum(counters[i] for i in workers)
                elapsed = (time.monotonic_ns() - go_ns) / 1e9
                samples.append((round(elapsed, 3), enqueued, completed))
                progress.update(enqueued, completed, elapsed)
                if done(enqueued, completed, elapsed) or len(results) == count:
                    break
                _check_alive(procs, results)
                if elapsed > timeout:
                    raise BenchError(f"measured phase still running after {timeout} s")
        end_ns = time.monotonic_ns()
        usage = sampler.stop() if sampler is not None else None
        sampling = False
        shared.stop.set()
        deadline = time.monotonic() + COLLECT_TIMEOUT_S
        while len(results) < count:
            _collect(shared, results, POLL_S)
            _check_alive(procs, results)
            if time.monotonic() > deadline:
                raise BenchError("load processes did not finish after the stop signal")
        for proc in procs:
            proc.join(10)
        ordered = [results[i] for i in range(count)]
        return LoadRun(ordered, go_ns, end_ns, usage, samples)
    finally:
        if sampling and sampler is not None:
            sampler.stop()
        shared.stop.set()
        for proc in procs:
            if proc.is_alive():
                proc.terminate()
                proc.join(5)
