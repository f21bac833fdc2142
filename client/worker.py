"""The worker runtime: reserve in batches, run handlers, acknowledge in batches, extend leases.

Theory of operation
-------------------
``Worker.run()`` owns a ``TaskGroup`` with ``concurrency`` runner tasks, one reserve task and
one lease task. Every job the worker holds is in ``_held`` (keyed by lease token) from its
reservation until the broker *answered* its outcome: while it waits in ``_ready`` for a
runner, while it runs, and while its ack/fail is buffered or in flight (then its token is also
in ``_settling``). Jobs without an outcome yet (``held - settling``) count against
``concurrency`` plus the prefetch allowance (``client/prefetch.py``: jobs reserved ahead of free
runners, sized by the handlers' measured speed); every held job counts against ``max_held``
(default ``8 * concurrency``), so the outcomes the broker has not answered yet are bounded too:
when acks are slow (a slow disk, a busy broker), the worker stops reserving instead of piling
up finished jobs.

* **Reserving** (``client/reserving.py``): the reserve task asks for ``free = min(concurrency +
  allowance - (held - settling), max_held - held) - asked`` jobs with a long-poll ``reserve``, at
  most two requests at once. The jobs of a reply go to ``_ready`` and one idle runner is woken; one
  loop iteration later, one more per job still in ``_ready`` (so handlers that suspend all start,
  and handlers that do not run in one runner without futile wake-ups).
* **Running**: a runner takes jobs from ``_ready`` until it is empty, so a burst of fast
  handlers runs without task switches. Async handlers are awaited in the runner; plain ``def``
  handlers run in a thread pool (``client/handlers.py``). A runner that runs out of jobs reports
  how many it ran back to back and for how long, which sizes the prefetch. The job's
  ``timeout`` and the worker's ``job_timeout`` cancel the handler (``handlers.run_limited``).
* **Outcomes** (``client/outcomes.py``): outcomes that finish in the same loop iteration go in
  one ``ack`` / ``fail`` request. The runner's slot frees at once, but the job stays held (and
  its lease extended) until the reply arrives; then it leaves ``_held``. ``on_completed`` /
  ``on_failed`` run only when the broker's reply says the outcome was recorded.
* **Leases** (``client/leases.py``): one task extends, in one batched ``extend``, every held
  job past half its lease, including jobs whose outcome is not answered yet (a slow ack must not
  let the lease expire and the job be redelivered). The worker tells it which jobs it holds.
* **Broker restarts**: the connection reconnects by itself. Leases from before a restart are
  stale, so late outcomes get ``STALE_LEASE`` / ``NOT_FOUND``: logged, counted, never raised.
  A ``draining`` event pauses reserving until the connection comes back.
* **Shutdown** (``stop()``, SIGTERM, SIGINT): stop reserving; wait out outstanding reserves
  (their jobs run too); give running jobs ``grace`` seconds, then cancel the rest and hand each
  unfinished job back with ``release`` (no attempt counted; a job whose outcome was sent is not
  handed back); wait (bounded) for outcome replies; close. A second signal skips the grace. A
  handler cancelled by the per-job timeout is not handed back: that attempt fails.

Invariants:
1. A job is in ``_held`` from its reservation until the broker answered its outcome (ack, fail
   or hand-back), or the request carrying it was lost with the connection; it is in
   ``_settling`` from the moment its outcome is buffered until then. ``settling ⊆ held``,
   ``len(_held) - len(_settling) + asked <= concurrency + allowance`` (the allowance when the
   last reserve was sent: it may shrink later) and ``len(_held) + asked <= max_held``
   (``asked``: jobs asked for by reserves not answered yet).
2. Each held job gets exactly one outcome from this worker: ack, fail or hand-back (a job in
   ``_settling`` gets no other).
3. Callbacks fire only for outcomes whose per-item result was ``OK``.
"""

from __future__ import annotations

import asyncio
import os
import socket
import time
from collections import deque
from collections.abc import Coroutine, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Final, TypeVar

from client.connection import Connection
from client.context import JobContext
from client.endpoint import DEFAULT_URL
from client.errors import ConnectionClosedError, JobwireError, RateLimited
from client.events import CompletedCallback, EventCallbacks, FailedCallback, WorkerStatistics
from client.handlers import Handler, HandlerTable, run_limited
from client.leases import LeaseKeeper
from client.log import get_logger
from client.outcomes import OutcomeBuffer, describe_exception
from client.prefetch import Prefetch
from client.reserving import Reserver
from client.serializers import Serializer, get_serializer
from client.signals import install_stop_signals
from client.worker_shutdown import ShutdownSteps
from protocol.checks import MAX_WAIT_MS
from protocol.replies import ReservedJob

log = get_logger("jobwire.worker")
_T = TypeVar("_T")

HELD_PER_SLOT: Final = 8
"""Default ``max_held`` per ``concurrency``: throughput against latency (``bench/README.md``)."""


class Worker(ShutdownSteps):
    """Runs handlers for jobs from one or more queues.

    Args:
        url: the broker URL (``jobwire://[token@]host[:port]``).
        queues: a queue name or names, in priority order (earlier queues are served first).
        handler: one function for every job, or ``{job_name: function}``. ``async def``
            functions run on the event loop; plain ``def`` ones in a thread pool.
        concurrency: most jobs handled at once.
        prefetch: jobs reserved ahead of free runners, past ``concurrency``: ``None``
            (default) sizes it by the handlers' measured speed, so a prefetched job waits about
            2 ms at most (fast handlers get up to ``concurrency``, slow ones none:
            ``client/prefetch.py``); a number fixes it (``0``: never ahead).
        max_held: most jobs held at once, counting finished ones whose outcome the broker has
            not answered yet (default ``8 * concurrency``; at least ``concurrency``). Beyond it
            the worker stops reserving until outcome replies come back, so slow acks cannot
            pile up.
        lease: lease length in seconds to ask for (default: each job's own lease).
        job_timeout: seconds a handler may run before it is cancelled and the attempt fails
            (a job's own ``timeout`` applies too: the earlier limit wins).
        grace: seconds running handlers get to finish on shutdown.
        poll_wait: seconds one long-poll ``reserve`` waits for jobs.
        serializer: how payloads and results are encoded (default msgpack).
        handle_signals: stop gracefully on SIGTERM/SIGINT while ``run()`` runs (main thread only).
        **connection_options: passed to ``Connection`` (``token``, ``ssl``, ...).
    """

    def __init__(
        self,
        url: str = DEFAULT_URL,
        queues: str | Sequence[str] = "default",
        handler: Handler | Mapping[str, Handler] | None = None,
        *,
        concurrency: int = 10,
        prefetch: int | None = None,
        max_held: int | None = None,
        lease: float | None = None,
        job_timeout: float | None = None,
        grace: float = 30.0,
        poll_wait: float = 1.0,
        serializer: Serializer | str | None = None,
        handle_signals: bool = True,
        **connection_options: Any,
    ) -> None:
        self._handlers = HandlerTable(handler)
        if concurrency < 1:
            raise ValueError("concurrency must be >= 1")
        self.queues = (queues,) if isinstance(queues, str) else tuple(queues)
        if not self.queues:
            raise ValueError("Worker needs at least one queue")
        self.concurrency = concurrency
        self.prefetch = Prefetch(prefetch, concurrency)
        self.max_held = HELD_PER_SLOT * concurrency if max_held is None else max_held
        if self.max_held < concurrency:
            raise ValueError("max_held must be >= concurrency")
        self.lease_ms = None if lease is None else max(100, round(lease * 1000))
        self.job_timeout = job_timeout
        self.grace = grace
        # At least 100 ms: an empty reply to a shorter poll would make the reserve loop spin.
        self.poll_wait_ms = max(100, min(MAX_WAIT_MS, round(poll_wait * 1000)))
        self.serializer = get_serializer(serializer)
        self.handle_signals = handle_signals
        # hostname:pid by default, so `jobwire workers` tells workers apart (client_name= wins).
        connection_options.setdefault("client_name", f"{socket.gethostname()}:{os.getpid()}")
        self.connection = Connection(url, **connection_options)
        self.connection.on_event(self._on_connection_event)

        self._loop: asyncio.AbstractEventLoop | None = None
        self._held: dict[int, JobContext] = {}
        self._settling: set[int] = set()
        """Tokens of held jobs whose outcome is buffered or in flight (see invariant 1)."""
        self._leases = LeaseKeeper(self.connection, self.lease_ms, self._outcome_sent)
        self._reserver = Reserver(
            self.connection, self.queues, self.poll_wait_ms, self.lease_ms, room=self._room,
            min_overlap=max(1, concurrency // 4), deliver=self._deliver,
        )
        self._ready: deque[JobContext] = deque()
        self._idle_runners: list[asyncio.Future[None]] = []
        self._rest_scheduled = False
        self._running = 0
        self._stop_requested = asyncio.Event()
        self._idle_wake = asyncio.Event()
        self._lost_connection = False
        self._force = asyncio.Event()
        self._stopped = asyncio.Event()
        self._stopping = False
        self._started = False
        self._executor: ThreadPoolExecutor | None = None
        self.events = EventCallbacks()
        self._outcomes = OutcomeBuffer(self.connection, self.events, self._settled)
        self._handed_back = 0

    # ------------------------------------------------------------------ public API

    def on_completed(self, callback: CompletedCallback) -> CompletedCallback:
        """Call ``callback(job, result)`` once the broker acknowledged a completion (usable as
        a decorator; ``async def`` callbacks run as tasks the worker owns)."""
        self.events.completed.append(callback)
        return callback

    def on_failed(self, callback: FailedCallback) -> FailedCallback:
        """Call ``callback(job, exception)`` once the broker recorded a failed attempt (the job's
        ``is_last_attempt`` tells whether it went to ``failed`` or will be retried)."""
        self.events.failed.append(callback)
        return callback

    def stop(self) -> None:
        """Begin a graceful shutdown; calling it again skips the rest of the grace period.

        Safe from signal handlers and from other threads (it then hops to the worker's loop).
        """
        loop = self._loop
        if loop is not None and not loop.is_closed() and _running_loop() is not loop:
            loop.call_soon_threadsafe(self.stop)
            return
        if self._stop_requested.is_set():
            self._force.set()
        self._stopping = True
        self._stop_requested.set()
        self._reserver.stop()

    async def close(self) -> None:
        """Stop and wait until ``run()`` has returned."""
        self.stop()
        if self._started:
            await self._stopped.wait()

    def statistics(self) -> WorkerStatistics:
        """A frozen snapshot of the worker's counters."""
        o = self._outcomes
        return WorkerStatistics(
            held=len(self._held), settling=len(self._settling), running=self._running,
            completed=o.completed, failed=o.failed, retried=o.retried, refused=o.refused,
            unacknowledged=o.unacknowledged, handed_back=self._handed_back,
            reserve_requests=self._reserver.requests, ack_requests=o.requests,
            extended=self._leases.extended, connection=self.connection.statistics(),
        )

    def call_from_thread(self, coro: Coroutine[Any, Any, _T]) -> _T:
        """Run ``coro`` on the worker's loop from a handler thread and return its result."""
        assert self._loop is not None
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result()

    async def run(self) -> None:
        """Connect (retrying until the broker answers) and process jobs until stopped.

        Raises:
            AuthenticationError: the broker refused the token.
            ConnectionClosedError: the connection closed for good while running (e.g. the
                token was revoked); held jobs were handed back where possible.
            RuntimeError: ``run()`` was already called.
        """
        if self._started:
            raise RuntimeError("a Worker runs once; make a new one")
        self._started = True
        self._loop = asyncio.get_running_loop()
        removers = install_stop_signals(self._on_signal) if self.handle_signals else []
        try:
            connect = asyncio.ensure_future(self.connection.connect(wait=True))
            stop = asyncio.ensure_future(self._stop_requested.wait())
            try:
                await asyncio.wait({connect, stop}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                stop.cancel()
                if not connect.done():  # stopped (or cancelled) before the broker answered
                    connect.cancel()
                    await asyncio.wait({connect})
            if connect.cancelled():
                return
            connect.result()
            if self._handlers.needs_threads:
                self._executor = ThreadPoolExecutor(
                    max_workers=self.concurrency, thread_name_prefix="jobwire-handler"
                )
            log.info("worker started", queues=list(self.queues), concurrency=self.concurrency)
            try:
                async with asyncio.TaskGroup() as group:
                    runners = [group.create_task(self._runner()) for _ in range(self.concurrency)]
                    lease_task = group.create_task(self._leases.run())
                    group.create_task(self._reserver.run())
                    await self._stop_requested.wait()
                    await self._drain(runners)
                    lease_task.cancel()
            finally:
                await self._finish()
        finally:
            for remove in removers:
                remove()
            await self.connection.close()
            if self._executor is not None:
                self._executor.shutdown(wait=False, cancel_futures=True)
            self._stopped.set()
            log.info("worker stopped", **self.statistics().outcome_counts())
        if self._lost_connection:
            raise ConnectionClosedError(
                "the broker connection closed for good"
            ) from self.connection.close_reason

    # ------------------------------------------------------------------ reserving

    def _on_connection_event(self, event: str, body: dict[str, Any]) -> None:
        if event == "draining":
            log.info("broker is draining: pausing reservations until it is back")
            self._reserver.draining = True
        elif event == "connected":
            self._reserver.draining = False
        elif event == "closed" and not self._stopping:
            log.error("connection closed for good; stopping the worker", error=body.get("error"))
            self._lost_connection = True
            self.stop()
        self._reserver.wake()

    def _room(self) -> tuple[int, int]:
        """``(slots, window)`` for the reserver: jobs it may still start, and still hold."""
        held = len(self._held)
        slots = self.concurrency + self.prefetch.allowance - held + len(self._settling)
        return slots, self.max_held - held

    def _deliver(self, jobs: Sequence[ReservedJob]) -> None:
        """Hold freshly reserved jobs and wake idle runners for them (see ``_wake_rest``)."""
        now = time.monotonic()
        conn, loop = self.connection, self._loop
        assert loop is not None
        fresh = [JobContext(reserved, now, conn, loop) for reserved in jobs]
        held = self._held
        for ctx in fresh:
            held[ctx.token] = ctx
        self._ready.extend(fresh)
        self._leases.watch(fresh)
        # One runner now; one per job still waiting an iteration later (a handler suspended).
        # Fast handlers then run in one runner without waking 49 others for nothing.
        if self._wake_idle(1) and len(jobs) > 1 and not self._rest_scheduled:
            self._rest_scheduled = True
            loop.call_soon(self._wake_rest)

    def _wake_rest(self) -> None:
        """An idle runner per job still waiting one iteration after a delivery."""
        self._rest_scheduled = False
        self._wake_idle(len(self._ready))

    def _wake_idle(self, count: int) -> bool:
        """Wake up to ``count`` idle runners; whether there was one."""
        idle = self._idle_runners
        found = bool(idle)
        while count > 0 and idle:
            waiter = idle.pop()
            if not waiter.done():  # a runner cancelled meanwhile is skipped
                waiter.set_result(None)
                count -= 1
        return found

    # ------------------------------------------------------------------ running

    async def _runner(self) -> None:
        """Run jobs from ``_ready`` until cancelled, each in this frame (no coroutine a job)."""
        ready, held, settling = self._ready, self._held, self._settling
        find, start, ack = self._handlers.find, self._handlers.start, self._outcomes.ack
        loop = asyncio.get_running_loop()
        ran, since, report = 0, 0.0, self.prefetch.ran
        while True:
            if not ready:
                if ran:  # a run of jobs back to back ends: its pace sizes the prefetch
                    report(ran, loop.time() - since)
                    ran = 0
                while not ready:
                    waiter: asyncio.Future[None] = loop.create_future()
                    self._idle_runners.append(waiter)
                    try:
                        await waiter
                    except asyncio.CancelledError:
                        if waiter in self._idle_runners:
                            self._idle_runners.remove(waiter)
                        raise
                since = loop.time()
            ctx = ready.popleft()
            ran += 1
            if ctx.token not in held:
                continue
            handler = find(ctx.name)
            if handler is None:
                self._fail(ctx, LookupError(f"no handler for job name {ctx.name!r} on this worker"))
                continue
            try:
                ctx.data = self.serializer.loads(ctx.payload)
            except Exception as exc:
                self._fail(ctx, exc, retry=False, why="payload could not be decoded")
                continue
            self._running += 1
            try:
                call = start(handler, ctx, self._executor)
                if self.job_timeout is None and ctx.timeout_at is None:
                    result = await call  # no limit: no extra coroutine on the hot path
                else:
                    result = await run_limited(call, ctx, self.job_timeout)
            except asyncio.CancelledError:
                task = asyncio.current_task()
                if task is not None and task.cancelling():
                    raise  # shutdown: the job is handed back by _finish
                self._fail(ctx, JobwireError("the handler was cancelled"))
            except RateLimited as exc:
                self._not_now(ctx, exc)
            except Exception as exc:
                self._fail(ctx, exc)
            else:  # completed: the ack is buffered here, not in a method (once per job)
                try:
                    raw = None if result is None else self.serializer.dumps(result)
                except Exception as exc:
                    self._fail(ctx, exc, retry=False, why="result could not be serialized")
                    continue
                ctx.result = result
                token = ctx.token
                if token in held and token not in settling:
                    settling.add(token)
                    ack(ctx, raw)
                    self._slot_freed()
            finally:
                self._running -= 1

    def _fail(
        self, ctx: JobContext, exc: BaseException, *, retry: bool | None = None,
        why: str | None = None,
    ) -> None:
        if ctx.token in self._held and ctx.token not in self._settling:
            self._settling.add(ctx.token)
            text, retry_it, delay_ms = describe_exception(exc, why)
            self._outcomes.fail(ctx, exc, text, retry_it if retry is None else retry, delay_ms)
            self._slot_freed()

    def _not_now(self, ctx: JobContext, exc: RateLimited) -> None:
        if ctx.token in self._held and ctx.token not in self._settling:
            self._settling.add(ctx.token)
            log.debug("job rate limited: released without counting the attempt",
                      job_id=ctx.id, delay=exc.delay, pause_queue=exc.pause_queue)
            self._outcomes.not_now(ctx, round(exc.delay * 1000), exc.pause_queue)
            self._slot_freed()

    def _slot_freed(self) -> None:
        self._reserver.wake()
        if self._stopping and not self._unfinished():
            self._idle_wake.set()

    def _settled(self, jobs: Iterable[JobContext]) -> None:
        """These jobs' outcomes were answered (or lost): no longer held, free for reserving."""
        held, settling = self._held, self._settling
        gone = [ctx for ctx in jobs if held.pop(ctx.token, None) is not None]
        if gone:
            for ctx in gone:
                settling.discard(ctx.token)
            self._leases.forget(gone)
            self._reserver.wake()

    def _outcome_sent(self, ctx: JobContext) -> bool:
        return ctx.token in self._settling

    def _unfinished(self) -> int:
        """Held jobs without an outcome yet (waiting for a runner or running)."""
        return len(self._held) - len(self._settling)


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None

