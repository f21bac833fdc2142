"""Helpers shared by the client, worker, CLI and example tests."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable

from client import Worker


async def until(predicate: Callable[[], Awaitable[bool] | bool], limit: float = 15) -> None:
    """Poll ``predicate`` (sync or async) every 10 ms until true; fail after ``limit`` seconds."""
    async with asyncio.timeout(limit):
        while True:
            value = predicate()
            if isinstance(value, Awaitable):
                value = await value
            if value:
                return
            await asyncio.sleep(0.01)


@contextlib.asynccontextmanager
async def running(worker: Worker) -> AsyncIterator[Worker]:
    """Run ``worker`` in a task for the block; stop it gracefully and wait for it after."""
    task = asyncio.create_task(worker.run())
    try:
        yield worker
    finally:
        await worker.close()
        await asyncio.wait_for(task, 30)
