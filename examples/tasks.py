"""Handlers for the README quick start: ``jobwire worker examples.tasks:handlers -q emails``.

A handler is a function that takes the job context and returns a result (anything msgpack can
encode). ``async def`` handlers run on the worker's event loop; plain ``def`` ones (like
``render`` below) run in a thread pool, so blocking code is fine there.
"""

from __future__ import annotations

import asyncio
import hashlib

from client import JobContext


async def send(job: JobContext) -> dict[str, str]:
    """Pretend to send an email: report progress, take a moment, return a message id."""
    await job.progress(50)
    await asyncio.sleep(0.05)  # the SMTP round trip
    digest = hashlib.sha1(repr(job.data).encode()).hexdigest()[:12]
    return {"to": job.data["to"], "message_id": f"<{digest}@jobwire.example>"}


def render(job: JobContext) -> int:
    """A blocking handler: runs in a worker thread."""
    return len(job.data.get("body", ""))


handlers = {"send": send, "render": render}
