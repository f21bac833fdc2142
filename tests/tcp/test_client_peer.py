"""The client against a misbehaving peer: a scripted TCP server on 127.0.0.1 that answers the
handshake like a broker and then breaks the protocol. (Everything a real broker does is tested
against a real broker in the other client tests; a broker never sends these on purpose.)"""

from __future__ import annotations

import asyncio
import struct
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from client import Connection, ConnectionClosedError, ConnectionLostError, ConnectionState
from client.errors import AuthenticationError
from protocol.codec import FrameDecoder, encode_frame
from protocol.errors import ProtocolError
from protocol.messages import Event, event_message, reply_message
from protocol.operations import Ping, Reserve

HELLO = {"version": 1, "server": "scripted/0", "now": 1, "max_frame": 1 << 20,
         "max_payload": 1 << 16, "max_batch": 100, "max_inflight": 100}
Start = Callable[[Callable[[asyncio.StreamWriter, int], bytes]], Awaitable[str]]


async def read_request(reader: asyncio.StreamReader, decoder: FrameDecoder) -> tuple[int, str]:
    while (message := decoder.next_message()) is None:
        decoder.feed(await reader.read(65536))
    return message[1], message[2]


@pytest.fixture
async def scripted() -> AsyncIterator[Start]:
    servers: list[asyncio.Server] = []

    async def start(after_hello: Callable[[asyncio.StreamWriter, int], bytes]) -> str:
        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            decoder = FrameDecoder()
            request_id, op = await read_request(reader, decoder)
            assert op == "hello"
            writer.write(encode_frame(reply_message(request_id, HELLO)))
            request_id, _ = await read_request(reader, decoder)
            writer.write(after_hello(writer, request_id))
            await writer.drain()
            await asyncio.sleep(0.2)
            writer.close()

        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        servers.append(server)
        return f"jobwire://127.0.0.1:{server.sockets[0].getsockname()[1]}"

    yield start
    for server in servers:
        server.close()
        await server.wait_closed()


async def test_garbage_from_the_peer_fails_pending_requests_with_the_protocol_error(
    scripted: Start,
) -> None:
    url = await scripted(lambda writer, rid: struct.pack(">I", 3) + b"\xc1\xc1\xc1")
    async with Connection(url, reconnect=False) as conn:
        assert conn.server is not None and conn.server.server == "scripted/0"
        with pytest.raises(ConnectionLostError) as info:
            await conn.request(Reserve(("q",), 1, 5000, None))
        assert isinstance(info.value.__cause__, ProtocolError)
        assert conn.state is ConnectionState.CLOSED


async def test_an_unauthorized_error_event_closes_for_good(
    scripted: Start,
) -> None:
    events: list[str] = []
    url = await scripted(lambda writer, rid: encode_frame(event_message(
        Event.ERROR, {"code": "UNAUTHORIZED", "message": "token revoked"})))
    conn = await Connection(url, reconnect_cap=0.05).connect()
    conn.on_event(lambda name, body: events.append(name))
    with pytest.raises(ConnectionLostError) as info:
        await conn.request(Ping(), timeout=5)
    assert isinstance(info.value.__cause__, AuthenticationError)
    for _ in range(100):
        if conn.state is ConnectionState.CLOSED:
            break
        await asyncio.sleep(0.01)
    assert conn.state is ConnectionState.CLOSED  # a revoked token is not retried
    assert "error" in events and "closed" in events
    assert isinstance(conn.close_reason, AuthenticationError)
    with pytest.raises(ConnectionClosedError):
        await conn.request(Ping())
    await conn.close()
