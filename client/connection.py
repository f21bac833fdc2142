"""One pipelined, self-reconnecting connection to a jobwire broker.

Theory of operation
-------------------
A ``Connection`` owns one supervisor task. The supervisor opens a TCP (or TLS) connection, runs
the ``hello`` handshake, marks the connection ready, and then waits until the transport is lost.
When it is lost, every pending request fails with ``ConnectionLostError`` chained from the cause,
and (unless reconnecting is off or the client was closed) the supervisor sleeps for a capped,
doubling, jittered delay and tries again. The sleep is wakeable: ``close()`` ends it at once.

Requests are pipelined: ``request()`` picks a fresh request id, registers a future under it in
``_pending``, queues the encoded frame, and returns the future's result. Frames queued in one
event-loop iteration leave in one ``transport.write`` (write coalescing), except that once
``FLUSH_BYTES`` are queued they leave at once, so the broker starts on the first requests of a
burst while later ones are still being encoded (the two processes overlap instead of taking
turns). Replies resolve futures
by request id in whatever order the broker sends them. A request made while the connection is
down waits (within its timeout) for the next successful handshake. At most the broker's
``max_inflight`` (from its ``hello`` reply) requests are outstanding; more wait for a slot, so
the broker never has to answer ``OVERLOADED``.

Timeouts: one timer serves every pending request. Each request pushes ``(deadline, seq, id,
future, timeout)`` on a heap (``_deadlines``); the single sweep timer is armed for the earliest
live deadline, but never sooner than ``TIMEOUT_SLACK`` after the previous sweep, so a request
times out after at least its timeout and at most its timeout plus ``TIMEOUT_SLACK``. Entries of
answered requests stay in the heap until they reach its top or the heap is compacted (when it
holds more than twice the pending requests plus ``_COMPACT_MIN``), so its size stays bounded.
Bytes arrive through ``client/wire.py``; URLs,
the server description and the statistics snapshot live in ``client/endpoint.py``.

Invariants:
1. A future is in ``_pending`` exactly while its request awaits a reply on the current
   transport; losing the transport empties ``_pending`` (every future failed).
2. ``_ready`` is set exactly while a handshaken transport is usable.
3. After ``close()`` returns, no task of this connection is running and every request that was
   pending or waiting has failed with ``ConnectionClosedError`` or ``ConnectionLostError``.
4. Fatal handshake errors (``UNAUTHORIZED``, ``UNSUPPORTED_VERSION``) stop reconnecting.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import random
import ssl as ssl_module
import time
from collections.abc import Callable
from typing import Any, Final, Self

import structlog

from client.endpoint import (
    DEFAULT_URL,
    ConnectionState,
    ConnectionStatistics,
    ServerInfo,
    parse_url,
    reconnect_delay,
)
from client.errors import (
    AuthenticationError,
    BrokerError,
    ConnectionClosedError,
    ConnectionLostError,
    JobwireError,
    ProtocolMismatchError,
    RequestTimeoutError,
    broker_error,
)
from client.wire import Wire
from protocol.codec import FrameEncoder
from protocol.errors import ErrorCode, ProtocolError
from protocol.messages import (
    MAX_REQUEST_ID,
    PROTOCOL_VERSION,
    ErrorReply,
    Event,
    Hello,
    Kind,
    Reply,
    Request,
    ServerEvent,
    parse_server_message,
    request_message,
)

log = structlog.get_logger("jobwire.client")

TIMEOUT_SLACK: Final = 0.01
"""Seconds a request may outlive its timeout: the sweep timer runs at most once per slack."""
FLUSH_BYTES: Final = 2048
"""Queued request bytes that are written at once instead of at the end of the loop iteration."""
_COMPACT_MIN: Final = 256

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
        self._reconnect_base = reconnect_base
        self._reconnect_cap = reconnect_cap
        self._rng = rng or random.Random()

        self.state = ConnectionState.IDLE
        self.server: ServerInfo | None = None
        self._wire: Wire | None = None
        self._ready = asyncio.Event()
        self._wake = asyncio.Event()
        self._supervisor: asyncio.Task[None] | None = None
        self._first_attempt: asyncio.Future[None] | None = None
        self._fatal: BaseException | None = None
        self._pending: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._next_id = 1
        self._out: list[bytes] = []
        self._encoder = FrameEncoder()
        self._out_bytes = 0
        self._flush_scheduled = False
        self._deadlines: list[tuple[float, int, int, asyncio.Future[dict[str, Any]], float]] = []
        self._sweep_handle: asyncio.TimerHandle | None = None
        self._sweep_at = 0.0
        self._inflight_limit = 10_000
        self._slot_waiters: list[asyncio.Future[None]] = []
        self._event_listeners: list[Callable[[str, dict[str, Any]], None]] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        # counters for statistics()
        self._connects = 0
        self._connect_failures = 0
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
        if self._supervisor is None or self._supervisor.done():
            self._loop = asyncio.get_running_loop()
            self._first_attempt = self._loop.create_future()
            # connect() may have been cancelled meanwhile: an outcome nobody awaits is no error.
            self._first_attempt.add_done_callback(_consume)
            self._supervisor = asyncio.create_task(
                self._supervise(raise_first=not wait), name=f"jobwire-conn-{self.endpoint.port}"
            )
        assert self._first_attempt is not None
        await asyncio.shield(self._first_attempt)
        return self

    async def close(self) -> None:
        """Close the connection: fail everything pending, stop reconnecting. Safe to call twice."""
        if self.state is ConnectionState.CLOSED and self._supervisor is None:
            return
        self.state = ConnectionState.CLOSED
        self._wake.set()
        wire = self._wire
        if wire is not None and wire.transport is not None:
            self._flush()
            self._fail_pending(ConnectionClosedError("connection closed by the client"), None)
            wire.transport.close()
        supervisor, self._supervisor = self._supervisor, None
        if supervisor is not None:
            if not supervisor.done():
                supervisor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await supervisor
            # A close() that was itself cancelled while awaiting must still propagate that.
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                raise asyncio.CancelledError
        self._fail_pending(ConnectionClosedError("connection closed by the client"), None)
        self._ready.set()  # wake wait_connected() callers so they observe CLOSED
        self._ready.clear()
        self._release_slot_waiters(ConnectionClosedError("connection closed by the client"))
        if self._first_attempt is not None and not self._first_attempt.done():
            self._first_attempt.set_exception(ConnectionClosedError("connection closed"))

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
                f"not connected to {self.endpoint.host}:{self.endpoint.port} within {timeout}s"
            ) from None

    def _closed(self) -> bool:
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
        return ConnectionStatistics(
            state=self.state,
            endpoint=f"{self.endpoint.host}:{self.endpoint.port}",
            connects=self._connects,
            connect_failures=self._connect_failures,
            requests_sent=self._requests_sent,
            replies=self._replies,
            error_replies=self._error_replies,
            events=self._events,
            timeouts=self._timeouts,
            pending=len(self._pending),
            bytes_sent=self._bytes_sent,
            bytes_received=self.bytes_received,
            server=self.server,
        )

    def reconnect_now(self) -> None:
        """Cut a reconnect back-off sleep short (e.g. after the broker is known to be back)."""
        self._wake.set()

    # ------------------------------------------------------------------ supervisor

    async def _supervise(self, *, raise_first: bool) -> None:
        attempt = 0
        first = self._first_attempt
        assert first is not None
        try:
            while self.state is not ConnectionState.CLOSED:
                self.state = ConnectionState.CONNECTING
                try:
                    wire = await self._open()
                except (OSError, TimeoutError, ProtocolError, BrokerError) as exc:
                    self._connect_failures += 1
                    fatal = self._fatal or (exc if is_fatal(exc) else None)
                    if fatal is not None:
                        # Refused in the handshake (token, version): retrying will not help.
                        self._fatal = fatal
                        log.error("broker refused the handshake", error=str(fatal))
                        if not first.done():
                            first.set_exception(fatal)
                        self._close_from_supervisor(fatal)
                        return
                    if raise_first and not first.done():
                        # Back to IDLE, not CLOSED: the caller may call connect() again.
                        self.state = ConnectionState.IDLE
                        self._supervisor = None
                        # A handshake refused with a reason (OVERLOADED: slowed down after
                        # failed handshakes from this host) is raised as itself.
                        cause = exc.__cause__
                        first.set_exception(cause if isinstance(cause, BrokerError) else exc)
                        return
                    delay = reconnect_delay(
                        attempt, self._reconnect_base, self._reconnect_cap, self._rng
                    )
                    attempt += 1
                    log.debug("broker unreachable, retrying", error=str(exc), delay=delay)
                    await self._sleep(delay)
                    continue
                attempt = 0
                self._connects += 1
                self.state = ConnectionState.CONNECTED
                self._ready.set()
                if not first.done():
                    first.set_result(None)
                self._notify("connected", {})
                cause = await asyncio.shield(wire.closed)
                self.wire_lost(wire, cause)
                if self.state is ConnectionState.CLOSED:
                    return
                if self._fatal is not None:
                    self._close_from_supervisor(self._fatal)
                    return
                log.warning("connection to broker lost", error=str(cause) if cause else "closed")
                self._notify("disconnected", {})
                if not self.reconnect:
                    self._close_from_supervisor(cause)
                    return
                await self._sleep(
                    reconnect_delay(0, self._reconnect_base, self._reconnect_cap, self._rng)
                )
                attempt = 1
        finally:
            current = self._wire
            transport = current.transport if current is not None else None
            if transport is not None and not transport.is_closing():
                transport.abort()
            self._ready.clear()

    def _close_from_supervisor(self, cause: BaseException | None) -> None:
        self.state = ConnectionState.CLOSED
        self._fatal = self._fatal or cause
        self._ready.set()  # wake waiters so they observe CLOSED
        self._ready.clear()
        self._release_slot_waiters(ConnectionClosedError("connection closed"))
        self._notify("closed", {"error": str(self._fatal) if self._fatal else None})

    @property
    def close_reason(self) -> BaseException | None:
        """Why the connection closed by itself (a refused token, reconnect disabled), if it did."""
        return self._fatal

    async def _sleep(self, delay: float) -> None:
        """Sleep ``delay`` seconds unless woken by ``close()``/``reconnect_now()``."""
        self._wake.clear()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(delay):
                await self._wake.wait()

    async def _open(self) -> Wire:
        loop = asyncio.get_running_loop()
        endpoint = self.endpoint
        async with asyncio.timeout(self.connect_timeout):
            _, wire = await loop.create_connection(
                lambda: Wire(self), endpoint.host, endpoint.port, ssl=self._ssl,
                server_hostname=endpoint.host if self._ssl is not None else None,
            )
            self._wire = wire
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
        self._inflight_limit = max(1, self.server.max_inflight)
        return wire

    def _notify(self, event: str, body: dict[str, Any]) -> None:
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
        wire = self._wire
        if (wire is not None and self._ready.is_set()
                and len(self._pending) < self._inflight_limit and wire.writable.is_set()):
            return await self._enqueue(wire, request, timeout)  # the hot path: nothing to wait for
        if not self._ready.is_set():
            started = time.monotonic()
            await self.wait_connected(timeout)
            timeout = max(0.001, timeout - (time.monotonic() - started))
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
        if len(self._pending) >= self._inflight_limit:
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
        request_id = self._next_id
        pending = self._pending
        while request_id in pending:
            request_id = request_id % MAX_REQUEST_ID + 1
        self._next_id = request_id % MAX_REQUEST_ID + 1
        frame = self._encoder.frame(request_message(request_id, request))
        future: asyncio.Future[dict[str, Any]] = loop.create_future()
        pending[request_id] = future
        deadline = loop.time() + timeout
        deadlines = self._deadlines
        heapq.heappush(deadlines, (deadline, self._requests_sent, request_id, future, timeout))
        if self._sweep_handle is None or deadline < self._sweep_at:
            self._arm_sweep(loop, deadline)
        elif len(deadlines) > 2 * len(pending) + _COMPACT_MIN:
            self._compact_deadlines()
        self._out.append(frame)
        size = len(frame)
        self._out_bytes += size
        self._bytes_sent += size
        self._requests_sent += 1
        if self._out_bytes >= FLUSH_BYTES:
            self._flush()
        elif not self._flush_scheduled:
            self._flush_scheduled = True
            loop.call_soon(self._flush_soon)
        return future

    def _flush_soon(self) -> None:
        self._flush_scheduled = False
        self._flush()

    def _flush(self) -> None:
        out, self._out = self._out, []
        self._out_bytes = 0
        wire = self._wire
        if not out or wire is None or wire.transport is None or wire.transport.is_closing():
            return
        wire.transport.write(out[0] if len(out) == 1 else b"".join(out))

    # ------------------------------------------------------------------ timeouts

    def _arm_sweep(self, loop: asyncio.AbstractEventLoop, when: float) -> None:
        if self._sweep_handle is not None:
            self._sweep_handle.cancel()
        self._sweep_at = when
        self._sweep_handle = loop.call_at(when, self._sweep)

    def _sweep(self) -> None:
        """Expire every pending request whose deadline passed; re-arm for the next one."""
        self._sweep_handle = None
        loop = self._loop or asyncio.get_running_loop()
        now = loop.time()
        deadlines, pending = self._deadlines, self._pending
        expired = 0
        while deadlines:
            deadline, _, request_id, future, timeout = deadlines[0]
            live = pending.get(request_id) is future
            if live and deadline > now:
                break
            heapq.heappop(deadlines)
            # A future the caller cancelled keeps its slot until the reply comes, as before.
            if live and not future.done():
                del pending[request_id]
                self._timeouts += 1
                expired += 1
                future.set_exception(RequestTimeoutError(f"no reply within {timeout:g}s"))
        if deadlines:
            self._arm_sweep(loop, max(deadlines[0][0], now + TIMEOUT_SLACK))
        for _ in range(expired):
            self._release_slot()

    def _compact_deadlines(self) -> None:
        """Drop the heap entries of requests that are no longer pending."""
        pending = self._pending
        live = [entry for entry in self._deadlines if pending.get(entry[2]) is entry[3]]
        heapq.heapify(live)
        self._deadlines = live

    def _clear_deadlines(self) -> None:
        self._deadlines = []
        if self._sweep_handle is not None:
            self._sweep_handle.cancel()
            self._sweep_handle = None

    async def _wait_slot(self) -> None:
        loop = self._loop or asyncio.get_running_loop()
        while len(self._pending) >= self._inflight_limit:
            waiter: asyncio.Future[None] = loop.create_future()
            self._slot_waiters.append(waiter)
            await waiter

    def _release_slot(self) -> None:
        while self._slot_waiters and len(self._pending) < self._inflight_limit:
            waiter = self._slot_waiters.pop(0)
            if not waiter.done():
                waiter.set_result(None)
                return

    def _release_slot_waiters(self, exc: BaseException) -> None:
        waiters, self._slot_waiters = self._slot_waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_exception(exc)

    def _fail_pending(self, error: JobwireError, cause: BaseException | None) -> None:
        pending, self._pending = self._pending, {}
        self._out.clear()
        self._out_bytes = 0
        self._clear_deadlines()
        for future in pending.values():
            if not future.done():
                exc = type(error)(*error.args)
                exc.__cause__ = cause
                future.set_exception(exc)
        self._release_slot_waiters_soft()

    def _release_slot_waiters_soft(self) -> None:
        """Wake every slot waiter so it re-checks (the pending map just emptied)."""
        waiters, self._slot_waiters = self._slot_waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

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
            future = self._pending.pop(message[1], None)
            self._replies += 1
            if future is not None and not future.done():
                future.set_result(message[2])
            if self._slot_waiters:
                self._release_slot()
            return
        parsed = parse_server_message(message)
        if type(parsed) is Reply:
            future = self._pending.pop(parsed.request_id, None)
            self._replies += 1
            if future is not None and not future.done():
                future.set_result(parsed.body)
            if self._slot_waiters:
                self._release_slot()
        elif type(parsed) is ErrorReply:
            self._error_replies += 1
            future = self._pending.pop(parsed.request_id, None)
            if future is not None and not future.done():
                future.set_exception(broker_error(parsed.code, parsed.message))
            elif parsed.code in _FATAL_CODES:
                wire.abort(broker_error(parsed.code, parsed.message))
            if self._slot_waiters:
                self._release_slot()
        else:
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
            self._notify(parsed.event, parsed.body)


def _consume(future: asyncio.Future[None]) -> None:
    if not future.cancelled():
        future.exception()


def is_fatal(exc: BaseException) -> bool:
    """Whether ``exc`` means reconnecting cannot help (bad token, protocol version)."""
    return isinstance(exc, AuthenticationError | ProtocolMismatchError)


__all__ = [
    "DEFAULT_URL", "Connection", "ConnectionState", "ConnectionStatistics", "ServerInfo",
    "is_fatal", "parse_url", "reconnect_delay",
]
