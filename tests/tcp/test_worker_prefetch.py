"""A worker reserves jobs ahead of free runners (``prefetch``), against a real broker.

Handlers block on an event, so what the worker holds can be read while nothing moves: the
broker's count of active jobs is what the worker reserved, ``running`` what it started.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from client import Client, JobContext, Worker
from tests.conftest import RunningBroker
from tests.tools.clienttools import running, until

StartBroker = Callable[..., Awaitable[RunningBroker]]


async def started(start_broker: StartBroker) -> str:
    """A fresh broker's URL."""
    broker = await start_broker()
    return f"jobwire://{broker.host}:{broker.port}"


def blocking(release: asyncio.Event) -> Callable[[JobContext], Awaitable[None]]:
    """A handler that waits for ``release``."""

    async def blocked(job: JobContext) -> None:
        await release.wait()

    return blocked


async def active(client: Client, queue: str) -> int:
    return (await client.queue(queue).stats()).active


async def test_a_fixed_prefetch_holds_that_many_more_than_run(
    start_broker: StartBroker,
) -> None:
    url, release = await started(start_broker), asyncio.Event()
    blocked = blocking(release)

    async with Client(url) as client:
        await client.queue("pf").add_bulk([("w", i) for i in range(10)])
        worker = Worker(url, "pf", blocked, concurrency=2, prefetch=3, handle_signals=False,
                        poll_wait=0.2)
        async with running(worker):
            await until(lambda: worker.statistics().held == 5)
            await until(lambda: worker.statistics().running == 2)
            assert await active(client, "pf") == 5
            await asyncio.sleep(0.3)  # a few more reserve chances: it asks for no more
            assert worker.statistics().held == 5 and await active(client, "pf") == 5
            release.set()
            await until(lambda: worker.statistics().completed == 10)
        counts = (await client.queue("pf").stats())
        assert counts.completed == 10 and counts.active == 0 and counts.waiting == 0


async def test_no_prefetch_holds_only_what_runs(
    start_broker: StartBroker,
) -> None:
    url, release = await started(start_broker), asyncio.Event()
    blocked = blocking(release)

    async with Client(url) as client:
        # Automatic: no handler has finished yet, so nothing is reserved ahead either.
        for setting, name in ((0, "off"), (None, "auto")):
            await client.queue(name).add_bulk([("w", i) for i in range(8)])
            worker = Worker(url, name, blocked, concurrency=3, prefetch=setting,
                            handle_signals=False, poll_wait=0.2)
            async with running(worker):
                await until(lambda w=worker: w.statistics().running == 3)  # type: ignore[misc]
                await asyncio.sleep(0.3)  # a few more reserve chances: it asks for no more
                assert worker.statistics().held == 3 and await active(client, name) == 3
                assert worker.prefetch.allowance == 0
                release.set()
                await until(lambda w=worker: w.statistics().completed == 8)  # type: ignore[misc]
            release.clear()


async def test_fast_handlers_earn_the_whole_allowance_and_slow_ones_none(
    start_broker: StartBroker,
) -> None:
    url = await started(start_broker)

    async def instant(job: JobContext) -> None:
        return None

    async def slow(job: JobContext) -> None:
        await asyncio.sleep(0.1)

    async with Client(url) as client:
        await client.queue("fast").add_bulk([("w", i) for i in range(300)])
        await client.queue("slow").add_bulk([("w", i) for i in range(12)])
        fast_worker = Worker(url, "fast", instant, concurrency=10, handle_signals=False)
        async with running(fast_worker):
            await until(lambda: fast_worker.statistics().completed == 300)
        assert fast_worker.prefetch.allowance == 10
        peak = 0
        slow_worker = Worker(url, "slow", slow, concurrency=4, handle_signals=False)

        async def watch() -> None:
            nonlocal peak
            while True:
                stats = slow_worker.statistics()
                peak = max(peak, stats.held - stats.settling)
                await asyncio.sleep(0.005)

        async with running(slow_worker):
            watcher = asyncio.create_task(watch())
            await until(lambda: slow_worker.statistics().completed == 12)
            watcher.cancel()
        # 100 ms a job, 4 runners: one job starts every 25 ms, none within the 2 ms horizon.
        assert slow_worker.prefetch.allowance == 0
        assert peak <= 4


async def test_prefetched_jobs_are_handed_back_on_stop_without_an_attempt(
    start_broker: StartBroker,
) -> None:
    url, release = await started(start_broker), asyncio.Event()
    blocked = blocking(release)

    async with Client(url) as client:
        queue = client.queue("back")
        jobs = await queue.add_bulk([("w", i) for i in range(4)])
        worker = Worker(url, "back", blocked, concurrency=1, prefetch=3, grace=0.1,
                        handle_signals=False, poll_wait=0.2)
        async with running(worker):
            await until(lambda: worker.statistics().held == 4)
        assert worker.statistics().handed_back == 4
        counts = await queue.stats()
        assert counts.waiting == 4 and counts.active == 0
        for job in jobs:
            await job.refresh()
            assert job.state == "waiting" and job.attempts == 0
