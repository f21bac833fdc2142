"""The Python client's side of watching a broker over real TCP: ``Client.events``, ``QueueEvents``,
the client's own bounded buffer, ``Client.metrics`` and ``Client.workers``."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from client import BrokerError, Client, JobEvent, QueueEvents, Worker
from tests.conftest import RunningBroker


def url_of(broker: RunningBroker) -> str:
    return f"jobwire://{broker.host}:{broker.port}"


async def test_events_follow_jobs_to_their_end(broker: RunningBroker) -> None:
    async def handle(job: Any) -> Any:
        if job.data == "bad":
            raise ValueError("bad input")
        return job.data.upper()

    async with Client(url_of(broker)) as client:
        queue = client.queue("up", attempts=1)
        async with client.events(["up"], kinds=["completed", "failed"]) as stream:
            good = await queue.add("shout", "hello")
            bad = await queue.add("shout", "bad")
            worker = Worker(url_of(broker), "up", {"shout": handle})
            running = asyncio.ensure_future(worker.run())
            try:
                seen: dict[str, JobEvent] = {}
                async with asyncio.timeout(30):
                    async for event in stream:
                        seen[event.job_id or ""] = event
                        if len(seen) == 2:
                            break
            finally:
                await worker.close()
                await running
    assert (seen[good.id].kind, seen[good.id].result, seen[good.id].final) == (
        "completed", "HELLO", True)
    failed = seen[bad.id]
    assert (failed.kind, failed.final, failed.fields["will_retry"]) == ("failed", True, False)
    assert "bad input" in failed.fields["error"]
    assert failed.seq > 0 and failed.time > 1e9


async def test_queue_events_callbacks(broker: RunningBroker) -> None:
    async with Client(url_of(broker)) as client:
        added: list[str] = []
        paused = asyncio.Event()

        async def on_paused(event: JobEvent) -> None:
            paused.set()

        events = QueueEvents(client, "cb").on("added", lambda e: added.append(e.job_id or ""))
        events.on("paused", on_paused)
        async with events:
            jobs = await client.queue("cb").add_bulk([("t", n) for n in range(3)])
            await client.queue("cb").pause()
            await asyncio.wait_for(paused.wait(), 30)
        assert added == [job.id for job in jobs]


async def test_a_consumer_that_stops_reading_gets_lagged_from_the_client_buffer(
    broker: RunningBroker,
) -> None:
    async with Client(url_of(broker)) as client:
        stream = await client.events(["lag"], kinds=["added"], max_buffer=10).start()
        await client.queue("lag").add_bulk([("t", n) for n in range(50)])
        await client.ping()
        await asyncio.sleep(0.05)  # let the events message be read
        got: list[JobEvent] = []
        async with asyncio.timeout(30):
            while sum(1 if e.kind == "added" else e.fields["dropped"] for e in got) < 50:
                got.append(await anext(stream))
        await stream.close()
        assert got[0].kind == "lagged" and got[0].fields["dropped"] > 0
        assert len(got) <= 11
        assert [e async for e in stream] == []  # closed: the iteration ends


async def test_bad_subscriptions_raise(broker: RunningBroker) -> None:
    async with Client(url_of(broker)) as client:
        with pytest.raises(ValueError):
            client.events(kinds=["nope"])
        streams = [await client.events().start() for _ in range(16)]
        with pytest.raises(BrokerError) as caught:
            await client.events().start()
        assert caught.value.code == "OVERLOADED"
        for stream in streams:
            await stream.close()


async def test_metrics_and_workers(
    start_broker: Callable[..., Awaitable[RunningBroker]],
) -> None:
    broker = await start_broker()
    async with Client(url_of(broker), client_name="box:1") as client:
        for name in ("a", "b", "c"):
            await client.queue(name).add("t", 1)
        metrics = await client.metrics()
        assert sorted(metrics["queues"]) == ["a", "b", "c"]
        assert metrics["queues"]["a"]["added"]["total"] == 1
        assert metrics["broker"]["uptime_ms"] >= 0
        only = await client.metrics(["b"], buckets=True)
        assert list(only["queues"]) == ["b"]
        assert await client.workers() == []
        everyone = await client.workers(include_all=True)
        assert [w["client"] for w in everyone] == ["box:1"]
