"""Load processes: producers and workers that run in their own (spawned) processes.

Theory of operation
-------------------
The parent (``bench.runner``) starts one process per producer and per worker with
``multiprocessing`` in *spawn* mode and hands each a ``LoadSpec`` and the ``Shared`` handles.
Each child connects to the broker, says it is ready (``Shared.ready``), blocks until the parent
sets ``Shared.go``, reads the start instant ``Shared.go_ns`` and runs:

* a **producer** enqueues through the public client API (``Queue.add_bulk`` with batches of
  ``batch`` jobs, or ``Queue.add`` when ``batch`` is 1), with ``in_flight`` requests outstanding,
  either flat out or at a steady ``rate`` (open loop: sends are scheduled by the clock, not by
  the previous reply, so a slow broker cannot hide its latency). ``max_backlog`` pauses a flat-out
  producer while more than that many jobs wait unfinished (enqueued minus completed).
* a **worker** runs ``client.worker.Worker`` with an ``async`` handler that does nothing, sleeps
  or spins for ``work_ms``.

Every child publishes its running count (jobs enqueued, or completions acknowledged by the
broker) in its own slot of ``Shared.counters`` (one writer per slot, so no lock) and, when the
parent sets ``Shared.stop`` (or its quota is done), sends one result dict on ``Shared.results``.

Latencies are HDR histograms (``bench.hdr``), sent encoded. Clock: ``time.monotonic_ns`` is
CLOCK_MONOTONIC, one clock for every process on the machine, so a producer stamps the enqueue
call's instant into the first 8 bytes of the payload (when ``stamp``) and a worker subtracts it
at handler start and at the acknowledged completion.

Histograms kept (microseconds): ``enqueue_ack`` (producer: call → durable acknowledgement, per
request), ``start`` (enqueue call → handler start), ``complete`` (enqueue call → completion
acknowledged), ``ack`` (handler start → completion acknowledged). With ``series``, ``start``
and ``complete`` are also kept per whole second since ``go``, with per-second completion counts.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import struct
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

from bench.hdr import Recorder

STAMP: Final = struct.Struct("<q")
JOB_NAME: Final = "bench"
STOP_POLL_S: Final = 0.01


@dataclass(frozen=True, slots=True)
class LoadSpec:
    """What one load process does (picklable: it crosses into a spawned process)."""

    role: str
    """``producer`` or ``worker``."""
    index: int
    """This process's slot in ``Shared.counters``."""
    address: str
    queue: str
    payload_bytes: int = 100
    stamp: bool = False
    series: bool = False
    # producer
    jobs: int = 0
    """How many jobs to enqueue; 0 means until ``stop``."""
    batch: int = 1
    in_flight: int = 1
    batch_adds: bool = True
    """``Client(batch_adds=...)``: concurrent ``Queue.add`` calls share enqueue requests."""
    loop: str = "uvloop"
    """The process's event loop: ``uvloop``, or ``asyncio`` (plain ``asyncio.run``, as a user's
    script runs it)."""
    rate: float = 0.0
    """Jobs per second for this producer; 0 means flat out."""
    max_backlog: int = 0
    producer_slots: tuple[int, ...] = ()
    worker_slots: tuple[int, ...] = ()
    # worker
    concurrency: int = 1
    work: str = "none"
    """``none``, ``sleep`` or ``spin``."""
    work_ms: float = 0.0


@dataclass(slots=True)
class Shared:
    """Cross-process handles from one ``multiprocessing`` spawn context."""

    counters: Any
    """``Array('q')``: one running count per process, written only by that process."""
    ready: Any
    """``Value('i')``: processes connected and waiting for ``go``."""
    go: Any
    """``Event``: start now."""
    go_ns: Any
    """``Value('q')``: the ``monotonic_ns`` instant the parent set ``go``."""
    stop: Any
    """``Event``: finish (producers stop sending, workers shut down gracefully)."""
    results: Any
    """``Queue``: one result dict per process."""


def child_main(spec: LoadSpec, shared: Shared) -> None:
    """Entry point of a load process: run the spec, send one result dict (or the error)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides when children stop
    _quiet_logging()
    try:
        if spec.loop == "asyncio":
            result = asyncio.run(_run_child(spec, shared))
        else:
            import uvloop

            result = uvloop.run(_run_child(spec, shared))
    except BaseException:
        result = {"index": spec.index, "role": spec.role, "error": traceback.format_exc()}
    shared.results.put(result)


def _quiet_logging() -> None:
    import structlog

    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))


async def _run_child(spec: LoadSpec, shared: Shared) -> dict[str, Any]:
    if spec.role == "producer":
        return await Producer(spec, shared).run()
    if spec.role == "worker":
        return await WorkerLoad(spec, shared).run()
    raise ValueError(f"unknown role {spec.role!r}")


async def _wait_go(shared: Shared) -> int:
    """Report ready, block until ``go``; returns the start instant (monotonic ns)."""
    with shared.ready.get_lock():
        shared.ready.value += 1
    loop = asyncio.get_running_loop()
    # Waiting in a thread keeps the loop (and the open connection) responsive meanwhile.
    started = await loop.run_in_executor(None, shared.go.wait, 600.0)
    if not started:
        raise TimeoutError("no go signal from the bench within 600 s")
    go_ns: int = shared.go_ns.value
    return go_ns


class _StopFlag:
    """Mirrors ``Shared.stop`` into the event loop, polled every 10 ms by one owned task."""

    def __init__(self, shared: Shared, on_stop: Callable[[], None] | None = None) -> None:
        self._stopped = False
        self._shared = shared
        self._on_stop = on_stop
        self._task: asyncio.Task[None] | None = None

    def stopped(self) -> bool:
        """Whether the parent has asked this process to stop."""
        return self._stopped

    def start(self) -> None:
        self._task = asyncio.create_task(self._watch(), name="bench-stop-watch")

    async def _watch(self) -> None:
        # A multiprocessing Event cannot be awaited: poll it.
        while not self._shared.stop.is_set():  # noqa: ASYNC110
            await asyncio.sleep(STOP_POLL_S)
        self._stopped = True
        if self._on_stop is not None:
            self._on_stop()

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task


class Producer:
    """Enqueues jobs flat out or at a steady rate; see the module docstring."""

    def __init__(self, spec: LoadSpec, shared: Shared) -> None:
        self.spec = spec
        self.shared = shared
        self.sent = 0
        """Jobs claimed by a send (acknowledged or in flight)."""
        self.done = 0
        """Jobs acknowledged by the broker."""
        self.requests = 0
        self.hist = Recorder()
        self.last_ns = 0
        self.padding = b"x" * max(0, spec.payload_bytes - (STAMP.size if spec.stamp else 0))
        self.fixed_payload = b"x" * spec.payload_bytes

    def payload(self) -> bytes:
        if self.spec.stamp:
            return STAMP.pack(time.monotonic_ns()) + self.padding
        return self.fixed_payload

    def remaining(self) -> int:
        """Jobs still to claim (a large number when running until stopped)."""
        return self.spec.jobs - self.sent if self.spec.jobs else 1 << 62

    def backlog(self) -> int:
        counters = self.shared.counters
        enqueued = sum(counters[i] for i in self.spec.producer_slots)
        completed = sum(counters[i] for i in self.spec.worker_slots)
        return int(enqueued - completed)

    async def run(self) -> dict[str, Any]:
        from client.queue import Client

        async with Client(f"jobwire://{self.spec.address}", serializer="raw",
                          request_timeout=300.0, client_name="jobwire-bench",
                          batch_adds=self.spec.batch_adds) as client:
            await client.ping()
            queue = client.queue(self.spec.queue)
            go_ns = await _wait_go(self.shared)
            stop = _StopFlag(self.shared)
            stop.start()
            cpu_start = time.process_time()
            try:
                if self.spec.rate > 0:
                    await self._paced(queue, stop)
                else:
                    async with asyncio.TaskGroup() as group:
                        for _ in range(self.spec.in_flight):
                            group.create_task(self._flat_out(queue, stop))
            finally:
                await stop.close()
            cpu_s = time.process_time() - cpu_start
        return {
            "index": self.spec.index, "role": "producer", "count": self.done,
            "requests": self.requests, "go_ns": go_ns, "last_ns": self.last_ns, "cpu_s": cpu_s,
            "hist": {"enqueue_ack": self.hist.encode()}, "series": {}, "error": None,
        }

    async def _send(self, queue: Any, count: int) -> None:
        started = time.monotonic_ns()
        if count == 1 and self.spec.batch == 1:
            await queue.add(JOB_NAME, self.payload())
        else:
            payload = self.payload()
            await queue.add_bulk([(JOB_NAME, payload)] * count)
        now = time.monotonic_ns()
        self.hist.record_ns(now - started)
        self.requests += 1
        self.done += count
        self.last_ns = now
        self.shared.counters[self.spec.index] = self.done

    async def _flat_out(self, queue: Any, stop: _StopFlag) -> None:
        max_backlog = self.spec.max_backlog
        while not stop.stopped():
            count = min(self.spec.batch, self.remaining())
            if count <= 0:
                return
            if max_backlog:
                # The backlog lives in other processes' counters: poll it.
                while self.backlog() > max_backlog and not stop.stopped():  # noqa: ASYNC110
                    await asyncio.sleep(0.001)
                if stop.stopped():
                    return
            self.sent += count
            await self._send(queue, count)

    async def _paced(self, queue: Any, stop: _StopFlag) -> None:
        """Open loop: send ``batch`` jobs every ``batch / rate`` seconds, whatever the replies."""
        interval = self.spec.batch / self.spec.rate
        limit = asyncio.Semaphore(max(self.spec.in_flight, 10_000))
        tasks: set[asyncio.Task[None]] = set()
        first = time.monotonic()
        tick = 0
        try:
            while not stop.stopped() and self.remaining() > 0:
                delay = first + tick * interval - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                tick += 1
                count = min(self.spec.batch, self.remaining())
                self.sent += count
                await limit.acquire()
                task = asyncio.create_task(self._send(queue, count))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
                task.add_done_callback(lambda _task: limit.release())
            if tasks:
                await asyncio.gather(*tasks)
        except BaseException:
            for task in tasks:
                task.cancel()
            raise


class WorkerLoad:
    """One ``client.worker.Worker`` with a measuring handler; see the module docstring."""

    def __init__(self, spec: LoadSpec, shared: Shared) -> None:
        self.spec = spec
        self.shared = shared
        self.completed = 0
        self.last_ns = 0
        self.go_ns = 0
        self.started: dict[str, int] = {}
        self.hist = {"start": Recorder(), "complete": Recorder(), "ack": Recorder()}
        self.per_second: dict[int, dict[str, Any]] = {}
        self.counts: dict[int, int] = {}
        self.work_s = spec.work_ms / 1000.0
        self.work_ns = int(spec.work_ms * 1_000_000)

    def _second(self, now: int) -> dict[str, Any]:
        second = (now - self.go_ns) // 1_000_000_000
        bucket = self.per_second.get(second)
        if bucket is None:
            bucket = self.per_second[second] = {"start": Recorder(max_pending=1024),
                                                "complete": Recorder(max_pending=1024)}
        return bucket

    async def handler(self, ctx: Any) -> None:
        now = time.monotonic_ns()
        self.started[ctx.id] = now
        if self.spec.stamp:
            elapsed = now - STAMP.unpack_from(ctx.payload)[0]
            self.hist["start"].record_ns(elapsed)
            if self.spec.series:
                self._second(now)["start"].record_ns(elapsed)
        if self.spec.work == "sleep":
            await asyncio.sleep(self.work_s)
        elif self.spec.work == "spin":
            until = now + self.work_ns
            while time.monotonic_ns() < until:
                pass

    def on_completed(self, ctx: Any, result: Any) -> None:
        now = time.monotonic_ns()
        started = self.started.pop(ctx.id, None)
        if started is not None:
            self.hist["ack"].record_ns(now - started)
        if self.spec.stamp:
            elapsed = now - STAMP.unpack_from(ctx.payload)[0]
            self.hist["complete"].record_ns(elapsed)
            if self.spec.series:
                self._second(now)["complete"].record_ns(elapsed)
        if self.spec.series:
            second = (now - self.go_ns) // 1_000_000_000
            self.counts[second] = self.counts.get(second, 0) + 1
        self.completed += 1
        self.last_ns = now
        self.shared.counters[self.spec.index] = self.completed

    async def run(self) -> dict[str, Any]:
        from client.worker import Worker

        worker = Worker(
            f"jobwire://{self.spec.address}", self.spec.queue, self.handler,
            concurrency=self.spec.concurrency, serializer="raw", handle_signals=False,
            poll_wait=1.0, grace=30.0, request_timeout=300.0, client_name="jobwire-bench",
        )
        worker.on_completed(self.on_completed)
        await worker.connection.connect()
        self.go_ns = await _wait_go(self.shared)
        stop = _StopFlag(self.shared, worker.stop)
        stop.start()
        cpu_start = time.process_time()
        try:
            await worker.run()
        finally:
            await stop.close()
        cpu_s = time.process_time() - cpu_start
        stats = worker.statistics()
        return {
            "index": self.spec.index, "role": "worker", "count": self.completed,
            "go_ns": self.go_ns, "last_ns": self.last_ns, "cpu_s": cpu_s,
            "hist": {name: h.encode() for name, h in self.hist.items()},
            "series": {
                "completed": dict(self.counts),
                "start": {s: b["start"].encode() for s, b in self.per_second.items()},
                "complete": {s: b["complete"].encode() for s, b in self.per_second.items()},
            },
            "worker": {"failed": stats.failed, "refused": stats.refused,
                       "reserve_requests": stats.reserve_requests,
                       "ack_requests": stats.ack_requests},
            "error": None,
        }
