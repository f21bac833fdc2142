"""A graceful restart under running workers, against a real ``jobwire serve`` (issue 18, item 1).

SIGTERM to the broker process, then a restart on the same port and data directory. The worker
(the real ``client.Worker``) must stop reserving when the ``draining`` event comes, acknowledge
the jobs it holds within the grace period (so none of them counts a second attempt), reconnect
by itself to the restarted broker, and carry on with the rest of the queue. A worker that ignored
``draining`` keeps asking for jobs through the drain (each answered empty at once), which fails
the reserve count below.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from client import Client, JobContext, JobState, Worker
from tests.conftest import BrokerProcess

JOBS = 12


async def test_sigterm_then_restart_under_a_running_worker(
    spawn_broker: Callable[..., BrokerProcess],
) -> None:
    process = spawn_broker("--shutdown-grace", "10s")
    url = f"jobwire://{process.host}:{process.port}"
    async with Client(url) as client:
        jobs = await client.queue("restart").add_bulk([("slow", i) for i in range(JOBS)])
    started = asyncio.Event()

    async def slow(job: JobContext) -> int:
        started.set()
        await asyncio.sleep(0.4)
        return int(job.data)

    worker = Worker(url, "restart", slow, concurrency=2, handle_signals=False, poll_wait=0.5,
                    reconnect_cap=0.2)
    reserves_at: dict[str, int] = {}

    def on_event(event: str, body: dict[str, Any]) -> None:
        if event in ("draining", "disconnected") and event not in reserves_at:
            reserves_at[event] = worker.statistics().reserve_requests

    worker.connection.on_event(on_event)
    task = asyncio.create_task(worker.run())
    try:
        await asyncio.wait_for(started.wait(), 30)
        assert await asyncio.to_thread(process.terminate) == 0  # drained, acked, exited cleanly
        assert "draining" in reserves_at and "disconnected" in reserves_at
        # Through the drain the worker asked for nothing more (one request may have been on the
        # wire when the event came).
        assert reserves_at["disconnected"] - reserves_at["draining"] <= 1, reserves_at
        log = [line["event"] for line in process.log_lines()]
        assert "shutdown_complete" in log

        await asyncio.to_thread(process.start)  # same port, same data directory
        async with Client(url) as client:
            for _ in range(300):
                done = [await client.get_job(job.id) for job in jobs]
                if all(j.state is JobState.COMPLETED for j in done):
                    break
                await asyncio.sleep(0.1)
        assert [j.state for j in done] == [JobState.COMPLETED] * JOBS
        assert [j.result for j in done] == list(range(JOBS))
        # The jobs held at SIGTERM were acknowledged during the drain: no second attempt.
        assert all(j.attempts == 1 for j in done), [(j.id, j.attempts, j.error) for j in done]
        assert worker.statistics().completed == JOBS
    finally:
        worker.stop()
        await asyncio.wait_for(task, 30)
