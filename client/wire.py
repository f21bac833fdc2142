"""The asyncio side of one broker transport: bytes in → decoded messages, frames out → writes.

``Wire`` is the transport's protocol object. Incoming bytes are decoded here and each message is
handed to the owner (``WireOwner``: the connection). Outgoing frames are coalesced: frames sent
in one event-loop iteration leave in one ``transport.write`` at the end of it, except that once
``FLUSH_BYTES`` are queued they leave at once, so the broker starts on the first requests of a
burst while later ones are still being encoded (the two processes overlap instead of taking
turns).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl as ssl_module
from typing import Any, Final, Protocol, cast

from client.endpoint import Endpoint
from client.log import get_logger
from protocol.codec import FrameDecoder
from protocol.errors import ProtocolError

log = get_logger("jobwire.client")

CLIENT_MAX_FRAME: Final = 64 * 1024 * 1024
"""The largest reply frame this client accepts (the broker's own cap is lower)."""
FLUSH_BYTES: Final = 2048
"""Queued request bytes that are written at once instead of at the end of the loop iteration."""


class WireOwner(Protocol):
    """What a ``Wire`` reports to: the connection that opened it."""

    bytes_received: int

    def wire_message(self, wire: Wire, message: Any) -> None:
        """One decoded broker message arrived on ``wire``."""

    def wire_lost(self, wire: Wire, cause: BaseException | None) -> None:
        """The transport of ``wire`` is gone (``cause``: why, if known)."""


class Wire(asyncio.Protocol):
    """The transport's protocol object: bytes in, messages to the owner; coalesced writes out."""

    __slots__ = (
        "_decoder", "_flush_scheduled", "_loop", "_out", "_out_bytes", "_owner", "closed",
        "transport", "writable",
    )

    def __init__(self, owner: WireOwner) -> None:
        self._owner = owner
        # The broker's maps are trusted (str keys, none repeated): lenient decoding is faster.
        self._decoder = FrameDecoder(CLIENT_MAX_FRAME, strict=False)
        self._loop = asyncio.get_running_loop()
        self._out: list[bytes] = []
        self._out_bytes = 0
        self._flush_scheduled = False
        self.transport: asyncio.Transport | None = None
        self.closed: asyncio.Future[BaseException | None] = self._loop.create_future()
        self.writable = asyncio.Event()
        self.writable.set()

    # ------------------------------------------------------------------ out

    def send(self, frame: bytes) -> None:
        """Queue ``frame``; it is written at the end of this loop iteration (or at once, see
        ``FLUSH_BYTES``). Frames queued after the transport is lost are dropped."""
        self._out.append(frame)
        self._out_bytes += len(frame)
        if self._out_bytes >= FLUSH_BYTES:
            self.flush()
        elif not self._flush_scheduled:
            self._flush_scheduled = True
            self._loop.call_soon(self._flush_soon)

    def _flush_soon(self) -> None:
        self._flush_scheduled = False
        self.flush()

    def flush(self) -> None:
        """Write every queued frame now."""
        out, self._out = self._out, []
        self._out_bytes = 0
        transport = self.transport
        if not out or transport is None or transport.is_closing():
            return
        transport.write(out[0] if len(out) == 1 else b"".join(out))

    # ------------------------------------------------------------------ asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses: no isinstance check here.
        self.transport = cast(asyncio.Transport, transport)
        sock = transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def data_received(self, data: bytes) -> None:
        owner = self._owner
        owner.bytes_received += len(data)
        try:
            self._decoder.feed(data)
            while (message := self._decoder.next_message()) is not None:
                owner.wire_message(self, message)
        except ProtocolError as exc:
            log.error("bad frame from broker, closing", error=str(exc))
            self.abort(exc)

    def pause_writing(self) -> None:
        self.writable.clear()

    def resume_writing(self) -> None:
        self.writable.set()

    def connection_lost(self, exc: Exception | None) -> None:
        self.writable.set()
        self._out.clear()
        self._out_bytes = 0
        if not self.closed.done():
            self.closed.set_result(exc)
        self._owner.wire_lost(self, exc if self.closed.cancelled() else self.closed.result())

    def abort(self, cause: BaseException) -> None:
        """Drop the transport, recording ``cause`` as why."""
        if not self.closed.done():
            self.closed.set_result(cause)
        if self.transport is not None:
            self.transport.abort()


async def open_wire(
    owner: WireOwner, endpoint: Endpoint, ssl: ssl_module.SSLContext | None
) -> Wire:
    """Open a TCP (or, with ``ssl``, TLS) transport to ``endpoint`` whose messages go to ``owner``.

    Raises:
        OSError: the connection could not be made.
    """
    loop = asyncio.get_running_loop()
    _, wire = await loop.create_connection(
        lambda: Wire(owner), endpoint.host, endpoint.port, ssl=ssl,
        server_hostname=endpoint.host if ssl is not None else None,
    )
    return wire
