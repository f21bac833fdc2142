"""The client connection against real brokers: handshake, pipelining, timeouts, failure of
pending requests, reconnect (in-process brokers on port 0, and ``jobwire serve`` processes that
are killed and restarted on the same port)."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from client import (
    AuthenticationError,
    Client,
    Connection,
    ConnectionClosedError,
    ConnectionLostError,
    ConnectionState,
    DrainingError,
    RequestTimeoutError,
)
from protocol.model import AckItem, JobSpec
from protocol.operations import Ack, Enqueue, Ping, Reserve, Wait
from protocol.replies import parse_reserved
from tests.conftest import BrokerProcess, RunningBroker

StartBroker = Callable[..., Awaitable[RunningBroker]]


def url_of(broker: RunningBroker | BrokerProcess, token: str | None = None) -> str:
    auth = f"{token}@" if token else ""
    return f"jobwire://{auth}{broker.host}:{broker.port}"


async def test_handshake_and_statistics_snapshot(broker: RunningBroker) -> None:
    async with Connection(url_of(broker)) as conn:
        assert conn.connected and conn.state is ConnectionState.CONNECTED
        assert conn.server is not None
        assert conn.server.version == 1 and conn.server.server.startswith("jobwire/")
        assert conn.server.max_inflight == broker.settings.max_inflight
        stats = conn.statistics()
        assert stats.connects == 1 and stats.requests_sent == 1  # the hello
        with pytest.raises(dataclasses.FrozenInstanceError):
            stats.pending = 3  # type: ignore[misc]
        await conn.request(Ping())
        assert stats.requests_sent == 1 and conn.statistics().requests_sent == 2
    assert conn.state is ConnectionState.CLOSED
    with pytest.raises(ConnectionClosedError):
        await conn.request(Ping())


async def test_requests_are_pipelined_on_one_connection(broker: RunningBroker) -> None:
    async with Client(url_of(broker)) as client:
        queue = client.queue("pipe")
        jobs = await asyncio.gather(*(queue.add("n", i) for i in range(300)))
        assert len({job.id for job in jobs}) == 300
        stats = client.statistics()
        assert stats.connects == 1 and stats.replies == stats.requests_sent
        assert len(broker.server.sessions) == 1  # type: ignore[union-attr]


async def test_per_request_timeout(broker: RunningBroker) -> None:
    async with Connection(url_of(broker)) as conn:
        with pytest.raises(RequestTimeoutError):
            await conn.request(Reserve(("empty",), 1, 10_000, None), timeout=0.2)
        assert conn.statistics().timeouts == 1
        assert "now" in await conn.request(Ping())  # the connection is still fine


async def test_timeouts_share_one_sweep_and_fire_in_deadline_order(broker: RunningBroker) -> None:
    """Requests with different timeouts, added out of deadline order, each time out by
    themselves (the single sweep timer re-arms for earlier deadlines); answered requests in
    between are unaffected, and the deadline heap does not keep answered requests forever."""
    async with Connection(url_of(broker)) as conn:
        long = asyncio.ensure_future(conn.request(Reserve(("a",), 1, 10_000, None), timeout=1.5))
        short = asyncio.ensure_future(conn.request(Reserve(("b",), 1, 10_000, None), timeout=0.2))
        for _ in range(8):  # 8 x 256 answered requests, each with the default 30 s timeout
            await asyncio.gather(*(conn.request(Ping()) for _ in range(256)))
        # Compaction bounds the heap by 2 x pending (at most 258) + 256, well below 2,050.
        assert len(conn._table._deadlines) <= 2 * 258 + 256 + 1
        with pytest.raises(RequestTimeoutError, match=r"0\.2s"):
            await short
        assert not long.done() and conn.statistics().timeouts == 1
        with pytest.raises(RequestTimeoutError, match=r"1\.5s"):
            await long
        assert conn.statistics().timeouts == 2 and conn.statistics().pending == 0
        assert "now" in await conn.request(Ping())


async def test_close_fails_every_pending_request(broker: RunningBroker) -> None:
    conn = await Connection(url_of(broker)).connect()
    pending = [asyncio.create_task(conn.request(Reserve((f"q{i}",), 1, 30_000, None)))
               for i in range(5)]
    await asyncio.sleep(0)
    await asyncio.wait_for(conn.close(), 10)
    for task in pending:
        with pytest.raises(ConnectionClosedError):
            await task
    await conn.close()  # twice is fine


async def test_lost_connection_fails_pending_requests_chained_from_the_cause(
    broker_process: BrokerProcess,
) -> None:
    async with Connection(url_of(broker_process), reconnect=False) as conn:
        job_id = (await conn.request(Enqueue("q", (JobSpec(None, "n", b""),))))["ids"][0]
        waiting = asyncio.create_task(conn.request(Wait(job_id, 60_000)))
        await asyncio.sleep(0.1)
        broker_process.kill()
        with pytest.raises(ConnectionLostError) as info:
            await waiting
        assert info.value.__cause__ is not None
        await asyncio.sleep(0.05)
        assert conn.state is ConnectionState.CLOSED  # reconnect=False
        with pytest.raises(ConnectionClosedError):
            await conn.request(Ping())


async def test_reconnects_after_a_broker_restart(broker_process: BrokerProcess) -> None:
    events: list[str] = []
    async with Client(url_of(broker_process), reconnect_cap=0.2) as client:
        client.connection.on_event(lambda name, body: events.append(name))
        job = await client.queue("survive").add("n", {"x": 1})
        broker_process.kill()
        await asyncio.to_thread(broker_process.start)
        # the request waits for the reconnection, then succeeds
        fetched = await client.get_job(job.id)
        assert fetched.data == {"x": 1}
        stats = client.statistics()
        assert stats.connects == 2
    assert events == ["disconnected", "connected"]


async def test_connect_refused_or_waiting_for_the_broker(tmp_path: Path) -> None:
    process = BrokerProcess(tmp_path / "late", (), {})
    url = url_of(process)
    with pytest.raises(OSError):
        await Connection(url).connect()

    gave_up = Connection(url, reconnect_cap=0.1)
    connecting = asyncio.create_task(gave_up.connect(wait=True))
    await asyncio.sleep(0.3)
    assert not connecting.done() and gave_up.statistics().connect_failures >= 1
    await gave_up.close()
    with pytest.raises(ConnectionClosedError):
        await connecting

    patient = Connection(url, reconnect_cap=0.1)
    connecting = asyncio.create_task(patient.connect(wait=True))
    await asyncio.sleep(0.2)
    try:
        await asyncio.to_thread(process.start)
        await asyncio.wait_for(connecting, 15)
        assert patient.connected and await patient.request(Ping())
    finally:
        await patient.close()
        process.kill()


async def test_close_wakes_the_reconnect_sleep(broker_process: BrokerProcess) -> None:
    conn = await Connection(url_of(broker_process), reconnect_base=60, reconnect_cap=60).connect()
    broker_process.kill()
    await asyncio.sleep(0.2)
    assert not conn.connected
    await asyncio.wait_for(conn.close(), 5)  # does not sit out the 30-60 s back-off
    assert conn.state is ConnectionState.CLOSED


async def test_wrong_token_is_fatal_and_right_token_works(start_broker: StartBroker) -> None:
    broker = await start_broker(token="s3cret")
    conn = Connection(url_of(broker, "wrong"))
    with pytest.raises(AuthenticationError):
        await conn.connect(wait=True)  # even when waiting: a refused token is not retried
    assert conn.state is ConnectionState.CLOSED and conn.statistics().connects == 0
    async with Client(url_of(broker, "s3cret")) as client:
        assert await client.ping() > 0
    async with Client(url_of(broker), token="s3cret") as client:
        assert await client.ping() > 0


async def test_draining_event_reaches_listeners(start_broker: StartBroker) -> None:
    broker = await start_broker(shutdown_grace=1.0)
    seen: list[tuple[str, dict[str, Any]]] = []
    async with Client(url_of(broker), reconnect=False) as client:
        client.connection.on_event(lambda name, body: seen.append((name, body)))
        drained = asyncio.Event()
        client.connection.on_event(lambda name, body: drained.set() if name == "draining" else 0)
        stopping = asyncio.create_task(broker.stop())
        await asyncio.wait_for(drained.wait(), 10)
        assert ("draining", {}) in seen
        with pytest.raises((DrainingError, ConnectionLostError, ConnectionClosedError)):
            await client.queue("q").add("n")
        await stopping


async def test_in_flight_requests_stay_within_the_brokers_limit(
    start_broker: StartBroker,
) -> None:
    broker = await start_broker(max_inflight=4)
    async with Client(url_of(broker)) as client:
        assert client.connection.server is not None
        assert client.connection.server.max_inflight == 4
        queue = client.queue("limited")
        # 4 parked long-polls would fill the broker's limit; the client queues the rest
        jobs = await asyncio.gather(*(queue.add("n", i) for i in range(200)))
        assert len({job.id for job in jobs}) == 200
        assert client.statistics().error_replies == 0  # never OVERLOADED


async def test_connect_can_be_retried_after_a_refused_first_attempt(tmp_path: Path) -> None:
    process = BrokerProcess(tmp_path / "retry", (), {})
    conn = Connection(url_of(process))
    with pytest.raises(OSError):
        await conn.connect()
    assert conn.state is ConnectionState.IDLE
    try:
        await asyncio.to_thread(process.start)
        await conn.connect()
        assert conn.connected
    finally:
        await conn.close()
        process.kill()


async def test_job_wait_rides_out_a_broker_restart(broker_process: BrokerProcess) -> None:
    async with Client(url_of(broker_process), reconnect_cap=0.2) as client:
        job = await client.queue("ride").add("n", attempts=1)
        waiting = asyncio.create_task(job.wait(timeout=60))
        await asyncio.sleep(0.1)
        broker_process.kill()
        await asyncio.to_thread(broker_process.start)
        reserved = parse_reserved(
            await client.connection.request(Reserve(("ride",), 1, 5000, None)))
        await client.connection.request(Ack((AckItem(reserved[0].job_id, reserved[0].token,
                                                      client.serializer.dumps(7)),)))
        assert await waiting == 7
