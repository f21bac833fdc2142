"""Every example runs to completion against a real broker, and the README quick start works:
``jobwire worker examples.tasks:handlers -q emails`` in one process, ``examples/enqueue.py`` in
another."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path

from client import Client
from tests.conftest import RunningBroker, jobwire_command

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"


async def run_example(broker: RunningBroker, name: str) -> str:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, str(EXAMPLES / name), "--url", f"jobwire://{broker.host}:{broker.port}",
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )
    try:
        output, _ = await asyncio.wait_for(proc.communicate(), 90)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    text = output.decode()
    assert proc.returncode == 0, text
    return text


async def test_email_queue_retries_with_backoff(broker: RunningBroker) -> None:
    out = await run_example(broker, "email_queue.py")
    assert "ada@example.com: completed after 3 attempts" in out
    assert "grace@example.com: completed after 3 attempts" in out
    assert "bad-address@invalid: FAILED, no retry: UnrecoverableError" in out
    assert out.count("421 try again later") == 4


async def test_chat_pipeline_passes_through_three_queues(broker: RunningBroker) -> None:
    out = await run_example(broker, "chat_pipeline.py")
    assert "→ whatsapp +15550001: Hello! You said: 'where is my order?'" in out
    assert "→ widget widget-42: Hello! You said: 'cancel my subscription'" in out
    async with Client(f"jobwire://{broker.host}:{broker.port}") as client:
        stats = await client.stats()
    for queue in ("incoming-messages", "ai-processing", "outgoing-messages"):
        assert stats[queue].total_completed == 2


async def test_reminders_run_after_their_delay(broker: RunningBroker) -> None:
    out = await run_example(broker, "reminders.py")
    assert out.count("state delayed") == 3
    ran = [line.split("'")[1] for line in out.splitlines() if "ran " in line]
    assert ran == ["drink water", "stand up", "go home"]
    assert "all reminders ran" in out


async def test_priorities_by_plan(broker: RunningBroker) -> None:
    out = await run_example(broker, "priorities.py")
    order = [line.split(". ", 1)[1] for line in out.splitlines() if line.startswith("  ")]
    assert order == ["globex (premium)", "hooli (premium)", "initech (pro)", "acme (basic)",
                     "umbrella (basic)"]


async def test_sync_producer(broker: RunningBroker) -> None:
    out = await run_example(broker, "sync_producer.py")
    assert "enqueued 5 more in one round trip" in out
    assert out.count("'thumbnail': [256, 192]") == 3
    assert "completed=8" in out


async def test_readme_quick_start(broker: RunningBroker) -> None:
    env = {**os.environ, "JOBWIRE_URL": f"jobwire://{broker.host}:{broker.port}"}
    worker = await asyncio.create_subprocess_exec(
        *jobwire_command(), "worker", "examples.tasks:handlers", "-q", "emails", cwd=ROOT,
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )
    try:
        producer = await asyncio.create_subprocess_exec(
            sys.executable, "examples/enqueue.py", cwd=ROOT, env=env,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        )
        output, _ = await asyncio.wait_for(producer.communicate(), 60)
        assert producer.returncode == 0, output.decode()
        lines = output.decode().splitlines()
        assert lines[0].startswith("enqueued 3 jobs")
        assert sum("completed: {'to': 'user" in line for line in lines) == 3
        worker.send_signal(signal.SIGTERM)
        worker_out, _ = await asyncio.wait_for(worker.communicate(), 30)
        assert worker.returncode == 0, worker_out.decode()
        assert "worker started" in worker_out.decode()
    finally:
        if worker.returncode is None:
            worker.kill()
            await worker.wait()
