"""Delayed jobs: reminders that run later, by delay (seconds) or at a given time.

A delayed job sits in the ``delayed`` state until its time, then becomes ``waiting`` and runs;
the worker does not poll for it: the broker's timer wakes the worker's long-poll.

    make serve                                   # in another terminal
    .venv/bin/python examples/reminders.py
"""

from __future__ import annotations

import asyncio
import sys
import time
from datetime import datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from client import Client, JobContext, Worker
from examples._common import parse_args


async def remind(job: JobContext) -> float:
    late = time.time() - job.data["due"]
    print(f"  reminder {job.data['text']!r} ran {late * 1000:.0f} ms after it was due")
    return late


async def main(url: str) -> None:
    worker = Worker(url, "reminders", remind)
    running = asyncio.create_task(worker.run())
    async with Client(url) as client:
        reminders = client.queue("reminders")
        now = time.time()
        jobs = [
            await reminders.add("remind", {"text": "stand up", "due": now + 1.0}, delay=1.0),
            await reminders.add("remind", {"text": "drink water", "due": now + 0.5},
                                delay=timedelta(milliseconds=500)),
            await reminders.add("remind", {"text": "go home", "due": now + 1.5},
                                run_at=datetime.fromtimestamp(now + 1.5)),
        ]
        for job in jobs:
            await job.refresh()
            print(f"scheduled {job.data['text']!r}: state {job.state.value if job.state else '?'}")
        for job in sorted(jobs, key=lambda j: j.data["due"]):
            await job.wait(timeout=30)
        print("all reminders ran, in order of their due time")
    await worker.close()
    await running


if __name__ == "__main__":
    asyncio.run(main(parse_args(__doc__ or "").url))
