"""Automatic batching of concurrent ``Queue.add()`` calls into shared ``enqueue`` requests.

Why: one ``enqueue`` of 100 jobs costs the broker one request, one commit and one reply, while
100 one-job requests cost 100 of each; a program that awaits ``add()`` from many coroutines (a
web server enqueueing one job per request) pays the second price unless the client groups them.
Kafka's producer (``linger.ms``) and the NATS clients do the same.

How: the ``AddBatcher`` of a ``Client`` keeps at most one *open* batch per queue name. An
``add()`` joins the open batch of its queue, or opens one; an open batch is sent

- at the end of the loop iteration it was opened in, if fewer than ``max_in_flight`` (4)
  enqueues of that queue are in flight;
- otherwise as soon as one of them is answered (adds arriving meanwhile wait for it, the way the
  broker's group commit makes requests wait for the commit in progress);
- at once when it reaches ``max_jobs`` jobs or ``max_bytes`` bytes.

Each caller still gets its own job id (the reply lists ids in request order) and its own error:

- a job whose payload is over the broker's ``max_payload`` is sent alone, so its
  ``PAYLOAD_TOO_LARGE`` reaches only its caller;
- a batch refused for the shape of one job (``BAD_ARGUMENT``, ``PAYLOAD_TOO_LARGE``: nothing of
  it was created, the request is all-or-nothing) is resent one job per request, so each caller
  gets the answer its job alone gets;
- a refusal of the request as a whole (``QUEUE_FULL``, ``DRAINING``, ``JOURNAL_FAILURE``...) and a
  lost connection go to every caller of the batch, each with its own exception instance.

Two adds with the same ``job_id`` in one batch behave as two sequential adds: the broker creates
the first and reports the second as a duplicate. Durability does not change: the broker answers
an ``enqueue`` after its commit, so every caller returns only once its job is durable.
"""

from __future__ import annotations

import asyncio
from functools import partial
from typing import Any, Final

from client.connection import Connection
from client.errors import BrokerError, JobwireError
from client.options import FRAME_BUDGET, spec_size
from protocol.errors import ErrorCode
from protocol.model import JobSpec
from protocol.operations import Enqueue
from protocol.replies import parse_enqueued

DEFAULT_MAX_JOBS: Final = 1_000
"""Most jobs one automatic batch holds (the broker's ``max_batch`` caps it further)."""

DEFAULT_MAX_BYTES: Final = 256 << 10
"""About the most payload bytes one automatic batch holds (small: a big batch delays its reply)."""

DEFAULT_MAX_IN_FLIGHT: Final = 4
"""Enqueues of one queue in flight before new adds wait for one of them. With one, every add made
while a commit ran waited for that commit, so the disk's fsync tail entered the latency of jobs
added at a steady rate (``latency-500``: every alternating pair favoured 4, e.g. p99 3.8 -> 2.0 ms;
``bench/README.md``, "Enqueues in flight")."""

_RESEND_ALONE: Final = frozenset({ErrorCode.BAD_ARGUMENT, ErrorCode.PAYLOAD_TOO_LARGE})
"""Refusals that may be caused by one job of a batch: its jobs are resent one by one."""

Added = tuple[str, bool]
"""What a caller of ``AddBatcher.add`` gets: the job id and whether it was a duplicate."""


class _Batch:
    """The jobs of one future ``enqueue`` request and their callers' futures."""

    __slots__ = ("futures", "size", "specs")

    def __init__(self) -> None:
        self.specs: list[JobSpec] = []
        self.futures: list[asyncio.Future[Added]] = []
        self.size = 0


class AddBatcher:
    """Groups concurrent one-job enqueues of a ``Connection`` per queue (see the module doc).

    Args:
        connection: the client's connection.
        max_jobs: most jobs per batch.
        max_bytes: about the most bytes per batch.
        max_in_flight: enqueues of one queue sent and not yet answered before new adds wait.
    """

    def __init__(
        self, connection: Connection, *, max_jobs: int = DEFAULT_MAX_JOBS,
        max_bytes: int = DEFAULT_MAX_BYTES, max_in_flight: int = DEFAULT_MAX_IN_FLIGHT,
    ) -> None:
        if max_in_flight < 1:
            raise ValueError("max_in_flight must be >= 1")
        self._conn = connection
        self.max_jobs = max_jobs
        self.max_bytes = max_bytes
        self.max_in_flight = max_in_flight
        self._open: dict[str, _Batch] = {}
        self._in_flight: dict[str, int] = {}  # queue name → enqueues sent and not yet answered

    async def add(self, queue: str, spec: JobSpec) -> Added:
        """Enqueue ``spec`` in ``queue`` as part of a batch; returns once it is committed.

        Raises:
            BrokerError: the broker refused the job (or the whole batch, e.g. ``QUEUE_FULL``).
            ConnectionLostError, ConnectionClosedError, RequestTimeoutError: as ``request``.
        """
        server = self._conn.server
        if server is not None and len(spec.payload) > server.max_payload:
            return _first(await self._conn.request(Enqueue(queue, (spec,))))
        batch = self._open.get(queue)
        if batch is None:
            batch = self._open[queue] = _Batch()
            if self._in_flight.get(queue, 0) < self.max_in_flight:
                asyncio.get_running_loop().call_soon(self._send_open, queue, batch)
        future: asyncio.Future[Added] = asyncio.get_running_loop().create_future()
        batch.specs.append(spec)
        batch.futures.append(future)
        batch.size += spec_size(spec)
        if len(batch.specs) >= self._max_jobs() or batch.size >= self._max_bytes():
            self._send_open(queue, batch)
        return await future

    def _max_jobs(self) -> int:
        server = self._conn.server
        return self.max_jobs if server is None else min(self.max_jobs, server.max_batch)

    def _max_bytes(self) -> int:
        server = self._conn.server
        if server is None:
            return self.max_bytes
        return min(self.max_bytes, int(server.max_frame * FRAME_BUDGET))

    def _send_open(self, queue: str, batch: _Batch) -> None:
        """Send ``batch`` if it is still the open batch of ``queue``."""
        if self._open.get(queue) is not batch:
            return  # already sent (it filled up)
        del self._open[queue]
        live = [i for i, future in enumerate(batch.futures) if not future.done()]  # cancelled
        if not live:
            return
        specs = tuple(batch.specs[i] for i in live)
        futures = [batch.futures[i] for i in live]
        self._in_flight[queue] = self._in_flight.get(queue, 0) + 1
        task = asyncio.ensure_future(self._conn.request(Enqueue(queue, specs)))
        task.add_done_callback(partial(self._answered, queue, specs, futures))

    def _answered(
        self, queue: str, specs: tuple[JobSpec, ...], futures: list[asyncio.Future[Added]],
        done: asyncio.Future[dict[str, Any]],
    ) -> None:
        left = self._in_flight[queue] - 1
        if left:
            self._in_flight[queue] = left
        else:
            del self._in_flight[queue]
        if left < self.max_in_flight:
            waiting = self._open.get(queue)
            if waiting is not None:  # adds that arrived while the pipe was full
                self._send_open(queue, waiting)
        if done.cancelled():
            error: BaseException = asyncio.CancelledError()
        elif (exc := done.exception()) is None:
            _deliver(futures, done.result())
            return
        else:
            error = exc
        if len(specs) > 1 and isinstance(error, BrokerError) and error.code in _RESEND_ALONE:
            for spec, future in zip(specs, futures, strict=True):
                if not future.done():
                    alone = asyncio.ensure_future(self._conn.request(Enqueue(queue, (spec,))))
                    alone.add_done_callback(partial(_settle_one, future))
            return
        for future in futures:
            if not future.done():
                future.set_exception(_copy(error))


def _first(body: dict[str, Any]) -> Added:
    result = parse_enqueued(body)
    return result.ids[0], bool(result.duplicates)


def _deliver(futures: list[asyncio.Future[Added]], body: dict[str, Any]) -> None:
    """Hand each caller its id (the reply's ids are in request order)."""
    try:
        result = parse_enqueued(body)
        if len(result.ids) != len(futures):
            raise ValueError(f"enqueue reply has {len(result.ids)} ids for {len(futures)} jobs")
    except (ValueError, JobwireError) as exc:
        for future in futures:
            if not future.done():
                future.set_exception(_copy(exc))
        return
    duplicates = set(result.duplicates)
    for index, (future, job_id) in enumerate(zip(futures, result.ids, strict=True)):
        if not future.done():
            future.set_result((job_id, index in duplicates))


def _settle_one(future: asyncio.Future[Added], done: asyncio.Future[dict[str, Any]]) -> None:
    if future.done():
        return
    if done.cancelled():
        future.cancel()
    elif (exc := done.exception()) is not None:
        future.set_exception(exc)
    else:
        try:
            future.set_result(_first(done.result()))
        except (ValueError, JobwireError) as error:
            future.set_exception(error)


def _copy(error: BaseException) -> BaseException:
    """A fresh instance of ``error`` per caller (one instance raised in many tasks would mix
    their tracebacks), chained to the same cause."""
    if isinstance(error, BrokerError):
        copy: BaseException = type(error)(error.code, error.message)
    else:
        try:
            copy = type(error)(*error.args)
        except TypeError:
            return error
    copy.__cause__ = error.__cause__
    return copy


__all__ = ["DEFAULT_MAX_BYTES", "DEFAULT_MAX_IN_FLIGHT", "DEFAULT_MAX_JOBS", "AddBatcher"]
