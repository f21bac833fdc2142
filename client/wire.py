"""The asyncio protocol object of one broker connection: bytes in, decoded messages out."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from typing import TYPE_CHECKING, Final, cast

import structlog

from protocol.codec import FrameDecoder
from protocol.errors import ProtocolError

if TYPE_CHECKING:
    from client.connection import Connection

log = structlog.get_logger("jobwire.client")

CLIENT_MAX_FRAME: Final = 64 * 1024 * 1024
"""The largest reply frame this client accepts (the broker's own cap is lower)."""


class Wire(asyncio.Protocol):
    """The transport's protocol object: bytes in, messages to the connection."""

    __slots__ = ("_conn", "_decoder", "closed", "transport", "writable")

    def __init__(self, conn: Connection) -> None:
        self._conn = conn
        # The broker's maps are trusted (str keys, none repeated): lenient decoding is faster.
        self._decoder = FrameDecoder(CLIENT_MAX_FRAME, strict=False)
        self.transport: asyncio.Transport | None = None
        self.closed: asyncio.Future[BaseException | None] = (
            asyncio.get_running_loop().create_future()
        )
        self.writable = asyncio.Event()
        self.writable.set()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses: no isinstance check here.
        self.transport = cast(asyncio.Transport, transport)
        sock = transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def data_received(self, data: bytes) -> None:
        conn = self._conn
        conn.bytes_received += len(data)
        try:
            self._decoder.feed(data)
            while (message := self._decoder.next_message()) is not None:
                conn.wire_message(self, message)
        except ProtocolError as exc:
            log.error("bad frame from broker, closing", error=str(exc))
            self.abort(exc)

    def pause_writing(self) -> None:
        self.writable.clear()

    def resume_writing(self) -> None:
        self.writable.set()

    def connection_lost(self, exc: Exception | None) -> None:
        self.writable.set()
        if not self.closed.done():
            self.closed.set_result(exc)
        self._conn.wire_lost(self, exc if self.closed.cancelled() else self.closed.result())

    def abort(self, cause: BaseException) -> None:
        """Drop the transport, recording ``cause`` as why."""
        if not self.closed.done():
            self.closed.set_result(cause)
        if self.transport is not None:
            self.transport.abort()
