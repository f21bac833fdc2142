"""Priorities by customer plan: lower numbers run first (premium 1, pro 3, basic 5).

Jobs are enqueued while the queue is paused, so the order the worker takes them in shows the
priorities (equal priorities keep their enqueue order); then the queue is resumed.

    make serve                                   # in another terminal
    .venv/bin/python examples/priorities.py
"""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from client import Client, JobContext, Worker
from examples._common import parse_args

PLAN_PRIORITY = {"premium": 1, "pro": 3, "basic": 5}
order: list[str] = []


async def handle(job: JobContext) -> None:
    order.append(f"{job.data['customer']} ({job.data['plan']})")


async def main(url: str) -> None:
    queue_name = f"support-{int(time.time() * 1000)}"
    async with Client(url) as client:
        support = client.queue(queue_name)
        await support.pause()
        customers = [("acme", "basic"), ("globex", "premium"), ("initech", "pro"),
                     ("umbrella", "basic"), ("hooli", "premium")]
        await support.add_bulk([
            {"name": "ticket", "data": {"customer": c, "plan": p},
             "opts": {"priority": PLAN_PRIORITY[p]}} for c, p in customers
        ])
        worker = Worker(url, queue_name, handle, concurrency=1)
        all_done = asyncio.Event()
        worker.on_completed(lambda job, result: len(order) == len(customers) and all_done.set())
        running = asyncio.create_task(worker.run())
        await support.resume()
        await asyncio.wait_for(all_done.wait(), 30)
        await worker.close()
        await running
        await support.clean("completed")
    print("handled in this order:")
    for i, who in enumerate(order, 1):
        print(f"  {i}. {who}")


if __name__ == "__main__":
    asyncio.run(main(parse_args(__doc__ or "").url))
