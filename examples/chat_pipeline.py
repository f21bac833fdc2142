"""A pipeline of queues, like a chat bot's: incoming → processing → outgoing.

Each stage is a queue; each handler does its step and enqueues the next stage's job, with a job
id derived from the message id so a retried stage never enqueues the next one twice (the broker
reports the duplicate and creates nothing). One worker serves all three queues; it lists
``outgoing-messages`` first so replies already generated go out before new work is taken.
Delivery is rate limited by the broker (10 messages a second across every worker, as WhatsApp's
API requires); a provider that answers "429 Too Many Requests" gets ``RateLimited``, which puts
the message back without spending one of its attempts and pauses the queue for every worker.

    make serve                                   # in another terminal
    .venv/bin/python examples/chat_pipeline.py
"""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from client import Client, JobContext, RateLimited, Worker, exponential
from examples._common import parse_args

QUEUES = ["outgoing-messages", "ai-processing", "incoming-messages"]
PLAN_PRIORITY = {"premium": 1, "pro": 3, "basic": 5}


def send_to_provider(message: dict[str, Any]) -> float | None:
    """The messaging API (simulated): ``None`` when sent, else the seconds it asks us to wait."""
    return None


class Pipeline:
    def __init__(self, client: Client) -> None:
        retry = {"attempts": 3, "backoff": exponential(0.1)}
        self.ai = client.queue("ai-processing", **retry)
        self.outgoing = client.queue("outgoing-messages", **retry)

    async def process_message(self, job: JobContext) -> dict[str, Any]:
        """Stage 1: save the message, fetch context, hand it to the AI stage."""
        message = job.data
        history = [f"(earlier messages of {message['conversation']})"]
        next_job = await self.ai.add(
            "generate-reply", {**message, "history": history},
            job_id=f"ai-{message['id']}", priority=PLAN_PRIORITY[message["plan"]],
        )
        return {"next": next_job.id}

    async def generate_reply(self, job: JobContext) -> dict[str, Any]:
        """Stage 2: ask the model (simulated), then queue the reply for delivery."""
        await job.progress("calling model")
        await asyncio.sleep(0.02)
        reply = f"Hello! You said: {job.data['text']!r}"
        next_job = await self.outgoing.add(
            "deliver", {"channel": job.data["channel"], "to": job.data["from"], "text": reply},
            job_id=f"out-{job.data['id']}",
        )
        return {"next": next_job.id}

    async def deliver(self, job: JobContext) -> dict[str, Any]:
        """Stage 3: route the reply to its channel."""
        retry_after = send_to_provider(job.data)
        if retry_after is not None:  # the provider throttled us: not now, and not a failure
            raise RateLimited(retry_after, pause_queue=True)
        return {"delivered_via": job.data["channel"], "to": job.data["to"],
                "text": job.data["text"]}


async def main(url: str) -> None:
    run = int(time.time() * 1000)
    async with Client(url) as client:
        pipeline = Pipeline(client)
        await pipeline.outgoing.set_rate_limit(10, 1)  # every worker together: 10 per second
        worker = Worker(url, QUEUES, {
            "process-message": pipeline.process_message,
            "generate-reply": pipeline.generate_reply,
            "deliver": pipeline.deliver,
        }, concurrency=20)
        running = asyncio.create_task(worker.run())
        incoming = client.queue("incoming-messages")
        messages = [
            {"id": f"{run}-1", "conversation": "c1", "from": "+15550001", "plan": "basic",
             "channel": "whatsapp", "text": "where is my order?"},
            {"id": f"{run}-2", "conversation": "c2", "from": "widget-42", "plan": "premium",
             "channel": "widget", "text": "cancel my subscription"},
        ]
        first = [await incoming.add("process-message", m, job_id=f"in-{m['id']}")
                 for m in messages]
        for job in first:
            step = await job.wait(timeout=30)
            step = await (await client.get_job(step["next"])).wait(timeout=30)
            delivered = await (await client.get_job(step["next"])).wait(timeout=30)
            print(f"message {job.data['id']} → {delivered['delivered_via']} "
                  f"{delivered['to']}: {delivered['text']}")
        await worker.close()
        await running


if __name__ == "__main__":
    asyncio.run(main(parse_args(__doc__ or "").url))
