"""Head-of-line stalls: a small request's latency while another connection pipelines admin
requests that the broker answers on its one event loop.

The bench's own broker (``--sync off``: setup speed, not durability, is beside the point) gets
three queues: ``failed`` with ``--failed`` failed jobs, ``waiting`` with ``--waiting`` waiting
jobs, and ``priorities`` with ``--priorities`` waiting jobs at as many distinct priorities. Then,
for each load in turn, a separate process keeps ``--window`` requests in flight on its own
connection for ``--seconds``, while this process sends ``ping`` one at a time on another
connection and records each round trip:

* ``idle``: no other load (the floor);
* ``list_failed``: ``failed(limit=1)`` of ``failed``;
* ``clean``: ``clean("waiting", limit=1)`` of ``waiting`` (each removes the oldest job);
* ``stats``: ``stats("priorities")``.

A request that costs O(queue) stalls every connection behind it; one that costs O(limit) or
O(1) does not. Results: pings answered, ping p50 / p99 / max in ms (a stall shows in the max and
in fewer pings: one ping waits through it), and the loaded requests answered per second.

Usage: ``python -m bench.bench_stall [--failed N] [--waiting N] [--priorities N] [--seconds S]``
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import multiprocessing
import time
from typing import Any

import structlog

from bench.broker_proc import BrokerProcess
from client import Client, Worker

LOADS = ("idle", "list_failed", "clean", "stats")
_BULK = 10_000


async def _bulk(client: Client, queue: str, count: int, *, priorities: bool = False) -> None:
    target = client.queue(queue)
    for start in range(0, count, _BULK):
        stop = min(count, start + _BULK)
        if priorities:
            await target.add_bulk(("job", None, {"priority": i}) for i in range(start, stop))
        else:
            await target.add_bulk(("job", None, {"attempts": 1}) for _ in range(start, stop))


async def _fail_all(url: str, count: int) -> None:
    async def boom(job: Any) -> None:
        raise RuntimeError("bench: failed on purpose")

    worker = Worker(url, "failed", {"job": boom}, concurrency=200, handle_signals=False)
    running = asyncio.create_task(worker.run())
    async with Client(url) as client:
        failed = client.queue("failed")
        while True:  # polls: the broker has no "queue drained" event to wait for
            if (await failed.stats()).failed >= count:
                break
            await asyncio.sleep(0.2)
    worker.stop()
    await running


async def _setup(url: str, failed: int, waiting: int, priorities: int) -> None:
    async with Client(url) as client:
        await _bulk(client, "failed", failed)
        await _bulk(client, "waiting", waiting)
        await _bulk(client, "priorities", priorities, priorities=True)
    await _fail_all(url, failed)


async def _pipeline(
    url: str, load: str, window: int, start_at: float, stop_at: float
) -> float:
    """From ``start_at``, keep ``window`` requests of ``load`` in flight until ``stop_at``;
    return how many were answered per second."""
    async with Client(url, request_timeout=3600.0) as client:
        failed, waiting = client.queue("failed"), client.queue("waiting")
        priorities = client.queue("priorities")

        async def one() -> Any:
            if load == "list_failed":
                return await failed.failed(limit=1)
            if load == "clean":
                return await waiting.clean("waiting", limit=1)
            return await priorities.stats()

        await asyncio.sleep(max(0.0, start_at - time.time()))
        done = 0
        while time.time() < stop_at:
            await asyncio.gather(*(one() for _ in range(window)))
            done += window
        return done / (time.time() - start_at)


def _pipeline_process(
    url: str, load: str, window: int, start_at: float, stop_at: float, out: Any
) -> None:
    out.put(asyncio.run(_pipeline(url, load, window, start_at, stop_at)))


async def _pings(url: str, start_at: float, stop_at: float) -> list[float]:
    """Round trips of ``ping``, one at a time, from ``start_at`` to ``stop_at`` (connected
    before ``start_at``: a stalled broker could not even take the handshake)."""
    samples: list[float] = []
    async with Client(url, request_timeout=3600.0) as client:
        await asyncio.sleep(max(0.0, start_at - time.time()))
        while time.time() < stop_at:
            started = time.perf_counter()
            await client.ping()
            samples.append((time.perf_counter() - started) * 1000)
    return samples


def _percentile(sorted_ms: list[float], fraction: float) -> float:
    return sorted_ms[min(len(sorted_ms) - 1, int(fraction * len(sorted_ms)))]


def measure(url: str, load: str, window: int, seconds: float) -> dict[str, float]:
    """Ping latency while ``load`` is pipelined (from its own process) for ``seconds``."""
    start_at = time.time() + 3.0  # both connections are up by then (the loader is spawned)
    stop_at = start_at + seconds
    context = multiprocessing.get_context("spawn")
    out: Any = context.Queue()
    loader = None
    if load != "idle":
        loader = context.Process(
            target=_pipeline_process, args=(url, load, window, start_at, stop_at, out)
        )
        loader.start()
    pings = sorted(asyncio.run(_pings(url, start_at, stop_at)))
    loaded = 0.0
    if loader is not None:
        loaded = out.get(timeout=3600)
        loader.join()
    return {
        "pings": len(pings),
        "p50_ms": _percentile(pings, 0.50),
        "p99_ms": _percentile(pings, 0.99),
        "max_ms": pings[-1],
        "loaded_per_s": loaded,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--failed", type=int, default=10_000, help="failed jobs in 'failed'")
    parser.add_argument("--waiting", type=int, default=200_000, help="jobs in 'waiting'")
    parser.add_argument("--priorities", type=int, default=100_000,
                        help="jobs (one per priority) in 'priorities'")
    parser.add_argument("--window", type=int, default=50, help="loaded requests in flight")
    parser.add_argument("--seconds", type=float, default=5.0, help="duration of each load")
    parser.add_argument("--loads", nargs="+", choices=LOADS, default=list(LOADS))
    args = parser.parse_args(argv)
    # The setup's worker would log its start and stop at info.
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    with BrokerProcess(sync="off") as broker:
        broker.start()
        url = f"jobwire://{broker.address}"
        started = time.perf_counter()
        asyncio.run(_setup(url, args.failed, args.waiting, args.priorities))
        print(f"setup: {time.perf_counter() - started:.1f} s "
              f"({args.failed} failed, {args.waiting} waiting, {args.priorities} priorities)")
        print(f"{'load':<12} {'pings':>6} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8} "
              f"{'loaded/s':>9}")
        for load in args.loads:
            row = measure(url, load, args.window, args.seconds)
            print(f"{load:<12} {row['pings']:>6} {row['p50_ms']:>8.2f} {row['p99_ms']:>8.2f} "
                  f"{row['max_ms']:>8.2f} {row['loaded_per_s']:>9.0f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
