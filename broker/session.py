"""One client connection: handshake, request dispatch, batched replies, backpressure.

Theory of operation
-------------------
A ``Session`` is the ``asyncio.Protocol`` of one TCP connection. ``data_received`` feeds the bytes
to a ``FrameDecoder`` and handles every complete request in order; each handler (``broker/ops.py``)
returns the reply body, which the session queues at once or, as the op's declaration says
(``after_commit``), hands to the group committer through ``broker/outbox.py`` so it leaves only
after the transaction holding every change made so far committed. Replies queued while handling
one chunk of input, or one commit, go out in one ``transport.write``. The session knows the rest
of the broker only through its handlers' ``OpContext`` and the server's ``SessionHooks``.

Connection states and their moves (``ConnState``; an illegal move raises):

    HANDSHAKE --hello ok--> OPEN --> CLOSING --> CLOSED
        \\-------------------------------^----------^

Rules:
1. Before a successful ``hello`` every other request gets ``HANDSHAKE_REQUIRED`` (the connection
   stays). A wrong version gets ``UNSUPPORTED_VERSION``, a wrong token ``UNAUTHORIZED``; both close.
2. A valid envelope with a bad op or arguments gets an ERROR reply, the connection stays; what the
   decoder rejects, or a message that is not a request, gets an ``error`` event, then a close.
3. ``inflight`` counts requests read but not yet answered (waiting for a commit, parked long-polls
   and waits). Reading pauses while ``inflight >= max_inflight`` or while the transport's write
   buffer is above its high-water mark; a request already read when ``inflight`` is at the cap gets
   ``OVERLOADED``.
4. Once CLOSING, nothing more is read and replies still pending are dropped.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from enum import Enum
from typing import Any, Final, NamedTuple, cast

from broker.auth import FailureThrottle, peer_host, token_matches
from broker.config import Settings
from broker.log import get_logger
from broker.longpoll import ParkedReserve, ParkedWait
from broker.ops import OpContext, handle, reply_job
from broker.outbox import NOT_DURABLE, Outbox
from broker.workers import WorkerInfo
from protocol.codec import FrameDecoder
from protocol.errors import ErrorCode, ProtocolError
from protocol.messages import (
    PROTOCOL_VERSION,
    Event,
    error_message,
    event_message,
    parse_request_body,
    reply_message,
    request_id_of,
)
from protocol.operations import HELLO, Hello
from protocol.replies import ReservedJob

WRITE_HIGH_WATER: Final = 1 << 20  # unsent reply bytes above which a connection is not read
WRITE_LOW_WATER: Final = 256 << 10  # unsent reply bytes below which reading resumes
OUTPUT_BUDGET: Final = WRITE_HIGH_WATER
"""Unsent reply bytes (queued, in the transport, promised after a commit) past which a
connection's requests wait unhandled: replies are budgeted before they are produced."""

_MAX_HELD: Final = 64 << 10  # bytes a connection may send before its handshake slot (hello: ~4 KiB)

_log = get_logger("session")


class ConnState(Enum):
    HANDSHAKE = "handshake"
    OPEN = "open"
    CLOSING = "closing"
    CLOSED = "closed"


_MOVES: Final = {
    ConnState.HANDSHAKE: frozenset({ConnState.OPEN, ConnState.CLOSING, ConnState.CLOSED}),
    ConnState.OPEN: frozenset({ConnState.CLOSING, ConnState.CLOSED}),
    ConnState.CLOSING: frozenset({ConnState.CLOSED}),
    ConnState.CLOSED: frozenset(),
}


class SessionHooks(NamedTuple):
    """What a session tells the broker, and asks of it beyond its handlers' ``OpContext``."""

    opened: Callable[[Session], bool]
    """A connection was made; False refuses it (too many connections, or shutting down)."""
    closed: Callable[[Session, str], None]
    """A connection was lost (with the reason); it has been counted as opened or refused."""
    after_ops: Callable[[], None]
    """Requests were handled: wake waiters for what the core changed, re-arm the timer (the
    server does it once per event-loop iteration, for every connection that asked)."""
    hello_body: Callable[[int], dict[str, Any]]
    """The reply to a successful ``hello``, given ``now``."""
    now_ms: Callable[[], int]
    """The broker's clock."""
    handshakes: Callable[[], FailureThrottle]
    """The broker's record of failed handshakes per host (it slows their next ones down)."""


class Session(asyncio.Protocol):
    """The protocol of one connection. Created by the server's listener, one per accept.

    Args:
        broker: what the op handlers use.
        hooks: the broker's callbacks.
        settings: the broker's settings.
        conn_id: this connection's id, unique in the broker.
    """

    def __init__(
        self, broker: OpContext, hooks: SessionHooks, settings: Settings, conn_id: int
    ) -> None:
        self.broker = broker
        self.hooks = hooks
        self.conn_id = conn_id
        self.state = ConnState.HANDSHAKE
        self.client_name = ""
        self.peer: str = "?"
        self.inflight = 0
        self.parked: set[ParkedReserve | ParkedWait] = set()
        self.read_pauses = 0  # times reading was paused (for tests and stats)
        self.output_holds = 0  # times handling stopped for the output budget
        self.worker: WorkerInfo | None = None
        """What the ``workers`` op shows of this connection (set by the server on accept)."""
        self._settings = settings
        self._decoder = FrameDecoder(settings.max_frame)
        self._transport: asyncio.Transport | None = None
        self._outbox = Outbox(broker.committer, self._answered)
        self._input_held = False  # requests read wait in the decoder for the output budget
        self._in_batch = False
        self._flush_handle: asyncio.Handle | None = None
        self._reading_paused = False
        self._writing_paused = False
        self._close_reason: str | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._last_input = 0.0
        self._held: list[bytes] | None = None  # bytes received before the handshake slot
        self._held_bytes = 0

    # ------------------------------------------------------------------ asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass, but is one
        self._transport = transport
        self._outbox.attach(transport)
        peer = transport.get_extra_info("peername")
        self.peer = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else str(peer)
        transport.set_write_buffer_limits(high=WRITE_HIGH_WATER, low=WRITE_LOW_WATER)
        loop = asyncio.get_running_loop()
        self._last_input = loop.time()
        if not self.hooks.opened(self):
            self.fail_connection(ErrorCode.OVERLOADED, "too many connections")
            return
        wait = self.hooks.handshakes().admit(peer_host(peer), loop.time())
        if wait is None:
            # Not UNAUTHORIZED: no token was checked, and a client with the right token must
            # not take this for a verdict on it. OVERLOADED tells it to retry later.
            self.fail_connection(ErrorCode.OVERLOADED,
                                 "slowed down: too many failed handshakes from this address; "
                                 "retry later")
            return
        if wait > 0:  # recent failed handshakes from this host: handle this one at its slot
            # Bytes that arrive before the slot are held, not handled: pause_reading() alone is
            # not enough, uvloop ignores it inside connection_made.
            self._held = []
            transport.pause_reading()
            self._timer = loop.call_later(wait, self._admitted)
            return
        self._timer = loop.call_later(self._settings.handshake_timeout, self._on_timer)

    def _admitted(self) -> None:
        """This host's handshake slot came (``broker.auth``): read, with the usual deadline."""
        self._timer = None
        held, self._held = self._held, None
        if self.state is ConnState.HANDSHAKE and self._transport is not None:
            self._transport.resume_reading()
            self._timer = asyncio.get_running_loop().call_later(
                self._settings.handshake_timeout, self._on_timer
            )
            if held:
                self.data_received(b"".join(held))

    def data_received(self, data: bytes) -> None:
        if self.state is ConnState.CLOSING or self.state is ConnState.CLOSED:
            return
        if self._held is not None:  # waiting for this host's handshake slot
            self._held.append(data)
            self._held_bytes += len(data)
            if self._held_bytes > _MAX_HELD:
                self._held = None
                self.fail_connection(ErrorCode.OVERLOADED,
                                     "sent too much before its handshake slot; retry later")
            return
        self._last_input = asyncio.get_running_loop().time()
        try:
            self._decoder.feed(data)
        except ProtocolError as exc:
            self.fail_connection(exc.code, exc.message)
            return
        if not self._input_held:
            self._handle_input()

    def _handle_input(self) -> None:
        """Handle every complete request in the decoder, in order, while the output budget
        lasts: one that would add to more than ``OUTPUT_BUDGET`` unsent bytes waits (in the
        decoder, with reading paused) until the replies before it drain."""
        if self._input_held:
            return
        now = self.hooks.now_ms()
        if self.worker is not None:
            self.worker.last_seen = now
        self._in_batch = True
        try:
            while self.state is ConnState.OPEN or self.state is ConnState.HANDSHAKE:
                if self._outbox.queued_bytes + self._outbox.promised_bytes > OUTPUT_BUDGET or (
                        self._writing_paused and self._over_budget()):
                    self._hold_input()
                    break
                try:
                    message = self._decoder.next_message()
                except ProtocolError as exc:
                    self.fail_connection(exc.code, exc.message)
                    break
                if message is None:
                    break
                self._on_message(message, now)
        finally:
            self._in_batch = False
        self.hooks.after_ops()
        self._flush()

    def eof_received(self) -> bool | None:
        self._close_reason = self._close_reason or "peer closed"
        return None  # let the transport close itself

    def connection_lost(self, exc: Exception | None) -> None:
        if self.state is ConnState.CLOSED:
            return
        reason = self._close_reason or (
            "peer closed" if exc is None else f"connection error: {exc}"
        )
        self._move(ConnState.CLOSED)
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._flush_handle is not None:
            self._flush_handle.cancel()
            self._flush_handle = None
        self._outbox.clear()
        self.hooks.closed(self, reason)

    @property
    def is_open(self) -> bool:
        """Whether the handshake is done and the connection is not closing."""
        return self.state is ConnState.OPEN

    def pause_writing(self) -> None:
        self._writing_paused = True
        self._update_reading()

    def resume_writing(self) -> None:
        self._writing_paused = False
        self._update_reading()
        self._release_input()
        self.broker.observe.pump(self)  # events waiting for room (nothing if none)

    def can_send_events(self) -> bool:
        """Open and below the write high-water mark (else events wait in bounded buffers)."""
        return self.state is ConnState.OPEN and not self._writing_paused

    def send_events_frame(self, frame: bytes) -> None:
        """Write one encoded ``events`` frame, after the replies already queued."""
        self._outbox.write()
        if self._transport is not None and not self._transport.is_closing():
            self._transport.write(frame)

    # ------------------------------------------------------------------ output

    def send(self, message: Any) -> None:
        """Queue one outgoing message; it is written with the others of this batch."""
        if self.state is ConnState.CLOSING or self.state is ConnState.CLOSED:
            return
        self._outbox.queue(message)
        if not self._in_batch and self._flush_handle is None:
            self._flush_handle = asyncio.get_running_loop().call_soon(self._flush)

    def send_event(self, event: Event, body: dict[str, Any]) -> None:
        """Queue a server-initiated event."""
        self.send(event_message(event, body))

    def _flush(self) -> None:
        self._flush_handle = None
        self._outbox.write()
        self._release_input()

    # ------------------------------------------------------------------ output budget

    @property
    def unsent_bytes(self) -> int:
        """Encoded reply bytes not yet on the socket (``Outbox.unsent_bytes``)."""
        return self._outbox.unsent_bytes

    def _over_budget(self) -> bool:
        """Whether unsent replies exceed ``OUTPUT_BUDGET`` (then requests wait until they drain)."""
        return self.unsent_bytes > OUTPUT_BUDGET

    def _hold_input(self) -> None:
        if not self._input_held:
            self._input_held = True
            self.output_holds += 1
            self._update_reading()

    def _release_input(self) -> None:
        """Handle the requests left in the decoder once the output budget has room again."""
        if self._input_held and not self._over_budget() and (
                self.state is ConnState.OPEN or self.state is ConnState.HANDSHAKE):
            self._input_held = False
            self._update_reading()
            asyncio.get_running_loop().call_soon(self._handle_input)

    def reply(self, request_id: int, body: dict[str, Any]) -> None:
        self.send(reply_message(request_id, body))

    def error(self, request_id: int, code: ErrorCode, text: str) -> None:
        self.send(error_message(request_id, code, text))

    # ------------------------------------------------------------------ lifecycle

    def close(self, reason: str) -> None:
        """Flush what is queued and close the connection (idempotent)."""
        if self.state is ConnState.CLOSING or self.state is ConnState.CLOSED:
            return
        self._flush()
        self._close_reason = reason
        self._move(ConnState.CLOSING)
        if self._transport is not None:
            self._transport.close()

    def abort(self) -> None:
        """Drop the connection without flushing (shutdown, for peers that stopped reading)."""
        if self._transport is not None and self.state is not ConnState.CLOSED:
            self._close_reason = self._close_reason or "shutdown"
            self._transport.abort()

    def fail_connection(self, code: ErrorCode, message: str) -> None:
        """Send an ``error`` event and close: the stream cannot go on."""
        _log.info("protocol_error", conn=self.conn_id, code=code.value, message=message)
        self.send_event(Event.ERROR, {"code": code.value, "message": message})
        self.close(f"{code.value}: {message}")

    def _move(self, state: ConnState) -> None:
        if state not in _MOVES[self.state]:
            raise RuntimeError(f"connection {self.conn_id}: {self.state.value} -> {state.value}")
        self.state = state

    def _on_timer(self) -> None:
        """The handshake deadline, then (when configured) the idle deadline."""
        self._timer = None
        if self.state is ConnState.HANDSHAKE:
            self.fail_connection(
                ErrorCode.TIMEOUT, f"no hello within {self._settings.handshake_timeout:g} s"
            )
            return
        idle = self._settings.idle_timeout
        if self.state is not ConnState.OPEN or idle <= 0:
            return
        loop = asyncio.get_running_loop()
        quiet = loop.time() - self._last_input
        if quiet >= idle and self.inflight == 0:
            self.fail_connection(ErrorCode.TIMEOUT, f"idle for {idle:g} s")
            return
        self._timer = loop.call_later(max(idle - quiet, idle if self.inflight else 0.0),
                                      self._on_timer)

    def begin(self) -> None:
        """Count one more request that will be answered later (``finish``)."""
        self.inflight += 1
        if self.inflight >= self._settings.max_inflight:
            self._update_reading()

    def _end(self) -> None:
        self.inflight -= 1
        # Answering a parked request is activity too: the idle clock restarts (SPEC: TIMEOUT).
        self._last_input = asyncio.get_running_loop().time()
        if self._reading_paused:
            self._update_reading()

    def _update_reading(self) -> None:
        transport = self._transport
        if transport is None or self.state is ConnState.CLOSED:
            return
        pause = (self._writing_paused or self._input_held
                 or self.inflight >= self._settings.max_inflight)
        if pause and not self._reading_paused:
            self._reading_paused = True
            self.read_pauses += 1
            transport.pause_reading()
        elif not pause and self._reading_paused:
            self._reading_paused = False
            if self.state is ConnState.OPEN or self.state is ConnState.HANDSHAKE:
                transport.resume_reading()

    # ------------------------------------------------------------------ dispatch

    def _on_message(self, message: Any, now: int) -> None:
        request_id = request_id_of(message)
        if request_id is None:
            self.fail_connection(
                ErrorCode.BAD_FRAME, "expected a request [0, request_id, op, args]"
            )
            return
        if self.state is ConnState.HANDSHAKE and message[2] != HELLO.name:
            self.error(request_id, ErrorCode.HANDSHAKE_REQUIRED, "send hello first")
            return
        try:
            op, request = parse_request_body(message)
        except ProtocolError as exc:
            self.error(request_id, exc.code, exc.message)
            return
        if isinstance(request, Hello):
            self._hello(request_id, request, now)
            return
        if self.inflight >= self._settings.max_inflight:
            self.error(request_id, ErrorCode.OVERLOADED,
                       f"more than {self._settings.max_inflight} requests in flight")
            return
        try:
            handle(self.broker, self, request_id, op, request, now)
        except Exception as exc:
            _log.exception("internal_error", conn=self.conn_id, op=op, error=repr(exc))
            self.error(request_id, ErrorCode.INTERNAL, f"internal error: {type(exc).__name__}")

    def _hello(self, request_id: int, hello: Hello, now: int) -> None:
        if self.state is not ConnState.HANDSHAKE:
            self.error(request_id, ErrorCode.HANDSHAKE_REQUIRED, "hello was already done")
            return
        if hello.version != PROTOCOL_VERSION:
            self.error(request_id, ErrorCode.UNSUPPORTED_VERSION,
                       f"this broker speaks protocol version {PROTOCOL_VERSION}")
            self.close(f"unsupported version {hello.version}")
            return
        host = peer_host(self._transport.get_extra_info("peername") if self._transport else None)
        if not token_matches(self._settings.token, hello.token):
            self.hooks.handshakes().record_failure(host, asyncio.get_running_loop().time())
            self.error(request_id, ErrorCode.UNAUTHORIZED, "missing or wrong token")
            self.close("unauthorized")
            return
        if self._settings.token is not None:
            self.hooks.handshakes().record_success(host)
        self._move(ConnState.OPEN)
        self.client_name = hello.client
        if self.worker is not None:
            self.worker.client = hello.client
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._settings.idle_timeout > 0:
            self._timer = asyncio.get_running_loop().call_later(
                self._settings.idle_timeout, self._on_timer
            )
        self.reply(request_id, self.hooks.hello_body(now))

    def reply_after_commit(self, request_id: int, body: dict[str, Any],
                           not_durable: str = NOT_DURABLE) -> None:
        """Send ``body`` once everything the core changed so far is committed; if that
        transaction fails, ``JOURNAL_FAILURE`` with the text ``not_durable`` instead."""
        self.begin()
        self._outbox.promise(request_id, reply_message(request_id, body), not_durable)

    def error_after_commit(self, request_id: int, code: ErrorCode, text: str) -> None:
        """``reply_after_commit`` for an error (a "no such job" a crash could revert)."""
        self.begin()
        self._outbox.promise(request_id, error_message(request_id, code, text), NOT_DURABLE)

    def _answered(self, frames: list[bytes], size: int, count: int) -> None:
        """A commit batch's promised replies are settled: send them."""
        self.inflight -= count
        if self.state is not ConnState.CLOSING and self.state is not ConnState.CLOSED:
            self._outbox.queue_frames(frames, size)
            if not self._in_batch and self._flush_handle is None:
                self._flush_handle = asyncio.get_running_loop().call_soon(self._flush)
        if self._reading_paused:
            self._update_reading()

    # ------------------------------------------------------------------ parked requests

    def finish_reserve(self, request_id: int, jobs: list[ReservedJob]) -> None:
        """Answer a parked reserve (woken with jobs, timed out or drained), written at once."""
        self._end()
        self.reply(request_id, {"jobs": jobs})
        if not self._in_batch:  # not behind the commit handed over next (bench/README.md)
            self._flush()

    def finish_wait(self, request_id: int, job_id: str, queue: str | None) -> None:
        """Answer a parked wait (its job finished or its time ran out)."""
        self._end()
        reply_job(self.broker, self, request_id, job_id, queue, f"job {job_id!r} was removed",
                  woken=True)
