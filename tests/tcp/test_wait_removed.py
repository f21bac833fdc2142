"""A waiting producer gets the result of a job removed as it completed (issue 12, item 3).

With ``remove_on_complete=True`` the job is deleted the moment its ack is applied; a parked
``wait`` used to be answered ``NOT_FOUND`` then, so ``job.wait()`` raised instead of returning
the result. The waiters woken by that completion now get its final state.
"""

from __future__ import annotations

import asyncio

from client import Client, JobContext, Worker
from tests.conftest import RunningBroker


async def test_wait_returns_the_result_of_a_job_removed_on_completion(
    broker: RunningBroker,
) -> None:
    url = f"jobwire://{broker.host}:{broker.port}"

    async def double(job: JobContext) -> int:
        await asyncio.sleep(0.2)  # the producer's wait is parked by then
        return int(job.data) * 2

    async with Client(url) as client:
        queue = client.queue("vanish", remove_on_complete=True)
        job = await queue.add("double", 21)
        worker = Worker(url, "vanish", double, handle_signals=False, poll_wait=0.2)
        task = asyncio.create_task(worker.run())
        try:
            assert await job.wait(timeout=30) == 42
        finally:
            worker.stop()
            await asyncio.wait_for(task, 30)
        assert (await client.stats("vanish"))["vanish"].completed == 0  # it really is gone
