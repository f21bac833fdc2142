"""Batched acknowledgements: the worker's outcome buffer.

Handlers that finish in the same event-loop iteration put their outcomes into one buffer; one
``call_soon`` flush sends every buffered completion as a single ``ack`` request, every failure
as a single ``fail`` request and every shutdown hand-back as a single ``release`` request (no
attempt counted), each with one future (never one per job). Requests are not held back while
others are outstanding: the broker's group commit already merges every request that arrives
during a commit into the next transaction, and measurements showed that holding acks back
(Nagle-style) only added a commit's latency to the pipeline. At most ``MAX_IN_FLIGHT`` requests
of each kind are outstanding (a bound on memory, never reached in practice); beyond it outcomes
wait in the buffer and leave with the next reply.

The worker bounds what can pile up here: a job stays held (counted against the worker's
capacity, its lease extended) until its outcome is answered, and every answered or lost item is
reported back with the ``settled`` callback. When the reply arrives, each item's result decides:
``OK`` counts and fires the worker's callbacks; ``STALE_LEASE``/``NOT_FOUND`` (a lease from
before a broker restart, an expired lease, a removed job) is logged and counted as refused. A
request lost with the connection is logged: the broker gives those jobs to a worker again
(at-least-once delivery).
"""

from __future__ import annotations

import asyncio
import time
import traceback
from collections.abc import Callable, Iterable
from functools import partial
from operator import itemgetter
from typing import TYPE_CHECKING, Any, Final

from client.call import PipelinedSender
from client.errors import ConnectionError_, Retry, UnrecoverableError
from client.events import EventCallbacks
from client.log import get_logger
from protocol.checks import MAX_ERROR_LEN
from protocol.errors import ErrorCode
from protocol.model import AckItem, FailItem, JobState, ReleaseItem, new_tuple
from protocol.operations import Ack, Fail, Release
from protocol.replies import OK, Outcome, parse_outcomes

if TYPE_CHECKING:
    from client.context import JobContext

log = get_logger("jobwire.worker")

REFUSED_CODES: Final = frozenset({ErrorCode.STALE_LEASE, ErrorCode.NOT_FOUND})
MAX_IN_FLIGHT: Final = 64
"""Outstanding requests of each kind (``ack``, ``fail``, ``release``) at most; the rest waits."""
_HEAD: Final = 2_000
"""Characters of an over-long error text kept from its start (the rest from its end)."""


def describe_exception(exc: BaseException, why: str | None = None) -> tuple[str, bool, int | None]:
    """How a handler's exception is reported to the broker.

    Args:
        exc: what the handler raised.
        why: a prefix saying what the worker was doing (e.g. decoding the payload).

    Returns:
        ``(error_text, retry, delay_ms)``: the text is ``"Type: message"`` then the traceback,
        cut to the protocol's limit; ``Retry`` asks for its delay, ``UnrecoverableError``
        for no retry.
    """
    retry, delay_ms = True, None
    if isinstance(exc, Retry):
        delay_ms = None if exc.delay is None else round(exc.delay * 1000)
        summary = f"Retry: {exc.reason}"
    else:
        retry = not isinstance(exc, UnrecoverableError)
        summary = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    if why:
        summary = f"{why}: {summary}"
    text = summary
    if exc.__traceback__ is not None and not isinstance(exc, Retry):
        text += "\n\n" + "".join(traceback.format_exception(exc)).rstrip()
    if len(text) > MAX_ERROR_LEN:
        tail = MAX_ERROR_LEN - _HEAD - 20
        text = text[:_HEAD] + "\n[... cut ...]\n" + text[-tail:]
    return text, retry, delay_ms


_COMPLETED: Final = (OK, JobState.COMPLETED.value)
"""An ``ack`` item's result as the broker sends it when the job was completed."""
_first: Final = itemgetter(0)


def _all_completed(future: asyncio.Future[dict[str, Any]], count: int) -> bool:
    """Whether an ``ack`` reply answers each of its ``count`` items with ``["OK", "completed"]``
    (then ``parse_outcomes`` would give ``count`` such outcomes: nothing else to look at)."""
    if future.cancelled() or future.exception() is not None:
        return False
    results = future.result().get("results")
    return type(results) is tuple and len(results) == count and (
        results.count(_COMPLETED) == count
    )


class OutcomeBuffer:
    """Buffers acks and fails and sends each kind as one request per loop iteration.

    Args:
        connection: the worker's connection.
        events: the worker's ``on_completed``/``on_failed`` callbacks.
        settled: called with the jobs of each request whose outcomes the broker answered
            (accepted or refused), or that was lost; the worker then stops holding them.
    """

    __slots__ = (
        "_acks", "_acks_out", "_connection", "_events", "_fails", "_fails_out",
        "_flush_scheduled", "_in_flight", "_releases", "_releases_out", "_settled", "completed",
        "failed", "refused", "released", "requests", "retried", "unacknowledged",
    )

    def __init__(
        self, connection: PipelinedSender, events: EventCallbacks,
        settled: Callable[[Iterable[JobContext]], None] = lambda jobs: None,
    ) -> None:
        self._connection = connection
        self._events = events
        self._settled = settled
        self._acks: list[tuple[JobContext, AckItem]] = []
        self._fails: list[tuple[JobContext, FailItem, BaseException]] = []
        self._releases: list[tuple[JobContext, ReleaseItem]] = []
        self._flush_scheduled = False
        self._in_flight: set[asyncio.Future[dict[str, Any]]] = set()
        self._acks_out = 0
        self._fails_out = 0
        self._releases_out = 0
        self.completed = 0
        self.failed = 0
        self.released = 0
        """Jobs handed back that the broker confirmed (waiting again, attempt not counted)."""
        self.retried = 0
        self.refused = 0
        self.unacknowledged = 0
        self.requests = 0

    def ack(self, ctx: JobContext, result: bytes | None) -> None:
        """Buffer a completion."""
        self._acks.append((ctx, new_tuple(AckItem, (ctx.id, ctx.token, result))))
        if not self._flush_scheduled:  # self._schedule(), inlined: once per job
            self._flush_scheduled = True
            asyncio.get_running_loop().call_soon(self.flush)

    def fail(
        self, ctx: JobContext, exc: BaseException, text: str, retry: bool, delay_ms: int | None
    ) -> None:
        """Buffer a failed attempt."""
        self._fails.append((ctx, FailItem(ctx.id, ctx.token, text, retry, delay_ms), exc))
        self._schedule()

    def hand_back(self, ctx: JobContext) -> None:
        """Buffer a shutdown hand-back: ``release`` with no delay, so the job is waiting again
        at once and its attempt is not counted; no callbacks fire."""
        self._releases.append((ctx, ReleaseItem(ctx.id, ctx.token)))
        self._schedule()

    def not_now(self, ctx: JobContext, delay_ms: int, pause_queue: bool) -> None:
        """Buffer a "not now" (``RateLimited``): ``release`` after ``delay_ms``, the attempt not
        counted, optionally pausing the job's queue for as long; no callbacks fire."""
        self._releases.append((ctx, ReleaseItem(ctx.id, ctx.token, delay_ms, pause_queue)))
        self._schedule()

    def _schedule(self) -> None:
        if not self._flush_scheduled:
            self._flush_scheduled = True
            asyncio.get_running_loop().call_soon(self.flush)

    def flush(self) -> None:
        """Send what is buffered, unless ``MAX_IN_FLIGHT`` requests of that kind are out
        (then it leaves with the next reply). Batches are cut at the broker's ``max_batch``."""
        self._flush_scheduled = False
        conn = self._connection
        max_batch = conn.server.max_batch if conn.server else 10_000
        if self._acks and self._acks_out < MAX_IN_FLIGHT:
            acks, self._acks = self._acks, []
            for start in range(0, len(acks), max_batch):
                chunk = acks[start:start + max_batch]
                if self._send(Ack(tuple([item for _, item in chunk])),
                              partial(self._on_acked, chunk), (ctx for ctx, _ in chunk)):
                    self._acks_out += 1
        if self._fails and self._fails_out < MAX_IN_FLIGHT:
            fails, self._fails = self._fails, []
            for start in range(0, len(fails), max_batch):
                fchunk = fails[start:start + max_batch]
                if self._send(Fail(tuple(item for _, item, _ in fchunk)),
                              partial(self._on_failed, fchunk), (ctx for ctx, _, _ in fchunk)):
                    self._fails_out += 1
        if self._releases and self._releases_out < MAX_IN_FLIGHT:
            releases, self._releases = self._releases, []
            for start in range(0, len(releases), max_batch):
                rchunk = releases[start:start + max_batch]
                if self._send(Release(tuple(item for _, item in rchunk)),
                              partial(self._on_released, rchunk), (ctx for ctx, _ in rchunk)):
                    self._releases_out += 1

    def _send(
        self, request: Ack | Fail | Release, on_reply: Any, jobs: Iterable[JobContext]
    ) -> bool:
        count = len(request.items)
        try:
            future = self._connection.request_nowait(request)
        except ConnectionError_ as exc:
            self._lost(count, exc)
            self._settled(jobs)
            return False
        self.requests += 1
        self._in_flight.add(future)
        future.add_done_callback(self._in_flight.discard)
        future.add_done_callback(on_reply)
        return True

    def _reply_in(self, request: type[Ack | Fail | Release]) -> None:
        if request is Ack:
            self._acks_out -= 1
        elif request is Fail:
            self._fails_out -= 1
        else:
            self._releases_out -= 1
        if self._acks or self._fails or self._releases:
            self._schedule()

    def _lost(self, count: int, exc: BaseException) -> None:
        self.unacknowledged += count
        log.warning("outcomes not acknowledged: connection lost; the broker will redeliver",
                    count=count, error=str(exc))

    def _results(self, count: int, future: asyncio.Future[dict[str, Any]]) -> list[Outcome] | None:
        if future.cancelled():
            self.unacknowledged += count
            return None
        exc = future.exception()
        if exc is not None:
            self._lost(count, exc)
            return None
        return parse_outcomes(future.result())

    def _refused(self, ctx: JobContext, outcome: Outcome, what: str) -> None:
        self.refused += 1
        if outcome.code in REFUSED_CODES:
            log.info(f"{what} refused: the lease is no longer held (expired, broker restarted "
                     "or job removed)", job_id=ctx.id, code=outcome.code)
        else:
            log.warning(f"{what} refused", job_id=ctx.id, code=outcome.code,
                        message=str(outcome.value))

    def _on_acked(
        self, chunk: list[tuple[JobContext, AckItem]], future: asyncio.Future[dict[str, Any]]
    ) -> None:
        self._reply_in(Ack)
        self._settled(map(_first, chunk))
        events = self._events
        callbacks = events.completed
        if _all_completed(future, len(chunk)):  # the usual reply: no Outcome to parse
            if not callbacks:
                self.completed += len(chunk)
                return
            for ctx, _ in chunk:
                self.completed += 1  # before each callback, which may read statistics()
                events.fire(callbacks, ctx, ctx.result)
            return
        outcomes = self._results(len(chunk), future)
        if outcomes is None:
            return
        completed = 0
        for (ctx, _), outcome in zip(chunk, outcomes, strict=False):
            if outcome[0] == OK:  # outcome.ok, without the property's call
                if callbacks:  # counted before each callback, which may read statistics()
                    self.completed += 1
                    events.fire(callbacks, ctx, ctx.result)
                else:
                    completed += 1
            else:
                self._refused(ctx, outcome, "ack")
        self.completed += completed

    def _on_failed(
        self, chunk: list[tuple[JobContext, FailItem, BaseException]],
        future: asyncio.Future[dict[str, Any]],
    ) -> None:
        self._reply_in(Fail)
        self._settled(ctx for ctx, _, _ in chunk)
        outcomes = self._results(len(chunk), future)
        if outcomes is None:
            return
        events = self._events
        callbacks = events.failed
        for (ctx, _, exc), outcome in zip(chunk, outcomes, strict=False):
            if not outcome.ok:
                self._refused(ctx, outcome, "fail")
                continue
            if outcome.value == "failed":
                self.failed += 1
            else:
                self.retried += 1
            if callbacks:
                events.fire(callbacks, ctx, exc)

    def _on_released(
        self, chunk: list[tuple[JobContext, ReleaseItem]], future: asyncio.Future[dict[str, Any]]
    ) -> None:
        self._reply_in(Release)
        self._settled(ctx for ctx, _ in chunk)
        outcomes = self._results(len(chunk), future)
        if outcomes is None:
            return
        for (ctx, _), outcome in zip(chunk, outcomes, strict=False):
            if outcome.ok:
                self.released += 1
            else:
                self._refused(ctx, outcome, "release")

    async def drain(self, limit: float) -> None:
        """Send everything and wait (at most ``limit`` seconds) for every reply."""
        deadline = time.monotonic() + limit
        while True:
            self.flush()
            remaining = deadline - time.monotonic()
            if not self._in_flight or remaining <= 0:
                return
            await asyncio.wait(set(self._in_flight), timeout=remaining,
                               return_when=asyncio.FIRST_COMPLETED)
