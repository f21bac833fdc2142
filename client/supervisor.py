"""The reconnect supervisor of a connection: connect, handshake, wait for the loss, back off, again.

Theory of operation
-------------------
``Supervisor`` owns one task per ``start``. The task asks its ``Link`` (the connection) to open a
transport and run the ``hello`` handshake, reports the link up, and then waits until the
transport is lost. When it is lost the link fails its pending requests, and (unless reconnecting
is off or the link was closed) the task sleeps for a capped, doubling, jittered delay
(``client.endpoint.reconnect_delay``) and tries again. The sleep is wakeable: ``wake()`` (from
``close()`` or ``reconnect_now()``) ends it at once.

Invariants:
1. The first attempt's outcome is reported exactly once, through the future ``start`` returns:
   the handshake succeeded, it was refused (fatal), or (with ``raise_first``) the first attempt
   failed, in which case the link is back to ``IDLE`` and ``start`` may be called again.
2. Fatal handshake errors (``UNAUTHORIZED``, ``UNSUPPORTED_VERSION``) stop reconnecting.
3. When the task ends, for whatever reason, the link has dropped its transport.
4. One WARNING per outage (the connection lost, or the first failed attempt of one that began
   at connect), every further failed attempt at DEBUG, one INFO line when it is over
   ("reconnected after N attempts in X s"): an embedded client does not flood its host's logs.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from typing import Any, Protocol

from client.endpoint import ConnectionState, reconnect_delay
from client.errors import (
    AuthenticationError,
    BrokerError,
    ConnectionClosedError,
    ProtocolMismatchError,
)
from client.log import get_logger
from client.wire import Wire
from protocol.errors import ProtocolError

log = get_logger("jobwire.client")


class Link(Protocol):
    """What the supervisor drives: the connection, seen from its reconnect loop."""

    state: ConnectionState
    reconnect: bool

    @property
    def close_reason(self) -> BaseException | None:
        """Set once the link closed by itself; it never reconnects after that."""

    async def link_open(self) -> Wire:
        """Open a transport and handshake on it (within the connect timeout)."""

    def link_up(self) -> None:
        """The handshake succeeded: requests may flow."""

    def wire_lost(self, wire: Wire, cause: BaseException | None) -> None:
        """The transport of ``wire`` is gone: fail its pending requests."""

    def link_closed(self, cause: BaseException | None) -> None:
        """Close for good by itself (a refused handshake, or reconnecting is off)."""

    def link_drop(self) -> None:
        """The supervisor ends: abort the transport if one is still open."""

    def notify(self, event: str, body: dict[str, Any]) -> None:
        """Tell the connection's event listeners."""


def is_fatal(exc: BaseException) -> bool:
    """Whether ``exc`` means reconnecting cannot help (bad token, protocol version)."""
    return isinstance(exc, AuthenticationError | ProtocolMismatchError)


class Supervisor:
    """Keeps a ``Link`` connected.

    Args:
        link: the connection to keep up.
        base: first reconnect delay, seconds (doubling from there).
        cap: longest reconnect delay, seconds.
        rng: random source for the jitter.
    """

    __slots__ = ("_base", "_cap", "_first", "_link", "_rng", "_task", "_wake", "connect_failures",
                 "connects")

    def __init__(self, link: Link, *, base: float, cap: float, rng: random.Random) -> None:
        self._link = link
        self._base = base
        self._cap = cap
        self._rng = rng
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._first: asyncio.Future[None] | None = None
        self.connects = 0
        self.connect_failures = 0

    @property
    def running(self) -> bool:
        """True from ``start`` until ``stop`` (or a failed first attempt with ``raise_first``)."""
        return self._task is not None

    def start(self, *, raise_first: bool, name: str) -> asyncio.Future[None]:
        """Start the task unless it runs; return the future of the first attempt's outcome.

        Args:
            raise_first: a failed first attempt ends the task (and fails the future) instead of
                being retried.
            name: the task's name.
        """
        if self._task is None or self._task.done():
            self._first = asyncio.get_running_loop().create_future()
            # connect() may have been cancelled meanwhile: an outcome nobody awaits is no error.
            self._first.add_done_callback(_consume)
            self._task = asyncio.create_task(self._run(self._first, raise_first), name=name)
        assert self._first is not None
        return self._first

    def wake(self) -> None:
        """Cut a reconnect back-off sleep short."""
        self._wake.set()

    async def stop(self) -> None:
        """Cancel the task and wait for it.

        Raises:
            CancelledError: the caller itself was cancelled while waiting.
        """
        task, self._task = self._task, None
        if task is None:
            return
        if not task.done():
            task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        # A close() that was itself cancelled while awaiting must still propagate that.
        current = asyncio.current_task()
        if current is not None and current.cancelling():
            raise asyncio.CancelledError

    def fail_first(self) -> None:
        """The link closed: an unanswered first attempt fails with ``ConnectionClosedError``."""
        if self._first is not None and not self._first.done():
            self._first.set_exception(ConnectionClosedError("connection closed"))

    async def _sleep(self, delay: float) -> None:
        """Sleep ``delay`` seconds unless woken."""
        self._wake.clear()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(delay):
                await self._wake.wait()

    async def _run(self, first: asyncio.Future[None], raise_first: bool) -> None:
        link = self._link
        attempt = 0
        # The outage under way (its start, failed attempts) for the rate-limited log lines.
        outage_since: float | None = None
        failures = 0
        try:
            while link.state is not ConnectionState.CLOSED:
                link.state = ConnectionState.CONNECTING
                try:
                    wire = await link.link_open()
                except (OSError, TimeoutError, ProtocolError, BrokerError) as exc:
                    self.connect_failures += 1
                    fatal = link.close_reason or (exc if is_fatal(exc) else None)
                    if fatal is not None:
                        # Refused in the handshake (token, version): retrying will not help.
                        log.error("broker refused the handshake", error=str(fatal))
                        if not first.done():
                            first.set_exception(fatal)
                        link.link_closed(fatal)
                        return
                    if raise_first and not first.done():
                        # Back to IDLE, not CLOSED: the caller may call connect() again.
                        link.state = ConnectionState.IDLE
                        self._task = None
                        # A handshake refused with a reason (OVERLOADED: slowed down after
                        # failed handshakes from this host) is raised as itself.
                        cause = exc.__cause__
                        first.set_exception(cause if isinstance(cause, BrokerError) else exc)
                        return
                    delay = reconnect_delay(attempt, self._base, self._cap, self._rng)
                    attempt += 1
                    failures += 1
                    if outage_since is None:
                        # One warning per outage; every further attempt only at debug level.
                        outage_since = time.monotonic()
                        log.warning("broker unreachable, retrying", error=str(exc), delay=delay)
                    else:
                        log.debug("broker unreachable, retrying", error=str(exc), delay=delay,
                                  attempt=failures)
                    await self._sleep(delay)
                    continue
                if outage_since is not None:
                    seconds = time.monotonic() - outage_since
                    log.info(f"reconnected after {failures + 1} attempts in {seconds:.1f} s",
                             attempts=failures + 1, seconds=round(seconds, 3))
                outage_since = None
                failures = 0
                attempt = 0
                self.connects += 1
                link.link_up()
                if not first.done():
                    first.set_result(None)
                link.notify("connected", {})
                cause = await asyncio.shield(wire.closed)
                link.wire_lost(wire, cause)
                if link.state is ConnectionState.CLOSED:
                    return
                if link.close_reason is not None:
                    link.link_closed(link.close_reason)
                    return
                log.warning("connection to broker lost", error=str(cause) if cause else "closed")
                outage_since = time.monotonic()
                link.notify("disconnected", {})
                if not link.reconnect:
                    link.link_closed(cause)
                    return
                await self._sleep(reconnect_delay(0, self._base, self._cap, self._rng))
                attempt = 1
        finally:
            link.link_drop()


def _consume(future: asyncio.Future[None]) -> None:
    if not future.cancelled():
        future.exception()
