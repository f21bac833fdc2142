"""An application that embeds a ``Client`` and a ``Worker`` (tests/process/test_quiet_library.py).

``python embedded_app.py URL SYNC_DIR [LEVEL]``: runs one job, writes ``SYNC_DIR/ready``, waits
for ``SYNC_DIR/restarted`` (the test kills and restarts the broker meanwhile), runs a second job
through the reconnected connections, exits 0. With LEVEL it configures ``logging`` at that level
(to standard error); without it, logging stays unconfigured as in an application that never
touched it. It writes nothing itself: whatever appears on its stdout or stderr is the library's.
"""

from __future__ import annotations

import asyncio
import logging
import sys
from pathlib import Path

from client import Client, JobContext, Worker


async def main(url: str, sync: Path) -> None:
    async def handler(job: JobContext) -> int:
        return int(job.data) * 2

    worker = Worker(url, "quiet", handler, concurrency=1, handle_signals=False, poll_wait=0.5,
                    reconnect_cap=0.1)
    task = asyncio.create_task(worker.run())
    async with Client(url, reconnect_cap=0.1) as client:
        queue = client.queue("quiet")
        job = await queue.add("double", 1)
        assert await job.wait(timeout=30) == 2
        (sync / "ready").touch()
        while not (sync / "restarted").exists():  # noqa: ASYNC110 - a file the test writes
            await asyncio.sleep(0.05)
        for _ in range(300):  # the client reconnects by itself; retry until it is back
            try:
                job = await queue.add("double", 2)
                break
            except Exception:  # any failure during the outage: try again
                await asyncio.sleep(0.1)
        assert await job.wait(timeout=30) == 4
    worker.stop()
    await asyncio.wait_for(task, 30)


if __name__ == "__main__":
    if len(sys.argv) > 3:
        logging.basicConfig(level=sys.argv[3].upper(), stream=sys.stderr,
                            format="%(levelname)s %(name)s %(message)s")
    asyncio.run(main(sys.argv[1], Path(sys.argv[2])))
