"""The broker daemon: listener, the one deadline timer, long-poll wake-ups, recovery and shutdown.

Theory of operation
-------------------
``run_broker`` opens the journal, rebuilds the core from it, and runs a ``Server`` until a
shutdown is requested. The server owns:

* the listener, which makes one ``Session`` per connection;
* the ``GroupCommitter`` task (in a ``TaskGroup``: it has an owner, and its failure stops the
  broker instead of vanishing);
* one timer, always armed for ``core.next_deadline()``. It fires ``core.tick(now)``, which promotes
  due delayed jobs, expires leases and prunes retention; no job has a timer of its own;
* the ``OpContext`` the op handlers use (``broker.ops``), which holds the parked long-poll
  ``reserve`` and ``wait`` requests (``broker.longpoll``) and the ``draining`` flag;
* the ``SessionHooks`` each connection calls back through (the server's own methods).

After anything that may change the core (a batch of requests from one connection, a timer tick,
a closed connection), ``after_ops`` hands the core's newly ready queues to the reserve waiters,
its newly finished jobs to the job waiters, and re-arms the timer. Connections ask for it through
``after_ops_soon``: once per event-loop iteration for all of them, so a client that writes each
request in its own segment (one request per read) does not pay it per request. Every op that
changed state registers with the committer (``after_commit`` when its reply waits for
durability, ``wake`` when nothing waits: reservations, ticks, released leases), so the next
transaction writes it.

Shutdown (``request_shutdown``; SIGTERM and SIGINT call it) is one sequence, run once however often
it is requested: stop accepting → ``draining`` event to every connection (enqueues now get
``DRAINING``, reserves get nothing) → wait up to ``shutdown_grace`` for workers to ack the jobs they
hold → release the leases still held → commit everything → checkpoint → close connections → close
the journal.
"""

from __future__ import annotations

import asyncio
import random
import secrets
import signal
import time
from collections.abc import Callable
from importlib.metadata import PackageNotFoundError, version
from typing import Any, Final

from broker.auth import FailureThrottle, exposure_warning
from broker.committer import GroupCommitter
from broker.config import Settings
from broker.core import Core
from broker.core_config import core_config
from broker.integrity import open_journal
from broker.journal import Journal, JournalError, SyncMode
from broker.log import get_logger
from broker.observe import Observation
from broker.ops import OpContext
from broker.session import OUTPUT_BUDGET, Session, SessionHooks
from broker.tls import server_ssl_context
from protocol.checks import MAX_BATCH
from protocol.messages import PROTOCOL_VERSION, Event


def _version() -> str:
    try:
        return version("jobwire")
    except PackageNotFoundError:  # a source tree that was never installed
        return "0.0.0"


VERSION: Final = _version()

_log = get_logger("server")
_CLOSE_WAIT_S: Final = 1.0


def wall_clock_ms() -> int:
    """Milliseconds since the Unix epoch: the broker's one clock."""
    return time.time_ns() // 1_000_000


class Server:
    """The running broker: connections, timer, waiters, shutdown.

    Args:
        settings: the broker's settings.
        core: the restored state machine.
        journal: the open journal (the server does not close it; ``run_broker`` does).
        clock: wall-clock milliseconds (injectable for tests).
    """

    def __init__(
        self,
        settings: Settings,
        core: Core,
        journal: Journal,
        *,
        clock: Callable[[], int] = wall_clock_ms,
    ) -> None:
        self.settings = settings
        self.core = core
        self.journal = journal
        self.observe = Observation(core, settings, clock)
        self.committer = GroupCommitter(journal, core.take_changes, observer=self.observe)
        self.now_ms = clock
        self.sessions: dict[int, Session] = {}
        self.ops = OpContext(
            core, self.committer, max_frame=settings.max_frame, output_budget=OUTPUT_BUDGET,
            max_parked=settings.max_parked,
            max_parked_per_connection=settings.max_parked_per_connection,
            clock=clock, broker_stats=self.broker_stats, observe=self.observe,
            connections=lambda: len(self.sessions),
        )
        self.port = 0
        """The port actually bound (useful with ``port=0``)."""
        self._started_ms = clock()
        self._conn_ids = 0
        self._hooks = SessionHooks(
            opened=self.session_opened, closed=self.session_closed, after_ops=self.after_ops_soon,
            hello_body=self.hello_body, now_ms=clock, handshakes=lambda: self.auth_failures,
        )
        self._timer: asyncio.TimerHandle | None = None
        self._timer_deadline: int | None = None
        self._listener: asyncio.AbstractServer | None = None
        self._stop: asyncio.Event | None = None
        self._activity = asyncio.Event()
        self._closed = False
        self._after_ops_due = False
        self.auth_failures = FailureThrottle()
        """Recent failed handshakes per peer host; slows their next attempts down."""

    # ------------------------------------------------------------------ running

    async def run(self, on_ready: Callable[[Server], None] | None = None) -> None:
        """Listen, serve until ``request_shutdown``, then run the shutdown sequence.

        Args:
            on_ready: called once the listener accepts (``self.port`` is then set).

        Raises:
            OSError: the address cannot be bound.
            Exception: the commit loop failed (the journal cannot be written).
        """
        loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        # Bound before the commit task starts so a busy port is a plain OSError; connections
        # accepted meanwhile wait for the loop, and their commits for the task.
        self._listener = await loop.create_server(
            self.new_session, self.settings.host, self.settings.port, backlog=1024,
            ssl=server_ssl_context(self.settings),
            ssl_handshake_timeout=(self.settings.handshake_timeout
                                   if self.settings.tls_cert is not None else None),
        )
        sockets = self._listener.sockets
        self.port = sockets[0].getsockname()[1] if sockets else self.settings.port
        async with asyncio.TaskGroup() as tasks:
            commit_task = tasks.create_task(self.committer.run(), name="jobwire-commit")
            try:
                _log.info("listening", host=self.settings.host, port=self.port)
                # Persist what Core.restore changed (attempts of jobs active at the crash).
                self.committer.wake()
                self.after_ops()
                if on_ready is not None:
                    on_ready(self)
                await self._stop.wait()
                await self._shutdown()
            finally:
                commit_task.cancel()

    def request_shutdown(self) -> None:
        """Start the shutdown sequence (safe to call any number of times, from a signal handler)."""
        if self._stop is not None and not self._stop.is_set():
            _log.info("shutdown_requested")
            self._stop.set()

    async def _shutdown(self) -> None:
        loop = asyncio.get_running_loop()
        started = loop.time()
        _log.info("shutdown_started", connections=len(self.sessions))
        self.ops.draining = True
        if self._listener is not None:
            self._listener.close()
        for session in list(self.sessions.values()):
            session.send_event(Event.DRAINING, {})
        self.ops.parking.answer_reserves()
        grace_end = started + self.settings.shutdown_grace
        await self._wait_until(lambda: not self.sessions or self._leases_held() == 0, grace_end)
        now = self.now_ms()
        released = 0
        for session in list(self.sessions.values()):
            released += self.core.release_owner(session.conn_id, now)
        if released:
            self.committer.wake()
        self.after_ops()
        self.ops.parking.answer_waits()  # answered by the final commit below
        failure: JournalError | None = None
        try:
            await self.committer.flush()
            await self.journal.checkpoint(truncate=True)
        except JournalError as exc:  # still close every connection; then report it
            _log.error("journal_failure", during="shutdown", error=str(exc))
            failure = exc
        self._closed = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        for session in list(self.sessions.values()):
            session.close("shutdown")
        await self._wait_until(lambda: not self.sessions, loop.time() + _CLOSE_WAIT_S)
        for session in list(self.sessions.values()):
            session.abort()
        _log.info("shutdown_complete", released_leases=released,
                  seconds=round(loop.time() - started, 3), clean=failure is None)
        if failure is not None:
            raise failure

    async def _wait_until(self, condition: Callable[[], bool], deadline: float) -> None:
        """Wait until ``condition()`` holds or the loop clock passes ``deadline``.

        The condition is re-checked whenever ``_activity`` is set (after requests are handled
        and when a connection closes).
        """
        loop = asyncio.get_running_loop()
        while not condition():
            remaining = deadline - loop.time()
            if remaining <= 0:
                return
            self._activity.clear()
            try:
                await asyncio.wait_for(self._activity.wait(), remaining)
            except TimeoutError:
                return

    def _leases_held(self) -> int:
        return sum(stats.active for stats in self.core.stats(None, self.now_ms()).values())

    # ------------------------------------------------------------------ sessions

    def new_session(self) -> Session:
        """The protocol of a new connection (the listener makes one per accept)."""
        self._conn_ids += 1
        return Session(self.ops, self._hooks, self.settings, self._conn_ids)

    def session_opened(self, session: Session) -> bool:
        """Register a new connection; False if it is over ``max_connections`` (or shutting down)."""
        if self.ops.draining or len(self.sessions) >= self.settings.max_connections:
            return False
        self.sessions[session.conn_id] = session
        session.worker = self.observe.workers.open(session.conn_id, "", session.peer,
                                                   self.now_ms())
        _log.info("connection_opened", conn=session.conn_id, peer=session.peer)
        return True

    def session_closed(self, session: Session, reason: str) -> None:
        """Forget a closed connection: drop its parked requests, give back the jobs it held."""
        if self.sessions.pop(session.conn_id, None) is None:
            _log.info("connection_refused", conn=session.conn_id, peer=session.peer,
                      reason=reason)
            return
        self.ops.parking.drop(session)
        self.observe.connection_closed(session.conn_id)
        released = 0
        if not self._closed:
            released = self.core.release_owner(session.conn_id, self.now_ms())
            if released:
                self.committer.wake()
                self.after_ops()
        self._activity.set()
        _log.info("connection_closed", conn=session.conn_id, peer=session.peer,
                  client=session.client_name, reason=reason, released_jobs=released)

    def hello_body(self, now: int) -> dict[str, Any]:
        """The body of the reply to a successful ``hello``."""
        return {
            "version": PROTOCOL_VERSION,
            "server": f"jobwire/{VERSION}",
            "now": now,
            "max_frame": self.settings.max_frame,
            "max_payload": self.settings.max_payload,
            "max_batch": MAX_BATCH,
            "max_inflight": self.settings.max_inflight,
        }

    def broker_stats(self, now: int) -> dict[str, Any]:
        """Broker-wide figures for the ``stats`` reply."""
        return {
            "version": VERSION,
            "connections": len(self.sessions),
            "uptime_ms": now - self._started_ms,
            "draining": self.ops.draining,
        }

    # ------------------------------------------------------------------ timer and wake-ups

    def after_ops(self) -> None:
        """Wake waiters for what the core reports ready or finished, and re-arm the timer."""
        self._activity.set()
        ready = self.core.take_ready()
        finished = self.core.take_finished()
        if ready or finished:
            self.ops.parking.wake(ready, finished)
        self._arm_timer()

    def after_ops_soon(self) -> None:
        """``after_ops`` at the end of this event-loop iteration (once, however many reads of
        however many connections ask for it meanwhile): the wake-ups' replies go out one
        iteration later; replies that wait for a commit wait for it as before."""
        if not self._after_ops_due:
            self._after_ops_due = True
            asyncio.get_running_loop().call_soon(self._after_ops_now)

    def _after_ops_now(self) -> None:
        self._after_ops_due = False
        self.after_ops()

    def _arm_timer(self) -> None:
        deadline = self.core.next_deadline()
        if deadline == self._timer_deadline and (deadline is None or self._timer is not None):
            return
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._timer_deadline = deadline
        if deadline is None or self._closed:
            return
        delay_ms = max(0, deadline - self.now_ms() + 1)  # +1: never wake a hair too early
        self._timer = asyncio.get_running_loop().call_later(delay_ms / 1000, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        self._timer_deadline = None
        self.core.tick(self.now_ms())
        self.committer.wake()
        self.after_ops()


def _log_loop_exception(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
    """Route errors the event loop catches (in protocol callbacks) to the structured log."""
    exc = context.get("exception")
    _log.error("internal_error", message=context.get("message"),
               error=repr(exc) if exc is not None else None,
               exc_info=exc if isinstance(exc, BaseException) else None)


async def run_broker(
    settings: Settings,
    *,
    on_ready: Callable[[Server], None] | None = None,
    handle_signals: bool = True,
) -> None:
    """Open the journal, recover, serve until SIGTERM/SIGINT (or ``request_shutdown``), shut down.

    Args:
        settings: the broker's settings.
        on_ready: called with the server once it accepts connections.
        handle_signals: install SIGTERM/SIGINT handlers that start the graceful shutdown.

    Raises:
        OSError: the data directory or the address is unusable.
        Exception: the journal failed to open, load or write.
    """
    loop = asyncio.get_running_loop()
    _log.info("starting", version=VERSION, settings=settings.redacted())
    exposed = exposure_warning(settings.host, settings.token)
    if exposed is not None:
        _log.warning("no_token", host=settings.host, message=exposed)
    signals = (signal.SIGTERM, signal.SIGINT) if handle_signals else ()
    stop_early = asyncio.Event()  # a signal during recovery: stop once the journal is consistent
    for signum in signals:
        loop.add_signal_handler(signum, stop_early.set)
    try:
        await _recover_and_serve(settings, stop_early, signals, on_ready)
    finally:
        for signum in signals:
            loop.remove_signal_handler(signum)


async def _recover_and_serve(
    settings: Settings,
    stop_early: asyncio.Event,
    signals: tuple[signal.Signals, ...],
    on_ready: Callable[[Server], None] | None,
) -> None:
    loop = asyncio.get_running_loop()
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    journal, snapshot = await open_journal(
        settings.journal_path, sync=SyncMode(settings.sync),
        accept_loss=settings.accept_journal_loss, checkpoint_bytes=settings.checkpoint_bytes,
    )
    try:
        core = Core.restore(
            core_config(settings), snapshot, wall_clock_ms(),
            rng=random.Random(), token_base=secrets.randbits(62),
        )
        _log.info("recovered", jobs=len(snapshot.jobs), queues=len(snapshot.queues),
                  seconds=round(time.perf_counter() - started, 3))
        del snapshot
        if stop_early.is_set():
            _log.info("shutdown_complete", before="serving")
            return
        server = Server(settings, core, journal)
        for signum in signals:
            loop.add_signal_handler(signum, server.request_shutdown)
        previous_handler = loop.get_exception_handler()
        loop.set_exception_handler(_log_loop_exception)
        try:
            await server.run(on_ready)
        finally:
            loop.set_exception_handler(previous_handler)
    finally:
        await journal.close()
