"""Job events with real processes.

* A producer sees ``completed``, with the result, for jobs a ``jobwire worker`` in another
  process finished, through ``Client.events``.
* A subscriber whose reader is dead must not grow the broker's memory: a real ``jobwire serve``
  process, a subscriber on every event that never reads its socket, and about 200,000 events
  (enqueue, reserve and ack with 1 KiB results, so an unbounded buffer would hold some 70 MB).
  The broker's RSS is read from ``/proc``; the subscriber, once it reads, finds a ``lagged``.
"""

from __future__ import annotations

import asyncio
import subprocess
import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest

from client import Client, SyncClient
from protocol.codec import FrameDecoder, encode_frames
from tests.conftest import BrokerProcess, jobwire_command
from tests.tools.wire import R_ID, R_TOKEN, WireClient, job_spec

BATCH = 1_000
RESULT = b"r" * 1_024


HANDLERS = textwrap.dedent("""
    async def square(job):
        return {"square": job.data * job.data}

    handlers = {"square": square}
""")


async def test_a_producer_sees_results_of_a_worker_in_another_process(
    broker_process: BrokerProcess, tmp_path: Path
) -> None:
    (tmp_path / "tasks_events.py").write_text(HANDLERS)
    url = f"jobwire://{broker_process.host}:{broker_process.port}"
    async with Client(url) as client, client.events(["sq"], kinds=["completed"]) as stream:
        jobs = await client.queue("sq").add_bulk([("square", n) for n in range(20)])
        worker = await asyncio.create_subprocess_exec(
            *jobwire_command(), "worker", "tasks_events:handlers", "--queue", "sq",
            "--url", url, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        )
        try:
            results = {}
            async with asyncio.timeout(60):
                async for event in stream:
                    assert event.kind == "completed"
                    results[event.job_id] = event.result
                    if len(results) == len(jobs):
                        break
        finally:
            worker.terminate()
            await worker.wait()
    assert results == {job.id: {"square": n * n} for n, job in enumerate(jobs)}


def rss_bytes(process: BrokerProcess) -> int:
    assert process.proc is not None
    for line in Path(f"/proc/{process.proc.pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS in /proc/PID/status")


async def one_round(producer: WireClient) -> int:
    """Enqueue, reserve and ack ``BATCH`` jobs; returns the events that made (3 per job, and
    ``drained`` once)."""
    await producer.enqueue("mem", *(job_spec(payload=b"p") for _ in range(BATCH)))
    jobs = await producer.reserve("mem", max_jobs=BATCH)
    assert len(jobs) == BATCH
    await producer.ack(*([job[R_ID], job[R_TOKEN], RESULT] for job in jobs))
    return 3 * BATCH + 1


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads RSS from /proc")
async def test_a_subscriber_that_never_reads_keeps_broker_memory_bounded(
    spawn_broker: Callable[..., BrokerProcess],
) -> None:
    broker = spawn_broker("--keep-completed-count", "0", "--sync", "off")
    reader, writer = await asyncio.open_connection(broker.host, broker.port)
    writer.write(encode_frames([
        [0, 1, "hello", {"version": 1, "client": "dead-reader"}],
        [0, 2, "subscribe", {}],
    ]))
    await writer.drain()  # from here on, nothing reads this socket
    producer = await WireClient.connect(broker.host, broker.port)
    try:
        events = 0
        for _ in range(10):  # warm up: buffers, caches and the subscriber's backlog fill
            events += await one_round(producer)
        baseline = rss_bytes(broker)
        peak = baseline
        while events < 200_000:
            events += await one_round(producer)
            peak = max(peak, rss_bytes(broker))
        growth = peak - baseline
        # Unbounded, 200,000 events with 1 KiB results would add some 70 MB; the buffer is
        # 1 MiB, the transport's high-water mark 1 MiB (plus one frame).
        assert growth < 24 << 20, f"RSS grew by {growth / 2**20:.1f} MiB"
        assert (await producer.ok("ping", {}))["now"] > 0  # and the broker still serves

        decoder = FrameDecoder(1 << 30)
        lost = 0
        while not lost:  # the subscriber reads at last: it lagged, and it was not closed
            data = await asyncio.wait_for(reader.read(1 << 20), 30)
            assert data, "the broker closed the subscriber"
            decoder.feed(data)
            for message in decoder.messages():
                if message[0] == 3 and message[1] == "events":
                    lost += sum(e["dropped"] for e in message[2]["events"]
                                if e["kind"] == "lagged")
        assert 0 < lost < events
    finally:
        await producer.close()
        writer.close()


def test_the_sync_client_reads_metrics_and_workers(broker_process: BrokerProcess) -> None:
    url = f"jobwire://{broker_process.host}:{broker_process.port}"
    with SyncClient(url) as client:
        client.queue("s1").add("t", 1)
        client.queue("s2").add("t", 2)
        metrics = client.metrics()
        assert sorted(metrics["queues"]) == ["s1", "s2"]
        assert metrics["queues"]["s1"]["added"] == {"total": 1, "last_minute": 1}
        assert client.metrics(["s2"])["queues"].keys() == {"s2"}
        assert client.workers() == []
        assert len(client.workers(include_all=True)) == 1
