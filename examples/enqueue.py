"""README quick start, step 2: enqueue a few emails and wait for their results.

Run ``make serve`` in one terminal, ``.venv/bin/jobwire worker examples.tasks:handlers -q emails``
in another, then ``.venv/bin/python examples/enqueue.py`` in a third.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout

from client import Client
from examples._common import parse_args


async def main(url: str) -> None:
    async with Client(url) as client:
        emails = client.queue("emails", attempts=3)
        jobs = await emails.add_bulk(
            [("send", {"to": f"user{i}@example.com", "subject": "Welcome!"}) for i in range(3)]
        )
        print(f"enqueued {len(jobs)} jobs: {', '.join(job.id for job in jobs)}")
        for job in jobs:
            result = await job.wait(timeout=60)  # long-polls the broker; no busy loop
            print(f"job {job.id} completed: {result}")


if __name__ == "__main__":
    asyncio.run(main(parse_args(__doc__ or "").url))
