"""The worker holds a job until the broker answered its outcome, and bounds how many it holds.

Against a real in-process broker whose journal commits are slowed (each transaction commits,
then the commit loop sleeps before it answers): acks wait for that commit, so without the bound
a worker with instant handlers would reserve and finish hundreds of jobs while their acks wait.
Waits only bound how long a test may hang; nothing asserts speed.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from broker.journal import Journal
from client import Client, JobContext, Worker
from tests.conftest import RunningBroker
from tests.tools.clienttools import running, until
from tests.tools.logtools import captured_logs


def slow_commits(broker: RunningBroker, seconds: float) -> None:
    """Make every journal transaction of ``broker`` take ``seconds`` longer (after it committed,
    so what is written is exactly what the committer asked for)."""
    assert broker.server is not None
    journal: Journal = broker.server.journal
    write = journal.write

    async def slow_write(changes: Any, **kwargs: Any) -> None:
        await write(changes, **kwargs)
        await asyncio.sleep(seconds)

    journal.write = slow_write  # type: ignore[method-assign]


def make_worker(url: str, queue: str, handler: Any, **kwargs: Any) -> Worker:
    kwargs.setdefault("handle_signals", False)
    kwargs.setdefault("poll_wait", 0.5)
    return Worker(url, queue, handler, **kwargs)


async def test_unacknowledged_jobs_are_bounded_and_none_is_redelivered(
    start_broker: Callable[..., Awaitable[RunningBroker]],
) -> None:
    broker = await start_broker()
    url = f"jobwire://{broker.host}:{broker.port}"
    total = 400
    async with Client(url) as client:
        await client.queue("burst").add_bulk([("w", i) for i in range(total)])
    slow_commits(broker, 0.05)

    runs: Counter[str] = Counter()
    started = answered = peak = 0

    async def instant(job: JobContext) -> None:
        nonlocal started, peak
        runs[job.id] += 1
        started += 1
        peak = max(peak, started - answered)

    def on_completed(job: JobContext, result: Any) -> None:
        nonlocal answered
        answered += 1

    # Leases far shorter than a burst's acks take to commit: extended while the acks wait.
    worker = make_worker(url, "burst", instant, concurrency=5, lease=0.5)
    worker.on_completed(on_completed)
    assert worker.max_held == 40
    held_peak = unfinished_peak = 0

    async def watch() -> None:
        nonlocal held_peak, unfinished_peak
        while True:
            stats = worker.statistics()
            held_peak = max(held_peak, stats.held)
            unfinished_peak = max(unfinished_peak, stats.held - stats.settling)
            await asyncio.sleep(0.005)

    async with running(worker):
        watcher = asyncio.create_task(watch())
        try:
            await until(lambda: worker.statistics().completed == total, limit=120)
        finally:
            watcher.cancel()
            await asyncio.gather(watcher, return_exceptions=True)
    stats = worker.statistics()
    # Handler started but outcome not yet answered: never more than the worker may hold.
    assert 0 < peak <= worker.max_held
    assert 0 < held_peak <= worker.max_held
    # Without an outcome yet: at most the runners plus the jobs reserved ahead of them.
    assert unfinished_peak <= worker.concurrency + worker.prefetch.cap
    assert stats.refused == 0 and stats.unacknowledged == 0
    assert len(runs) == total and set(runs.values()) == {1}, "a job was redelivered"
    assert stats.held == 0 and stats.settling == 0


async def test_a_finished_job_stays_held_until_its_ack_is_answered(
    start_broker: Callable[..., Awaitable[RunningBroker]],
) -> None:
    broker = await start_broker()
    url = f"jobwire://{broker.host}:{broker.port}"
    async with Client(url) as client:
        job = await client.queue("slow-ack").add("w", 1)
        slow_commits(broker, 1.0)
        done = asyncio.Event()

        async def instant(ctx: JobContext) -> str:
            done.set()
            return "ok"

        # The lease (0.2 s) is due for extension while the ack waits (1 s): the broker refuses
        # it (the ack already ended the lease), which is expected, not a lost lease.
        worker = make_worker(url, "slow-ack", instant, concurrency=2, max_held=2, lease=0.2)
        with captured_logs("jobwire.worker") as logs:
            async with running(worker):
                await asyncio.wait_for(done.wait(), 30)
                await until(lambda: worker.statistics().settling == 1)
                # The handler returned, the ack waits for its commit: the job is still held.
                stats = worker.statistics()
                assert stats.held == 1 and stats.running == 0 and stats.completed == 0
                await until(lambda: worker.statistics().completed == 1, limit=30)
                assert worker.statistics().held == 0
        assert await job.wait(timeout=15) == "ok"
    assert worker.statistics().refused == 0
    assert not [r for r in logs if "lease lost" in r.getMessage()]


async def test_max_held_below_concurrency_is_refused() -> None:
    with pytest.raises(ValueError, match="max_held"):
        Worker("jobwire://127.0.0.1:1", "q", lambda job: None, concurrency=4, max_held=3)


async def test_the_last_free_slot_is_filled_while_long_jobs_run(
    start_broker: Callable[..., Awaitable[RunningBroker]],
) -> None:
    broker = await start_broker()
    url = f"jobwire://{broker.host}:{broker.port}"
    release = asyncio.Event()
    running_now = 0

    async def long(job: JobContext) -> None:
        nonlocal running_now
        running_now += 1
        if job.data != "last":
            await release.wait()

    async with Client(url) as client:
        q = client.queue("long")
        await q.add_bulk([("w", i) for i in range(7)])
        worker = make_worker(url, "long", long, concurrency=8)
        async with running(worker):
            await until(lambda: running_now == 7)
            # One slot of eight is free: small, but slots (not unanswered acks) bind, so it
            # is reserved at once rather than after a quarter of the slots free up.
            last = await q.add("w", "last")
            assert await last.wait(timeout=15) is None
            await until(lambda: worker.statistics().completed == 1)
            assert running_now == 8
            release.set()
            await until(lambda: worker.statistics().completed == 8)
