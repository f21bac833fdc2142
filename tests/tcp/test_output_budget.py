"""A connection's replies are budgeted before they are produced (issue 10, finding 3).

Before, every reply produced from one read was built before the write backpressure applied:
6 KB of pipelined ``get`` for a 1 MiB job made the broker hold hundreds of MB of replies. Now a
connection's requests are handled only while its unsent replies (queued, in the transport, or
promised after a commit) stay under ``OUTPUT_BUDGET``; the rest wait in the decoder, with reading
paused, until the peer reads. Parked long-polls are bounded per connection and in all.
"""

from __future__ import annotations

import asyncio
import struct
from collections.abc import Awaitable, Callable

import msgpack

from broker.session import OUTPUT_BUDGET, Session
from protocol.codec import encode_frames
from tests.conftest import RunningBroker
from tests.tools.wire import WireClient, job_spec

StartBroker = Callable[..., Awaitable[RunningBroker]]
Wire = Callable[..., Awaitable[WireClient]]
PAYLOAD = b"p" * 1_000_000


async def read_frames(reader: asyncio.StreamReader, count: int) -> list[object]:
    frames = []
    for _ in range(count):
        (size,) = struct.unpack(">I", await reader.readexactly(4))
        frames.append(msgpack.unpackb(await reader.readexactly(size)))
    return frames


async def test_pipelined_reads_of_a_big_job_do_not_build_all_their_replies(
    start_broker: StartBroker, wire: Wire
) -> None:
    broker = await start_broker()
    assert broker.server is not None
    producer = await wire(broker)
    await producer.enqueue("big", job_spec("big-1", payload=PAYLOAD))

    reader, writer = await asyncio.open_connection(broker.host, broker.port)
    gets = 300  # about 6 KB of requests; 300 MB of replies if all were built at once
    requests = [[0, 1, "hello", {"version": 1}]]
    requests += [[0, 2 + i, "get", {"id": "big-1"}] for i in range(gets)]
    writer.write(encode_frames(requests))
    await writer.drain()
    [hello] = await read_frames(reader, 1)
    assert hello[0] == 1  # a reply

    session: Session = next(s for s in broker.server.sessions.values() if s.client_name == "")
    peak = 0
    for _ in range(50):  # the peer reads nothing more for a while
        await asyncio.sleep(0.02)
        peak = max(peak, session.unsent_bytes)
    assert peak <= OUTPUT_BUDGET + 2 * len(PAYLOAD) + 65_536, peak
    assert session.output_holds >= 1

    replies = await read_frames(reader, gets)  # once the peer reads, every request is answered
    assert [r[1] for r in replies] == list(range(2, 2 + gets))  # type: ignore[index]
    assert all(len(r[2]["job"]["payload"]) == len(PAYLOAD) for r in replies)  # type: ignore[index]
    writer.close()
    assert (await producer.ok("ping", {}))["now"] > 0  # the broker served others throughout


async def test_parked_requests_are_bounded_per_connection_and_in_all(
    start_broker: StartBroker, wire: Wire
) -> None:
    broker = await start_broker(max_parked_per_connection=2, max_parked=3)
    first, second = await wire(broker), await wire(broker)
    await first.enqueue("busy", job_spec("job-1"))
    for _ in range(2):
        first.send("reserve", {"queues": ["empty"], "max": 1, "wait_ms": 30_000})
    refused = await first.error("wait", {"id": "job-1", "timeout_ms": 30_000})
    assert refused.code == "OVERLOADED" and "on this connection" in refused.message
    second.send("reserve", {"queues": ["empty"], "max": 1, "wait_ms": 30_000})
    await second.ok("ping", {})
    refused = await second.error("reserve", {"queues": ["empty"], "max": 1, "wait_ms": 30_000})
    assert refused.code == "OVERLOADED" and "more than 3 parked" in refused.message
    assert (await second.ok("ping", {}))["now"] > 0  # the connection stays
