"""Where the broker did not do what SPEC.md says (issue 16, items 1-3), over raw TCP bytes.

Each test talks to a real ``jobwire serve`` with frames built with ``struct`` and ``msgpack`` as
the SPEC describes, nothing from ``protocol/``.

Item 1. Sent in one TCP write: ``hello``, ``enqueue``, ``ping``, then a zero
or oversized length prefix. Before the fix the decoder refused the whole read at the bad prefix,
so only the ``error`` event came back. Now ``hello`` and ``ping`` are answered, the ``enqueue``
is applied (its reply waits for the commit and is dropped with the connection: SPEC §6.4), and
the ``error`` event closes the connection.
"""

from __future__ import annotations

import asyncio
import struct
from collections.abc import Callable
from typing import Any

import msgpack
import pytest

from tests.conftest import BrokerProcess


def frame(message: Any) -> bytes:
    body = msgpack.packb(message, use_bin_type=True)
    return struct.pack(">I", len(body)) + body


async def read_all(reader: asyncio.StreamReader) -> list[Any]:
    """Every message until the broker closes the connection."""
    out = []
    while True:
        try:
            (length,) = struct.unpack(">I", await asyncio.wait_for(reader.readexactly(4), 10))
            out.append(msgpack.unpackb(await reader.readexactly(length), raw=False))
        except asyncio.IncompleteReadError:
            return out


@pytest.mark.parametrize("bad_prefix", [0, 8 * 1024 * 1024 + 1], ids=["zero", "oversized"])
def test_frames_before_a_bad_prefix_in_the_same_write_are_handled(
    spawn_broker: Callable[..., BrokerProcess], bad_prefix: int
) -> None:
    process = spawn_broker()
    job_id = f"before-bad-prefix-{bad_prefix}"

    async def run() -> None:
        reader, writer = await asyncio.open_connection(process.host, process.port)
        writer.write(frame([0, 1, "hello", {"version": 1}])
                     + frame([0, 2, "enqueue", {"queue": "q", "jobs": [[job_id, "t", b"p"]]}])
                     + frame([0, 3, "ping", {}])
                     + struct.pack(">I", bad_prefix) + b"\x00" * 16)
        await writer.drain()
        messages = await read_all(reader)
        writer.close()
        replies = {m[1]: m for m in messages if m[0] in (1, 2)}
        events = [m for m in messages if m[0] == 3]
        assert replies[1][0] == 1 and replies[3][0] == 1, messages  # hello and ping answered
        assert [e[1] for e in events] == ["error"], messages
        assert events[0][2]["code"] == ("BAD_FRAME" if bad_prefix == 0 else "FRAME_TOO_LARGE")

        reader, writer = await asyncio.open_connection(process.host, process.port)
        writer.write(frame([0, 1, "hello", {"version": 1}]) + frame([0, 2, "get", {"id": job_id}]))
        await writer.drain()
        got = []
        while len(got) < 2:
            (length,) = struct.unpack(">I", await asyncio.wait_for(reader.readexactly(4), 10))
            got.append(msgpack.unpackb(await reader.readexactly(length), raw=False))
        writer.close()
        assert got[1][0] == 1 and got[1][2]["job"]["id"] == job_id, got  # the enqueue applied

    asyncio.run(run())


async def test_retention_short_forms_are_accepted_on_the_wire(spawn_broker: Callable[
        ..., BrokerProcess]) -> None:
    """SPEC §9.3 with §9's rule that trailing optional items may be omitted (issue 16, item 2):
    ``[5]`` and ``[]`` used to get BAD_ARGUMENT; only ``[5, nil]`` passed."""
    process = spawn_broker()
    reader, writer = await asyncio.open_connection(process.host, process.port)
    jobs = [["short-1", "t", b"p", None, None, None, None, None, None, [5]],
            ["short-2", "t", b"p", None, None, None, None, None, None, [], [3]],
            ["short-3", "t", b"p", None, None, None, None, None, None, [5, None]]]
    writer.write(frame([0, 1, "hello", {"version": 1}])
                 + frame([0, 2, "enqueue", {"queue": "q", "jobs": jobs}]))
    await writer.drain()
    answers = []
    while len(answers) < 2:
        (length,) = struct.unpack(">I", await asyncio.wait_for(reader.readexactly(4), 10))
        answers.append(msgpack.unpackb(await reader.readexactly(length), raw=False))
    writer.close()
    assert answers[1][0] == 1, answers[1]  # a reply, not an error
    assert answers[1][2]["ids"] == ["short-1", "short-2", "short-3"]


def test_draining_as_the_spec_says(spawn_broker: Callable[..., BrokerProcess]) -> None:
    """SPEC §10 ``draining`` (issue 16, item 3): the event, refused new connections, a parked
    ``wait`` answered, held leases waited for, then a clean close with no further event."""
    process = spawn_broker()

    async def run() -> None:
        worker_r, worker_w = await asyncio.open_connection(process.host, process.port)
        waiter_r, waiter_w = await asyncio.open_connection(process.host, process.port)
        worker_w.write(frame([0, 1, "hello", {"version": 1}])
                       + frame([0, 2, "enqueue", {"queue": "d", "jobs": [["drain-1", "t", b"p"]]}])
                       + frame([0, 3, "reserve", {"queues": ["d"], "max": 1}]))
        waiter_w.write(frame([0, 1, "hello", {"version": 1}])
                       + frame([0, 2, "wait", {"id": "drain-1", "timeout_ms": 60_000}]))
        await worker_w.drain()
        await waiter_w.drain()
        worker = [await next_message(worker_r) for _ in range(3)]
        reserved = next(m for m in worker if m[0] == 1 and m[1] == 3)[2]["jobs"][0]
        assert (await next_message(waiter_r))[1] == 1  # hello; the wait is parked

        assert process.proc is not None
        process.proc.terminate()  # SIGTERM: the drain starts
        assert (await next_message(worker_r))[:2] == [3, "draining"]
        assert (await next_message(waiter_r))[:2] == [3, "draining"]
        with pytest.raises(ConnectionRefusedError):  # the listener is closed: refused by TCP
            await asyncio.open_connection(process.host, process.port)

        worker_w.write(frame([0, 4, "ack", {"items": [[reserved[0], reserved[6], b"done"]]}]))
        await worker_w.drain()
        waited = await next_message(waiter_r)
        assert waited[0] == 1 and waited[2]["job"]["state"] == "completed", waited
        assert (await read_all(worker_r))[0][:2] == [1, 4]  # the ack's reply, then a clean close
        assert await read_all(waiter_r) == []  # closed without a further event
        worker_w.close()
        waiter_w.close()

    asyncio.run(run())
    assert process.proc is not None and process.proc.wait(30) == 0


async def next_message(reader: asyncio.StreamReader) -> Any:
    (length,) = struct.unpack(">I", await asyncio.wait_for(reader.readexactly(4), 10))
    return msgpack.unpackb(await reader.readexactly(length), raw=False)
