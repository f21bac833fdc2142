"""An email queue with retries and exponential backoff.

The fake SMTP server refuses each message twice before accepting it, so every job fails two
attempts and succeeds on the third; ``on_failed`` reports each failed attempt and
``on_completed`` each delivery, both only after the broker recorded the outcome. One address
is permanently invalid: its handler raises ``UnrecoverableError``, so it goes straight to the
failed set (no retries), where ``jobwire failed emails-demo`` lists it.

    make serve                                   # in another terminal
    .venv/bin/python examples/email_queue.py
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from client import (
    Client,
    JobContext,
    JobFailed,
    UnrecoverableError,
    Worker,
    exponential,
)
from examples._common import parse_args

refusals: Counter[str] = Counter()


async def send_email(job: JobContext) -> str:
    to = job.data["to"]
    if to.endswith("@invalid"):
        raise UnrecoverableError(f"no such domain for {to}")
    if refusals[to] < 2:  # a flaky SMTP server
        refusals[to] += 1
        raise ConnectionRefusedError("421 try again later")
    return f"250 OK: delivered to {to} on attempt {job.attempt}"


async def main(url: str) -> None:
    run = int(time.time() * 1000)
    worker = Worker(url, "emails-demo", {"send": send_email}, concurrency=10)
    worker.on_failed(lambda job, exc: print(
        f"  attempt {job.attempt}/{job.max_attempts} of {job.data['to']} failed: {exc}"))
    worker.on_completed(lambda job, result: print(f"  {result}"))
    running = asyncio.create_task(worker.run())
    async with Client(url) as client:
        # Retries at 0.1 s, 0.2 s, 0.4 s... (short for the demo; production: seconds).
        emails = client.queue("emails-demo", attempts=4, backoff=exponential(0.1, max=5))
        recipients = ["ada@example.com", "grace@example.com", "bad-address@invalid"]
        jobs = [await emails.add("send", {"to": to}, job_id=f"welcome-{run}-{i}")
                for i, to in enumerate(recipients)]
        for job in jobs:
            try:
                await job.wait(timeout=30)
                print(f"{job.data['to']}: completed after {job.attempts} attempts")
            except JobFailed as exc:
                reason = (exc.job.error or "").splitlines()[0]
                print(f"{job.data['to']}: FAILED, no retry: {reason}")
    await worker.close()
    await running


if __name__ == "__main__":
    asyncio.run(main(parse_args(__doc__ or "").url))
