"""The asynchronous producer API: ``Client`` and ``Queue`` (names close to BullMQ's).

::

    async with Client("jobwire://127.0.0.1:7400") as client:
        emails = client.queue("emails", attempts=5, backoff=exponential(2.0))
        job = await emails.add("send", {"to": "ada@example.com"}, priority=1, delay=10)
        print(await job.wait(timeout=60))

A ``Queue`` is a cheap handle (a name, default job options and a serializer); the broker creates
queues on first use. Every call is one request on the client's pipelined connection, so many
concurrent ``add`` calls share one socket and overlap their round trips.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any, Self

from client.batcher import AddBatcher
from client.call import send
from client.connection import Connection
from client.endpoint import DEFAULT_URL, ConnectionStatistics
from client.errors import NotFoundError
from client.job import Job, cancel_call
from client.operations import (
    QueueLimits,
    QueueOperations,
    add_metrics,
    broker_stats_call,
    get_job_call,
    metrics_call,
    more_stats,
    ping_call,
    stats_call,
    stats_page_call,
    workers_call,
)
from client.options import Duration, check_options
from client.schedules import Scheduler, list_call, more, remove_call, scheduler_from_info
from client.serializers import Serializer, get_serializer
from client.watch import EventRouter, EventStream
from protocol.model import JobState
from protocol.operations import TIME, Time
from protocol.replies import JobPage, QueueStats
from protocol.scheduling import SchedulerInfo


class Client:
    """A producer/admin client on one pipelined, self-reconnecting connection.

    Args:
        url: ``jobwire://[token@]host[:port]`` (``jobwires://`` for TLS).
        serializer: ``"msgpack"`` (default), ``"json"``, ``"raw"`` or an object with
            ``dumps``/``loads``; queues inherit it unless given their own.
        batch_adds: group concurrent ``Queue.add()`` calls of one queue into shared ``enqueue``
            requests (``client/batcher.py``; default on). Each caller still gets its own job
            and its own error, and returns only once its job is committed. ``False`` sends
            one request per ``add()``.
        **connection_options: passed to ``Connection`` (``token``, ``ssl``, ``request_timeout``,
            ``connect_timeout``, ``reconnect``, ``client_name``...).
    """

    def __init__(
        self,
        url: str = DEFAULT_URL,
        *,
        serializer: Serializer | str | None = None,
        batch_adds: bool = True,
        **connection_options: Any,
    ) -> None:
        self.connection = Connection(url, **connection_options)
        self.serializer = get_serializer(serializer)
        self.batcher = AddBatcher(self.connection) if batch_adds else None
        self._router: EventRouter | None = None

    async def connect(self, *, wait: bool = False) -> Self:
        """Connect and handshake (see ``Connection.connect``).

        Raises:
            OSError: the broker is unreachable (unless ``wait``).
            AuthenticationError: the token was refused.
        """
        await self.connection.connect(wait=wait)
        return self

    async def close(self) -> None:
        """Close the connection; pending requests fail. Safe to call twice."""
        await self.connection.close()

    async def __aenter__(self) -> Self:
        return await self.connect()

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    def queue(
        self, name: str, *, serializer: Serializer | str | None = None, **defaults: Any
    ) -> Queue:
        """A handle on queue ``name`` whose ``add`` uses ``defaults`` for omitted options.

        Raises:
            TypeError: an unknown option name.
        """
        check_options(defaults)
        return Queue(
            self, name,
            serializer=self.serializer if serializer is None else get_serializer(serializer),
            defaults=defaults,
        )

    async def get_job(
        self, job_id: str, *, serializer: Serializer | str | None = None,
        queue: str | None = None,
    ) -> Job:
        """Fetch a job by id. User ids are unique per queue: ``queue`` picks one (or use
        ``Queue.get_job``); broker-assigned ids need no queue.

        Raises:
            NotFoundError: no such job (never existed, removed, or pruned).
            AmbiguousIdError: no ``queue`` and the id is a job's in several queues.
        """
        ser = self.serializer if serializer is None else get_serializer(serializer)
        call = get_job_call(Job, self.connection, job_id, ser, queue)
        return await send(self.connection, call)

    async def remove_job(self, job_id: str, *, queue: str | None = None) -> JobState:
        """Delete a job (revoking its lease if active). Returns the state it was in.

        Raises:
            NotFoundError: no such job.
            AmbiguousIdError: no ``queue`` and the id is a job's in several queues.
        """
        return await send(self.connection, cancel_call(job_id, queue))

    async def stats(self, queue: str | None = None) -> dict[str, QueueStats]:
        """Counters per queue: every queue (in creation order, fetched page by page), or just
        ``queue``."""
        if queue is not None:
            return await send(self.connection, stats_call(queue))
        gathered: dict[str, QueueStats] = {}
        offset: int | None = 0
        while offset is not None:
            page, total = await send(self.connection, stats_page_call(offset))
            offset = more_stats(gathered, page, total)
        return gathered

    async def broker_stats(self) -> dict[str, Any]:
        """The broker-wide part of the ``stats`` reply (version, connections, uptime)."""
        return await send(self.connection, broker_stats_call())

    def events(
        self, queues: Iterable[str] | None = None, *, kinds: Iterable[str] | None = None,
        serializer: Serializer | str | None = None, max_buffer: int = 10_000,
    ) -> EventStream:
        """Follow job events as the broker commits them (SPEC §8.20, §10.1).

        ``async for event in client.events(["emails"], kinds=["completed", "failed"])`` (or
        ``async with`` it, to unsubscribe on exit). Each item is a ``JobEvent``; a ``lagged``
        event says how many were lost when the consumer fell behind (``None``: unknown, after
        a reconnect).

        Args:
            queues: the queues to follow; ``None`` for every queue.
            kinds: event kinds (``"completed"``, ``"failed"``...); ``None`` for all.
            serializer: decodes ``completed`` results (default: the client's).
            max_buffer: events held for a slow consumer before they turn into ``lagged``.
        """
        if self._router is None:
            self._router = EventRouter(self.connection)
        chosen = self.serializer if serializer is None else get_serializer(serializer)
        return EventStream(self._router, queues, kinds, chosen, max_buffer)

    async def metrics(
        self, queues: Sequence[str] | None = None, *, buckets: bool = False
    ) -> dict[str, Any]:
        """Broker and per-queue metrics (SPEC §8.22): ``{"broker": {...}, "queues": {...}}``.

        Pages through every queue when ``queues`` is ``None``; durations are milliseconds, as
        on the wire.
        """
        out: dict[str, Any] = {"broker": {}, "queues": {}}
        after: str | None = None
        while True:
            after = add_metrics(out, await send(self.connection,
                                                metrics_call(queues, after, buckets)))
            if after is None:
                return out

    async def workers(self, *, include_all: bool = False) -> list[dict[str, Any]]:
        """The connected workers (SPEC §8.23), oldest connection first (every connection with
        ``include_all``)."""
        out: list[dict[str, Any]] = []
        while True:
            page = await send(self.connection, workers_call(include_all, len(out)))
            out += page.workers
            if not page.workers or len(out) >= page.total:
                return out

    async def ping(self) -> int:
        """Round-trip to the broker. Returns the broker's clock (Unix ms)."""
        return await send(self.connection, ping_call())

    async def broker_time(self) -> float:
        """The broker's clock, in Unix seconds like ``time.time()`` (for clock-skew checks)."""
        return TIME.reply(await self.connection.request(Time())) / 1000

    def statistics(self) -> ConnectionStatistics:
        """A frozen snapshot of the connection's counters."""
        return self.connection.statistics()


class Queue(QueueOperations[Job]):
    """A producer/admin handle on one named queue. Get one from ``client.queue(name)``.

    The requests and replies are ``QueueOperations``' (shared with ``SyncQueue``); this class
    sends them on the client's connection.
    """

    __slots__ = ("_batcher", "_conn")

    def __init__(
        self, client: Client, name: str, *, serializer: Serializer, defaults: Mapping[str, Any]
    ) -> None:
        super().__init__(Job, client.connection, name, serializer, defaults)
        self._conn = client.connection
        self._batcher = client.batcher

    async def add(self, name: str, data: Any = None, **options: Any) -> Job:
        """Enqueue one job; returns once the broker has made it durable.

        Args:
            name: the handler name (which function the worker runs).
            data: anything the serializer can encode.
            **options: ``priority`` (int, lower first), ``delay`` (seconds), ``run_at``
                (datetime or Unix seconds), ``attempts``, ``backoff`` (seconds, ``exponential()``,
                ``fixed()`` or a map), ``job_id`` (idempotency key), ``lease`` (seconds),
                ``timeout`` (seconds one attempt may run: the worker cancels the handler, the
                broker fails the attempt if no outcome came), ``remove_on_complete``,
                ``remove_on_fail`` (see ``client.options``).

        Concurrent calls on one queue travel together in one ``enqueue`` request (see
        ``Client(batch_adds=...)``); each still gets its own job and its own error.

        Returns:
            The job; ``job.duplicate`` is true if ``job_id`` already existed in this queue
            (nothing created): the job is then the stored one, with its data, name and state as
            the broker holds them, not this call's (one more round trip, duplicates only).

        Raises:
            BrokerError: e.g. ``QueueFullError``, ``PayloadTooLargeError``, ``DrainingError``.
            ConnectionLostError: the connection dropped; the job may or may not exist (retry
                with a ``job_id`` to be safe).
        """
        request = self.add_request(name, data, options)
        batcher = self._batcher
        if batcher is None:
            job = self.added(request, data, await self._conn.request(request))
        else:
            spec = request.jobs[0]
            job_id, duplicate = await batcher.add(self.name, spec)
            job = self._job(spec, job_id, data, duplicate)
        if job.duplicate:
            await _as_stored(job)
        return job

    async def add_bulk(self, jobs: Iterable[Any]) -> list[Job]:
        """Enqueue many jobs in one round trip (split into several pipelined requests only
        above the broker's batch or frame limits).

        Args:
            jobs: items as ``(name, data)``, ``(name, data, options)``, or maps
                ``{"name": ..., "data": ..., "opts": {...}}`` (options may also sit at the top
                level of the map).

        Returns:
            One ``Job`` per item, in order; a duplicate is the stored job (see ``add``).

        Raises:
            BrokerError: a request was refused; each request is all-or-nothing, and with more
                than one request the earlier ones may have succeeded.
        """
        call = self.add_bulk_call(jobs, self._conn.server)
        conn = self._conn
        added = call.parse(await asyncio.gather(*(conn.request(r) for r in call.requests)))
        await asyncio.gather(*(_as_stored(job) for job in added if job.duplicate))
        return added

    async def get_job(self, job_id: str) -> Job:
        """Fetch this queue's job ``job_id`` with this queue's serializer."""
        return await send(self._conn, self.get_job_call(job_id))

    async def stats(self) -> QueueStats:
        """This queue's counters (all zero for a queue never used)."""
        return await send(self._conn, self.stats_call())

    async def pause(self, *, for_: Duration | None = None) -> None:
        """Stop handing out this queue's jobs (reservations get nothing) until ``resume``.

        Args:
            for_: pause for this many seconds only (or a ``timedelta``): a "not now" pause that
                ends by itself (BullMQ's ``worker.rateLimit``; ``limits().paused_until`` shows
                it; a longer one already running is kept; ``resume`` lifts it early). A broker
                that predates it (SPEC §8.12) pauses until ``resume`` instead.

        Raises:
            BadArgumentError: ``for_`` under 1 ms or over 10 years (broker-checked).
            ValueError: a negative ``for_``.
        """
        await send(self._conn, self.pause_call(for_))

    async def resume(self) -> None:
        """Hand out jobs again after ``pause``."""
        await send(self._conn, self.resume_call())

    async def set_rate_limit(self, max: int, per: Duration) -> QueueLimits:
        """Let at most ``max`` of this queue's jobs start in any window of ``per`` seconds,
        across every worker (enforced by the broker; BullMQ's ``limiter: {max, duration}``).

        Returns:
            The queue's limits after the change.

        Raises:
            BadArgumentError: ``max`` outside 1..1,000,000 or ``per`` outside 1 ms..31 days.
        """
        return await send(self._conn, self.limit_call((max, per)))

    async def clear_rate_limit(self) -> QueueLimits:
        """Remove this queue's rate limit."""
        return await send(self._conn, self.limit_call(False))

    async def set_concurrency(self, limit: int) -> QueueLimits:
        """Let at most ``limit`` of this queue's jobs be active at once, across every worker.

        Raises:
            BadArgumentError: ``limit`` outside 1..1,000,000.
        """
        return await send(self._conn, self.limit_call(None, limit))

    async def clear_concurrency(self) -> QueueLimits:
        """Remove this queue's concurrency limit."""
        return await send(self._conn, self.limit_call(None, False))

    async def limits(self) -> QueueLimits:
        """This queue's rate and concurrency limits and its "not now" pause, if any."""
        return await send(self._conn, self.limit_call(None))

    async def clean(
        self, state: JobState | str, *, older_than: Duration = 0, limit: int | None = None
    ) -> int:
        """Delete jobs in ``state`` (waiting, delayed, completed or failed) older than
        ``older_than`` seconds (by finish time for finished jobs, else creation).

        Returns:
            How many were removed.
        """
        return await send(self._conn, self.clean_call(state, older_than, limit))

    async def failed(self, limit: int = 100, offset: int = 0) -> list[Job]:
        """The dead-letter set: failed jobs, newest first."""
        jobs, _ = await self.failed_page(limit, offset)
        return jobs

    async def failed_page(self, limit: int = 100, offset: int = 0) -> tuple[list[Job], int]:
        """Like ``failed`` and also the total number of failed jobs in the queue."""
        return await send(self._conn, self.failed_page_call(limit, offset))

    async def jobs(
        self, state: Sequence[JobState | str] | JobState | str, *, offset: int = 0,
        limit: int = 100,
    ) -> JobPage:
        """A page of the queue's jobs in ``state`` (one state or several, listed one after the
        other), in each state's order (protocol/SPEC.md §8.19).

        Args:
            state: ``"waiting"`` (run order), ``"delayed"`` (by run time), ``"active"`` (by lease
                deadline), ``"completed"``/``"failed"`` (newest first), or a sequence of them.
            offset: jobs to skip.
            limit: the most jobs (1..1,000; the reply may hold fewer when they would not fit in
                a frame: page on with ``offset + len(page.jobs)``).

        Returns:
            ``JobPage(jobs, total, holders)``: ``JobInfo`` records, how many jobs the queue has
            in those states, and the connection id holding each active job.

        Raises:
            ProtocolError: ``BAD_ARGUMENT`` for an unknown state, a negative offset, a limit
                out of range.
        """
        return await send(self._conn, self.jobs_call(state, offset, limit))

    async def retry_failed(
        self, job_ids: Sequence[str] | None = None, *, limit: int | None = None
    ) -> int:
        """Move failed jobs back to waiting: the given ids, or all (up to ``limit``).

        Returns:
            How many were retried.

        Raises:
            ConflictError: a single given id is not a failed job of this queue.
        """
        return await send(self._conn, self.retry_failed_call(job_ids, limit))

    async def retry_failed_ids(self, job_ids: Sequence[str]) -> tuple[int, list[str]]:
        """Move the given failed jobs back to waiting.

        Returns:
            How many were retried, and the given ids that were not failed jobs of this queue
            (unknown, removed, in another queue or in another state), left alone.
        """
        return await send(self._conn, self.retry_failed_ids_call(job_ids))

    async def remove(self, job_id: str) -> JobState:
        """Delete this queue's job ``job_id`` (see ``Client.remove_job``)."""
        return await send(self._conn, self.remove_call(job_id))

    async def obliterate(self, force: bool = False) -> int:
        """Delete this queue and every job in it; ``stats`` no longer lists it. Its jobs'
        ``wait`` calls end with ``NotFoundError``.

        Args:
            force: also delete active jobs, revoking their leases (their workers' acks get
                ``NotFoundError``); without it a queue with active jobs is refused.

        Returns:
            How many jobs were deleted.

        Raises:
            ConflictError: the queue has active jobs and ``force`` is false (nothing changed).
        """
        return await send(self._conn, self.obliterate_call(force))

    async def upsert_scheduler(
        self, key: str, *, every: Duration | None = None, cron: str | None = None,
        tz: str | None = None, start: datetime | float | None = None,
        end: datetime | float | None = None, limit: int | None = None, name: str | None = None,
        data: Any = None, **options: Any,
    ) -> Scheduler:
        """Create or update the repeatable job ``key`` of this queue (BullMQ's
        ``upsertJobScheduler``): the broker adds one job per occurrence, delayed until then.
        The same definition again changes nothing, so call it on every start.

        Args:
            key: the scheduler's name, unique per queue.
            every: the period in seconds (or a ``timedelta``); or
            cron: a cron pattern (5 fields, or 6 with seconds first), read in
            tz: an IANA time zone (``"Europe/Berlin"``; UTC when not given).
            start, end: no run before ``start`` or after ``end`` (datetime or Unix seconds).
            limit: at most this many runs in all.
            name: each run's handler name (``key`` when not given).
            data: each run's data.
            **options: each run's job options, as ``add`` takes them (not ``job_id``,
                ``delay`` or ``run_at``).

        Returns:
            The scheduler, with ``next_run``, ``created`` and ``changed``.

        Raises:
            BadArgumentError: naming the field (a period under 1 ms or over a year, an invalid
                pattern, an unknown time zone, data over the payload cap).
        """
        call = self.upsert_scheduler_call(key, name, data, options, every=every, cron=cron,
                                          tz=tz, start=start, end=end, limit=limit)
        return await send(self._conn, call)

    async def remove_scheduler(self, key: str) -> bool:
        """Delete the scheduler ``key`` and its next run's job if it has not started (BullMQ's
        ``removeJobScheduler``). Returns whether it existed."""
        return await send(self._conn, remove_call(self.name, key))

    async def schedulers(self) -> list[Scheduler]:
        """This queue's schedulers by key, each with its next run (``getJobSchedulers``)."""
        return await all_schedulers(self._conn, self.name, self.serializer)


async def all_schedulers(
    conn: Connection, queue: str | None, serializer: Serializer
) -> list[Scheduler]:
    """Every scheduler (of ``queue``, or of all queues), by ``(queue, key)``, page by page."""
    gathered: list[SchedulerInfo] = []
    offset: int | None = 0
    while offset is not None:
        offset = more(gathered, await send(conn, list_call(queue, offset, serializer)))
    return [scheduler_from_info(info, serializer) for info in gathered]


async def _as_stored(job: Job) -> None:
    """Make a duplicate's handle show the job the broker holds, not the request that found it."""
    with contextlib.suppress(NotFoundError):  # removed since: only the request's view is left
        await job.refresh()


__all__ = ["Client", "Queue"]
