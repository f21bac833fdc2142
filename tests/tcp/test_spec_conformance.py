"""A client written from protocol/SPEC.md alone talks to a real broker.

Nothing from ``protocol/`` is used on the client side: frames are built with ``struct`` and
``msgpack`` as SPEC.md describes, and the first requests are the very bytes of the spec's example
exchange (§14), read back from the hex dump. So if the broker and the spec disagree, this fails.
"""

from __future__ import annotations

import asyncio
import struct
from typing import Any

import msgpack
import pytest

from bench import spec_example
from tests.conftest import RunningBroker
from tests.pure.test_spec import SPEC, _hex_frames

HELLO_KEYS = {"version", "server", "now", "max_frame", "max_payload", "max_batch", "max_inflight"}
JOB_INFO_KEYS = {
    "id", "queue", "name", "state", "priority", "attempts", "max_attempts", "payload", "progress",
    "result", "error", "created_at", "run_at", "started_at", "finished_at", "lease_deadline",
    "timeout_ms",
}


class SpecClient:
    """Frames per SPEC.md §2: a 4-byte big-endian length, then one msgpack array."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, broker: RunningBroker) -> SpecClient:
        return cls(*await asyncio.open_connection(broker.host, broker.port))

    async def send_raw(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def send(self, message: Any) -> None:
        body = msgpack.packb(message, use_bin_type=True)
        await self.send_raw(struct.pack(">I", len(body)) + body)

    async def recv(self) -> Any:
        """The next message, or None when the broker closed the connection."""
        try:
            (length,) = struct.unpack(">I", await asyncio.wait_for(self.reader.readexactly(4), 10))
            body = await asyncio.wait_for(self.reader.readexactly(length), 10)
        except asyncio.IncompleteReadError:
            return None
        return msgpack.unpackb(body, raw=False)

    async def call(self, request_id: int, op: str, args: dict[str, Any]) -> Any:
        await self.send([0, request_id, op, args])
        return await self.recv()

    async def close(self) -> None:
        self.writer.close()
        await self.writer.wait_closed()


async def test_the_spec_example_exchange_against_a_real_broker(broker: RunningBroker) -> None:
    frames = _hex_frames(spec_example.current_block(SPEC))
    client = await SpecClient.open(broker)
    try:
        await client.send_raw(frames[0])  # hello, byte for byte from §14
        kind, request_id, body = await client.recv()
        assert (kind, request_id) == (1, 1)
        assert set(body) >= HELLO_KEYS and body["version"] == 1

        await client.send_raw(frames[2])  # enqueue one job
        assert await client.recv() == [1, 2, {"ids": ["1"], "duplicates": []}]

        await client.send_raw(frames[4])  # reserve
        kind, request_id, body = await client.recv()
        (job,) = body["jobs"]
        assert job[:6] == ["1", "emails", "send", b"hello", 1, 3]
        token, lease_ms, deadline, created = job[6], job[7], job[8], job[9]
        assert lease_ms == 30_000 and deadline >= created + 30_000
        assert job[10] is None

        await client.send_raw(frames[6])  # ack with the spec's token: not this lease's
        assert (await client.recv())[2]["results"][0][0] == "STALE_LEASE"
        reply = await client.call(4, "ack", {"items": [["1", token, b"ok"]]})
        assert reply == [1, 4, {"results": [["OK", "completed"]]}]

        kind, _, body = await client.call(5, "get", {"id": "1"})
        assert kind == 1 and set(body["job"]) == JOB_INFO_KEYS
        assert body["job"]["state"] == "completed" and body["job"]["result"] == b"ok"
    finally:
        await client.close()


async def test_request_errors_keep_the_connection(broker: RunningBroker) -> None:
    client = await SpecClient.open(broker)
    try:
        assert (await client.call(1, "stats", {}))[:3] == [2, 1, "HANDSHAKE_REQUIRED"]
        kind, request_id, code, text = await client.call(2, "hello", {"version": "1"})
        assert (kind, request_id, code) == (2, 2, "BAD_ARGUMENT") and text.startswith("version:")
        assert (await client.call(3, "hello", {"version": 1, "client": "spec"}))[:2] == [1, 3]
        assert (await client.call(4, "hello", {"version": 1}))[2] == "HANDSHAKE_REQUIRED"
        assert (await client.call(5, "nope", {}))[:3] == [2, 5, "UNKNOWN_OP"]
        reply = await client.call(6, "enqueue", {"queue": "q", "jobs": [[None, "n", "text"]]})
        assert reply[2] == "BAD_ARGUMENT" and reply[3].startswith("jobs[0].payload:")
        reply = await client.call(7, "enqueue", {"queue": "q", "jobs": [["42", "n", b""]]})
        assert reply[2] == "BAD_ARGUMENT" and reply[3].startswith("jobs[0].id:")
        assert (await client.call(8, "get", {"id": "nope"}))[:3] == [2, 8, "NOT_FOUND"]
        assert (await client.call(9, "reserve", {"queues": []}))[2] == "BAD_ARGUMENT"
        kind, request_id, body = await client.call(10, "ping", {"future_key": 1})
        assert (kind, request_id) == (1, 10) and isinstance(body["now"], int)
    finally:
        await client.close()


async def test_wrong_version_is_an_error_reply_then_close(broker: RunningBroker) -> None:
    client = await SpecClient.open(broker)
    try:
        assert (await client.call(1, "hello", {"version": 2}))[:3] == [2, 1, "UNSUPPORTED_VERSION"]
        assert await client.recv() is None
    finally:
        await client.close()


@pytest.mark.parametrize(
    ("raw", "code"),
    [
        (struct.pack(">I", 8 * 1024 * 1024 + 1), "FRAME_TOO_LARGE"),
        (b"\xff\xff\xff\xff", "FRAME_TOO_LARGE"),
        (b"\x00\x00\x00\x00", "BAD_FRAME"),
        (b"\x00\x00\x00\x01\xc1", "BAD_FRAME"),
        (b"\x00\x00\x00\x01\xc0", "BAD_FRAME"),
        (b"\x00\x00\x00\x04\x81\x01\x02\x90", "BAD_FRAME"),
    ],
)
async def test_connection_level_errors_are_an_event_then_close(
    broker: RunningBroker, raw: bytes, code: str
) -> None:
    client = await SpecClient.open(broker)
    try:
        await client.send_raw(raw)
        kind, event, body = await client.recv()
        assert (kind, event, body["code"]) == (3, "error", code)
        assert await client.recv() is None
    finally:
        await client.close()
