"""One pipelined, self-reconnecting connection to a jobwire broker.

Theory of operation
-------------------
A ``Connection`` is kept up by a ``Supervisor`` (``client/supervisor.py``: connect, handshake,
wait for the loss, reconnect after a capped, doubling, jittered delay). When the transport is
lost, every pending request fails with ``ConnectionLostError`` chained from the cause.

Requests are pipelined: ``request()`` registers a future in the request table
(``client/request_table.py``: ids, deadlines, in-flight slots and reply matching, without I/O)
and hands the encoded frame to the transport's ``Wire`` (``client/wire.py``), which coalesces the
writes of one loop iteration. Replies resolve futures by request id in any order. A request made
while the connection is down waits (within its timeout) for the next handshake. At most the
broker's ``max_inflight`` (from its ``hello`` reply) requests are outstanding; more wait for a
slot, so the broker never has to answer ``OVERLOADED``. One timer, armed for the table's
``timer_at``, times out every pending request. URLs, the server description and the statistics
snapshot live in ``client/endpoint.py``.

Invariants:
1. A future is in the request table exactly while its request awaits a reply on the current
   transport; losing the transport empties the table (every future failed).
2. ``_ready`` is set exactly while a handshaken transport is usable.
3. After ``close()`` returns, no task of this connection is running and every request that was
   pending or waiting has failed with ``ConnectionClosedError`` or ``ConnectionLostError``.
4. Fatal handshake errors (``UNAUTHORIZED``, ``UNSUPPORTED_VERSION``) stop reconnecting.
5. One clock: deadlines and waits are measured on the event loop's ``loop.time()``.
"""

from __future__ import annotations

import asyncio
import random
import ssl as ssl_module
from collections.abc import Callable
from typing import Any, Final, Self

from client.endpoint import (
    DEFAULT_URL,
    ConnectionState,
    ConnectionStatistics,
    ServerInfo,
    parse_url,
)
from client.errors import (
    ConnectionClosedError,
    ConnectionLostError,
    JobwireError,
    RequestTimeoutError,
    broker_error,
)
from client.log import get_logger
from client.request_table import RequestTable
from client.supervisor import Supervisor
from client.wire import Wire, open_wire
from protocol.codec import FrameEncoder
from protocol.errors import ErrorCode
from protocol.messages import (
    PROTOCOL_VERSION,
    ErrorReply,
    Event,
    Kind,
    Reply,
    ServerEvent,
    parse_server_message,
    request_message,
)
from protocol.operations import Hello, Request

log = get_logger("jobwire.client")

_REPLY: Final = int(Kind.REPLY)
_FATAL_CODES: Final = frozenset({ErrorCode.UNAUTHORIZED, ErrorCode.UNSUPPORTED_VERSION})


class Connection:
    """A pipelined connection to a broker that reconnects by itself.

    Args:
        url: ``jobwire://[token@]host[:port]`` or ``jobwires://`` for TLS.
        token: auth token (overrides one in the URL).
        ssl: an ``ssl.SSLContext`` for TLS (a default context is made for ``jobwires://``).
        client_name: sent in the handshake; shows up in the broker's logs.
        request_timeout: default seconds a request may wait for its reply.
        connect_timeout: seconds for one TCP connect plus handshake.
        reconnect: reconnect after the connection drops.
        reconnect_base: first reconnect delay, seconds (doubling from there).
        reconnect_cap: longest reconnect delay, seconds.
        rng: random source for the jitter (injectable for tests).
    """

    def __init__(
        self,
        url: str = DEFAULT_URL,
        *,
        token: str | None = None,
        ssl: ssl_module.SSLContext | None = None,
        client_name: str = "jobwire-python",
        request_timeout: float = 30.0,
        connect_timeout: float = 10.0,
        reconnect: bool = True,
        reconnect_base: float = 0.05,
        reconnect_cap: float = 5.0,
        rng: random.Random | None = None,
    ) -> None:
        self.endpoint = parse_url(url)
        self._token = token if token is not None else self.endpoint.token
        if ssl is None and self.endpoint.tls:
            ssl = ssl_module.create_default_context()
        self._ssl = ssl
        self.client_name = client_name
        self.request_timeout = request_timeout
        self.connect_timeout = connect_timeout
        self.reconnect = reconnect
        self._supervisor = Supervisor(
            self, base=reconnect_base, cap=reconnect_cap, rng=rng or random.Random()
        )
        self.state = ConnectionState.IDLE
        self.server: ServerInfo | None = None
        self._wire: Wire | None = None
        self._ready = asyncio.Event()
        self._fatal: BaseException | None = None
        self._table: RequestTable[asyncio.Future[dict[str, Any]], asyncio.Future[None]] = (
            RequestTable()
        )
        self._encoder = FrameEncoder()
        self._sweep_handle: asyncio.TimerHandle | None = None
        self._sweep_at: float | None = None
        self._event_listeners: list[Callable[[str, dict[str, Any]], None]] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        # counters for statistics()
        self._requests_sent = 0
        self._replies = 0
        self._error_replies = 0
        self._events = 0
        self._timeouts = 0
        self._bytes_sent = 0
        self.bytes_received = 0

    # ------------------------------------------------------------------ lifecycle

    async def connect(self, *, wait: bool = False) -> Self:
        """Start the connection and wait for the first handshake.

        Args:
            wait: keep retrying (with backoff) until the broker answers, instead of raising on
                the first failure.

        Returns:
            ``self``.

        Raises:
            OSError: the first attempt could not connect (only when ``wait`` is false).
            AuthenticationError: the broker refused the token.
            ProtocolMismatchError: the broker does not speak this protocol version.
            ConnectionClosedError: the connection was closed meanwhile.
        """
        if self.state is ConnectionState.CLOSED:
            raise ConnectionClosedError("connection is closed")
        self._loop = asyncio.get_running_loop()
        first = self._supervisor.start(
            raise_first=not wait, name=f"jobwire-conn-{self.endpoint.port}"
        )
        await asyncio.shield(first)
        return self

    async def close(self) -> None:
        """Close the connection: fail everything pending, stop reconnecting. Safe to call twice."""
        if self.state is ConnectionState.CLOSED and not self._supervisor.running:
            return
        self.state = ConnectionState.CLOSED
        self._supervisor.wake()
        wire = self._wire
        if wire is not None and wire.transport is not None:
            wire.flush()
            self._fail_pending(ConnectionClosedError("connection closed by the client"), None)
            wire.transport.close()
        await self._supervisor.stop()
        self._fail_pending(ConnectionClosedError("connection closed by the client"), None)
        self._ready.set()  # wake wait_connected() callers so they observe CLOSED
        self._ready.clear()
        self._release_slot_waiters(ConnectionClosedError("connection closed by the client"))
        self._supervisor.fail_first()

    async def __aenter__(self) -> Self:
        return await self.connect()

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    @property
    def connected(self) -> bool:
        """True while a handshaken transport is usable."""
        return self._ready.is_set()

    async def wait_connected(self, timeout: float | None = None) -> None:  # noqa: ASYNC109
        """Wait until the connection is usable.

        Raises:
            ConnectionClosedError: the connection is (or becomes) closed.
            RequestTimeoutError: ``timeout`` passed first.
        """
        if self._ready.is_set():
            return
        if self.state is ConnectionState.CLOSED:
            raise ConnectionClosedError("connection is closed") from self._fatal
        try:
            async with asyncio.timeout(timeout):
                while not self._ready.is_set():
                    await self._ready.wait()
                    if self._closed():
                        raise ConnectionClosedError("connection is closed") from self._fatal
        except TimeoutError:
            raise RequestTimeoutError(
                f"not connected to {self._where()} within {timeout}s"
            ) from None

    def _closed(self) -> bool:  # a method: mypy would take the state narrowed above as fixed
        return self.state is ConnectionState.CLOSED

    def on_event(self, callback: Callable[[str, dict[str, Any]], None]) -> None:
        """Call ``callback(event_name, body)`` for every server event (e.g. ``"draining"``).

        Also called with ``("connected", {})`` after each successful handshake,
        ``("disconnected", {})`` when the transport is lost, and ``("closed", {"error": ...})``
        when the connection gives up by itself (a refused token, or reconnecting is off).
        """
        self._event_listeners.append(callback)

    def statistics(self) -> ConnectionStatistics:
        """A frozen snapshot of this connection's counters."""
        supervisor = self._supervisor
        return ConnectionStatistics(
            state=self.state, endpoint=self._where(), connects=supervisor.connects,
            connect_failures=supervisor.connect_failures, requests_sent=self._requests_sent,
            replies=self._replies, error_replies=self._error_replies, events=self._events,
            timeouts=self._timeouts, pending=len(self._table), bytes_sent=self._bytes_sent,
            bytes_received=self.bytes_received, server=self.server,
        )

    def reconnect_now(self) -> None:
        """Cut a reconnect back-off sleep short (e.g. after the broker is known to be back)."""
        self._supervisor.wake()

    @property
    def close_reason(self) -> BaseException | None:
        """Why the connection closed by itself (a refused token, reconnect disabled), if it did."""
        return self._fatal

    # ------------------------------------------------------------------ the supervisor's link

    def link_up(self) -> None:
        """The handshake succeeded (called by the supervisor)."""
        self.state = ConnectionState.CONNECTED
        self._ready.set()

    def link_closed(self, cause: BaseException | None) -> None:
        """Close for good by itself (called by the supervisor)."""
        self.state = ConnectionState.CLOSED
        self._fatal = self._fatal or cause
        self._ready.set()  # wake waiters so they observe CLOSED
        self._ready.clear()
        self._release_slot_waiters(ConnectionClosedError("connection closed"))
        self.notify("closed", {"error": str(self._fatal) if self._fatal else None})

    def link_drop(self) -> None:
        """Abort the transport if one is still open (the supervisor ends)."""
        current = self._wire
        transport = current.transport if current is not None else None
        if transport is not None and not transport.is_closing():
            transport.abort()
        self._ready.clear()

    async def link_open(self) -> Wire:
        """Open a transport and handshake on it (called by the supervisor)."""
        async with asyncio.timeout(self.connect_timeout):
            self._wire = wire = await open_wire(self, self.endpoint, self._ssl)
            try:
                body = await self._send(
                    Hello(PROTOCOL_VERSION, self.client_name, self._token),
                    self.connect_timeout, handshake=True,
                )
            except BaseException:
                self.wire_lost(wire, ConnectionResetError("handshake failed"))
                wire.abort(ConnectionResetError("handshake failed"))
                raise
        self.server = ServerInfo.from_body(body)
        self._table.limit = max(1, self.server.max_inflight)
        return wire

    def notify(self, event: str, body: dict[str, Any]) -> None:
        """Call every ``on_event`` listener; a listener's exception is logged, not raised."""
        for callback in list(self._event_listeners):
            try:
                callback(event, body)
            except Exception:
                log.exception("connection event listener failed", connection_event=event)

    def _where(self) -> str:
        return f"{self.endpoint.host}:{self.endpoint.port}"

    # ------------------------------------------------------------------ requests

    async def request(
        self, request: Request, *, timeout: float | None = None  # noqa: ASYNC109
    ) -> dict[str, Any]:
        """Send one request and return the reply body.

        Args:
            request: a typed request from ``protocol.messages``.
            timeout: seconds to wait for the reply (default ``request_timeout``), counting any
                wait for the connection to come back.

        Returns:
            The reply body map.

        Raises:
            BrokerError: the broker answered with an error (a subclass chosen by its code).
            ConnectionLostError: the connection dropped before the reply.
            ConnectionClosedError: the connection is closed.
            RequestTimeoutError: no reply within ``timeout``.
        """
        if timeout is None:
            timeout = self.request_timeout
        wire, table = self._wire, self._table
        if (wire is not None and self._ready.is_set()
                and len(table.pending) < table.limit and wire.writable.is_set()):
            return await self._enqueue(wire, request, timeout)  # the hot path: nothing to wait for
        if not self._ready.is_set():
            loop = asyncio.get_running_loop()
            started = loop.time()
            await self.wait_connected(timeout)
            timeout = max(0.001, timeout - (loop.time() - started))
        return await self._send(request, timeout)

    def request_nowait(
        self, request: Request, *, timeout: float | None = None
    ) -> asyncio.Future[dict[str, Any]]:
        """Send a request now and return its future (the worker's hot path: no coroutine).

        The caller must be connected (``connected`` is true).

        Raises:
            ConnectionLostError: not connected.
        """
        wire = self._wire
        if wire is None or not self._ready.is_set():
            raise ConnectionLostError(f"not connected to {self._where()}")
        return self._enqueue(wire, request, self.request_timeout if timeout is None else timeout)

    async def _send(
        self, request: Request, timeout: float, *, handshake: bool = False  # noqa: ASYNC109
    ) -> dict[str, Any]:
        wire = self._wire
        if wire is None or (not handshake and not self._ready.is_set()):
            raise ConnectionLostError(f"not connected to {self._where()}")
        if not self._table.has_slot():
            await self._wait_slot()
            wire = self._wire
            if wire is None:
                raise ConnectionLostError(f"not connected to {self._where()}")
        if not wire.writable.is_set():
            await wire.writable.wait()
        return await self._enqueue(wire, request, timeout)

    def _enqueue(
        self, wire: Wire, request: Request, timeout: float
    ) -> asyncio.Future[dict[str, Any]]:
        loop = self._loop or asyncio.get_running_loop()
        future: asyncio.Future[dict[str, Any]] = loop.create_future()
        table = self._table
        request_id = table.add(future, loop.time(), timeout)
        if table.timer_at != self._sweep_at:
            self._arm_sweep()
        frame = self._encoder.frame(request_message(request_id, request))
        wire.send(frame)
        self._bytes_sent += len(frame)
        self._requests_sent += 1
        return future

    # ------------------------------------------------------------------ timeouts and slots

    def _arm_sweep(self) -> None:
        """Re-arm the one timeout timer for the request table's ``timer_at``."""
        if self._sweep_handle is not None:
            self._sweep_handle.cancel()
        when = self._sweep_at = self._table.timer_at
        if when is None:
            self._sweep_handle = None
        else:
            loop = self._loop or asyncio.get_running_loop()
            self._sweep_handle = loop.call_at(when, self._sweep)

    def _sweep(self) -> None:
        """Fail every request whose deadline passed; re-arm for the next one."""
        self._sweep_handle = None
        loop = self._loop or asyncio.get_running_loop()
        expired = self._table.expire(loop.time())
        self._arm_sweep()
        self._timeouts += len(expired)
        for future, timeout in expired:
            future.set_exception(RequestTimeoutError(f"no reply within {timeout:g}s"))
        for _ in expired:
            self._release_slot()

    async def _wait_slot(self) -> None:
        loop = self._loop or asyncio.get_running_loop()
        while not self._table.has_slot():
            waiter: asyncio.Future[None] = loop.create_future()
            self._table.wait_slot(waiter)
            await waiter

    def _release_slot(self) -> None:
        waiter = self._table.next_slot_waiter()
        if waiter is not None:
            waiter.set_result(None)

    def _release_slot_waiters(self, exc: BaseException | None) -> None:
        """Fail every slot waiter with ``exc``, or (``None``) wake each to look again."""
        for waiter in self._table.take_slot_waiters():
            if not waiter.done():
                if exc is None:
                    waiter.set_result(None)
                else:
                    waiter.set_exception(exc)

    def _fail_pending(self, error: JobwireError, cause: BaseException | None) -> None:
        pending = self._table.clear()
        self._arm_sweep()
        for future in pending:
            if not future.done():
                exc = type(error)(*error.args)
                exc.__cause__ = cause
                future.set_exception(exc)
        self._release_slot_waiters(None)  # the table just emptied

    # ------------------------------------------------------------------ incoming

    def wire_lost(self, wire: Wire, cause: BaseException | None) -> None:
        """The transport of ``wire`` is gone: fail its pending requests at once."""
        if wire is not self._wire:
            return
        self._ready.clear()
        self._wire = None
        self._fail_pending(
            ConnectionLostError(f"connection to {self._where()} lost"),
            cause or ConnectionResetError("the broker closed the connection"),
        )

    def wire_message(self, wire: Wire, message: Any) -> None:
        """Handle one decoded broker message (called by ``Wire``)."""
        if (len(message) == 3 and message[0] == _REPLY and type(message[1]) is int
                and type(message[2]) is dict):
            # A REPLY (what ``parse_server_message`` checks), without building a ``Reply``.
            request_id, body = message[1], message[2]
        elif type(parsed := parse_server_message(message)) is Reply:
            request_id, body = parsed.request_id, parsed.body
        else:
            self._on_error_or_event(wire, parsed)
            return
        table = self._table
        future = table.pending.pop(request_id, None)  # table.match(), inlined: the hot path
        self._replies += 1
        if future is not None and not future.done():
            future.set_result(body)
        if table.slot_waiters:
            self._release_slot()

    def _on_error_or_event(self, wire: Wire, parsed: Reply | ErrorReply | ServerEvent) -> None:
        if type(parsed) is ErrorReply:
            self._error_replies += 1
            future = self._table.match(parsed.request_id)
            if future is not None and not future.done():
                future.set_exception(broker_error(parsed.code, parsed.message))
            elif parsed.code in _FATAL_CODES:
                wire.abort(broker_error(parsed.code, parsed.message))
            if self._table.slot_waiters:
                self._release_slot()
            return
        assert type(parsed) is ServerEvent
        self._events += 1
        if parsed.event == Event.ERROR:
            code = str(parsed.body.get("code", "INTERNAL"))
            text = str(parsed.body.get("message", ""))
            log.warning("broker closing the connection", code=code, message=text)
            error = broker_error(code, text)
            if code in _FATAL_CODES:
                self._fatal = error
            wire.abort(error)
        self.notify(parsed.event, parsed.body)


__all__ = ["Connection"]
