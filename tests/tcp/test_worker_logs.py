"""What the worker's shutdown line tells a reader (issue 16, item 10).

``worker stopping`` used to say ``held=3`` when nothing was left to do (``held`` counted outcomes
whose acknowledgement was in flight). It now says how many handlers run, how many reserved jobs
have not started, and how many outcomes wait for the broker's answer.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from client import Client, JobContext, Worker
from tests.conftest import RunningBroker
from tests.tools.clienttools import until
from tests.tools.logtools import captured_logs


def stopping(records: list[logging.LogRecord]) -> logging.LogRecord:
    [record] = [r for r in records if r.getMessage().startswith("worker stopping")]
    return record


async def test_stopping_line_counts_running_handlers(
    start_broker: Callable[..., Awaitable[RunningBroker]],
) -> None:
    broker = await start_broker()
    url = f"jobwire://{broker.host}:{broker.port}"
    release = asyncio.Event()
    started = asyncio.Event()

    async def handler(job: JobContext) -> int:
        started.set()
        await release.wait()
        return 1

    async with Client(url) as client:
        job = await client.queue("logs").add("slow", 1)
    worker = Worker(url, "logs", handler, concurrency=2, handle_signals=False, poll_wait=0.2)
    with captured_logs("jobwire.worker") as records:
        task = asyncio.create_task(worker.run())
        await asyncio.wait_for(started.wait(), 15)
        worker.stop()
        await until(lambda: any(r.getMessage().startswith("worker stopping") for r in records))
        release.set()
        await asyncio.wait_for(task, 30)
    line = stopping(records)
    assert line.getMessage() == "worker stopping: up to 30 s for 1 jobs to finish"
    assert (line.running, line.queued, line.awaiting_ack) == (1, 0, 0)  # type: ignore[attr-defined]
    assert not hasattr(line, "held")
    async with Client(url) as client:
        assert (await client.get_job(job.id)).result == 1


async def test_stopping_line_when_nothing_is_left_to_do(
    start_broker: Callable[..., Awaitable[RunningBroker]],
) -> None:
    broker = await start_broker()
    url = f"jobwire://{broker.host}:{broker.port}"

    async def handler(job: JobContext) -> int:
        return 1

    async with Client(url) as client:
        await client.queue("idle").add("quick", 1)
    worker = Worker(url, "idle", handler, concurrency=3, handle_signals=False, poll_wait=0.2)
    with captured_logs("jobwire.worker") as records:
        task = asyncio.create_task(worker.run())
        await until(lambda: worker.statistics().completed == 1)
        worker.stop()
        await asyncio.wait_for(task, 30)
    line = stopping(records)
    assert line.getMessage() == "worker stopping: no job running"
    assert line.awaiting_ack == 0  # type: ignore[attr-defined]
