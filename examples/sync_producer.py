"""A producer in synchronous code (a Django or Flask view, a script, a cron job).

``SyncClient`` needs no event loop: it speaks the protocol over a plain blocking socket. Here a
pretend web request handler enqueues a thumbnail job and, for the demo, waits for its result.
The worker side is ordinary: ``jobwire worker examples.sync_producer:handlers -q thumbnails``.
So that this file runs on its own, ``main`` also starts that worker in a background thread.

    make serve                                   # in another terminal
    .venv/bin/python examples/sync_producer.py
"""

from __future__ import annotations

import asyncio
import sys
import threading
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from client import JobContext, SyncClient, Worker
from examples._common import parse_args


def make_thumbnail(job: JobContext) -> dict[str, object]:
    """A plain ``def`` handler: the worker runs it in a thread pool."""
    width, height = job.data["size"]
    return {"image": job.data["image"], "thumbnail": [width // 4, height // 4]}


handlers = {"thumbnail": make_thumbnail}


def upload_view(jobs: SyncClient, image: str) -> str:
    """What a web view does: enqueue and answer at once (here: return the job id)."""
    job = jobs.queue("thumbnails", attempts=3).add(
        "thumbnail", {"image": image, "size": [1024, 768]})
    return job.id


def main(url: str) -> None:
    worker = Worker(url, "thumbnails", handlers, handle_signals=False)
    thread = threading.Thread(target=asyncio.run, args=(worker.run(),), daemon=True)
    thread.start()

    with SyncClient(url) as jobs:  # no asyncio anywhere in this block
        job_ids = [upload_view(jobs, f"photo-{i}.jpg") for i in range(3)]
        print(f"enqueued {job_ids}")
        more = jobs.queue("thumbnails").add_bulk(
            [("thumbnail", {"image": f"bulk-{i}.jpg", "size": [400, 400]}) for i in range(5)])
        print(f"enqueued {len(more)} more in one round trip")
        for job_id in job_ids:
            print(f"{job_id}: {jobs.get_job(job_id).wait(timeout=30)}")
        for job in more:
            job.wait(timeout=30)
        print(f"thumbnails queue: {jobs.queue('thumbnails').stats()}")

    worker.stop()  # thread-safe: a graceful stop on the worker's own loop
    thread.join(timeout=60)


if __name__ == "__main__":
    main(parse_args(__doc__ or "").url)
