"""The producer and admin operations, without I/O: each builds its request(s) and parses the reply
into the public result types.

``QueueOperations`` is the base of both ``client.Queue`` (asynchronous) and ``client.SyncQueue``
(blocking): it holds the queue's name, serializer and default options, and its ``*_call``
methods build a ``Call`` (``client/call.py``) per operation; the two subclasses only send them.
The client-level operations (by job id, stats of every queue, ping) are the functions below,
used by ``Client`` and ``SyncClient`` alike. Job handles are made by the subclass's job type
(``Job`` or ``SyncJob``), bound to the connection or sync client that sends their calls.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from functools import partial
from typing import Any, Final, Generic, NamedTuple, TypeVar

from client.bulk import plain_items, plain_specs, split_bulk
from client.call import BulkCall, Call
from client.endpoint import ServerInfo
from client.errors import NotFoundError
from client.job import JobHandle, cancel_call, check_retried, job_info_from_body
from client.options import (
    Duration,
    build_spec,
    check_options,
    seconds_to_ms,
    spec_size,
)
from client.schedules import Scheduler, check_template_options, list_call, upsert_call
from client.serializers import Serializer
from protocol.checks import MAX_LIST_LIMIT
from protocol.model import JobSpec, JobState
from protocol.observing import Metrics, Workers, WorkersPage, parse_workers
from protocol.operations import (
    Clean,
    Enqueue,
    Get,
    Limit,
    ListFailed,
    ListJobs,
    Obliterate,
    Pause,
    Ping,
    Resume,
    RetryFailed,
    Stats,
)
from protocol.replies import JobInfo, JobPage, QueueStats, parse_enqueued, parse_job_page
from protocol.scheduling import SchedulerPage

J = TypeVar("J", bound=JobHandle[Any])

EMPTY_QUEUE_STATS: Final = QueueStats(0, 0, 0, 0, 0, False, None, 0, 0)
"""The stats of a queue never used (the broker does not list it)."""


def get_job_call(
    job_type: type[J], sender: Any, job_id: str, serializer: Serializer, queue: str | None = None
) -> Call[J]:
    """Fetch a job by id (of ``queue``, if given: user ids are unique per queue); the result is
    a handle of ``job_type`` bound to ``sender``.

    The parser raises ``NotFoundError`` when the broker says there is no such job.
    """
    return Call(Get(job_id, queue), partial(_found, job_type, sender, job_id, serializer))


def _found(
    job_type: type[J], sender: Any, job_id: str, serializer: Serializer, body: Mapping[str, Any]
) -> J:
    info = job_info_from_body(body)
    if info is None:
        raise NotFoundError("NOT_FOUND", f"no job {job_id!r}")
    return job_type.from_info(sender, info, serializer)


def stats_call(queue: str) -> Call[dict[str, QueueStats]]:
    """Counters of ``queue``."""
    return Call(Stats(queue), _queue_stats)


def _queue_stats(body: Mapping[str, Any]) -> dict[str, QueueStats]:
    return {name: QueueStats.from_wire(raw) for name, raw in body["queues"].items()}


def stats_page_call(offset: int) -> Call[tuple[dict[str, QueueStats], int]]:
    """Counters of the queues from the ``offset``-th (creation order), as many as the broker
    sends in one page, and how many queues there are."""
    return Call(Stats(None, offset), _stats_page)


def _stats_page(body: Mapping[str, Any]) -> tuple[dict[str, QueueStats], int]:
    queues = _queue_stats(body)
    return queues, int(body.get("total", len(queues)))


def more_stats(
    gathered: dict[str, QueueStats], page: dict[str, QueueStats], total: int
) -> int | None:
    """Add ``page`` to ``gathered``; the offset of the next page, or ``None`` when done.

    An empty page ends it too (queues removed while paging make ``total`` shrink)."""
    offset = len(gathered)
    gathered.update(page)
    if not page or len(gathered) == offset or len(gathered) >= total:
        return None
    return offset + len(page)


def broker_stats_call() -> Call[dict[str, Any]]:
    """The broker-wide part of the ``stats`` reply (version, connections, uptime)."""
    return Call(Stats(None, 0, 1), _broker_stats)  # one queue at most: only "broker" is read


def _broker_stats(body: Mapping[str, Any]) -> dict[str, Any]:
    return dict(body.get("broker") or {})


def ping_call() -> Call[int]:
    """A round trip; the result is the broker's clock (Unix ms)."""
    return Call(Ping(), _now)


def _now(body: Mapping[str, Any]) -> int:
    return int(body.get("now", 0))


def _nothing(body: Mapping[str, Any]) -> None:
    return None


class QueueLimits(NamedTuple):
    """A queue's flow control, as the broker enforces it (``None``: not set).

    Attributes:
        rate_max: at most this many jobs start in any window of ``rate_period`` seconds.
        rate_period: the rate limit's window, in seconds.
        concurrency: at most this many of the queue's jobs are active at once.
        paused_until: a "not now" pause (``RateLimited(pause_queue=True)``, ``pause(for_=)``)
            runs until this Unix time, in seconds.
        rate_free_at: the rate limit's window is full: the next job may start at this Unix
            time, in seconds (``None``: one may start now, no rate limit, or an older broker).
    """

    rate_max: int | None
    rate_period: float | None
    concurrency: int | None
    paused_until: float | None
    rate_free_at: float | None = None

    @classmethod
    def from_wire(cls, body: Mapping[str, Any]) -> QueueLimits:
        raw = body["limits"]
        period, until = raw.get("rate_period_ms"), raw.get("paused_until")
        free = raw.get("rate_free_at")
        return cls(raw.get("rate_max"), None if period is None else period / 1000,
                   raw.get("concurrency"), None if until is None else until / 1000,
                   None if free is None else free / 1000)


def limit_call(
    queue: str, rate: tuple[int, Duration] | bool | None, concurrency: int | bool | None
) -> Call[QueueLimits]:
    """Set, change or clear a queue's limits (``None``: leave; ``False``: clear).

    Raises:
        ValueError: a negative period (the broker checks the ranges: ``BadArgumentError``).
    """
    wire_rate: tuple[int, int] | bool | None
    wire_rate = (rate[0], seconds_to_ms(rate[1], "per")) if isinstance(rate, tuple) else rate
    return Call(Limit(queue, wire_rate, concurrency), QueueLimits.from_wire)


def metrics_call(
    queues: Sequence[str] | None, after: str | None, buckets: bool
) -> Call[dict[str, Any]]:
    """One page of the ``metrics`` op (SPEC §8.22): the named queues, or the next
    ``MAX_LIST_LIMIT`` after ``after``; ``add_metrics`` folds it into a result."""
    named = None if queues is None else tuple(queues)
    return Call(Metrics(named, after, MAX_LIST_LIMIT, buckets), dict)


def add_metrics(out: dict[str, Any], body: dict[str, Any]) -> str | None:
    """Fold one ``metrics`` reply into ``out`` (``{"broker", "queues"}``); returns the name to
    page on from, or ``None`` when done."""
    out["broker"] = body["broker"]
    out.setdefault("queues", {}).update(body["queues"])
    following: str | None = body.get("next")
    return following


def workers_call(include_all: bool, offset: int) -> Call[WorkersPage]:
    """One page of the ``workers`` op (SPEC §8.23), from ``offset``."""
    return Call(Workers(include_all, MAX_LIST_LIMIT, offset), parse_workers)


class QueueOperations(Generic[J]):
    """One named queue's operations as calls; ``J`` is the job handle type of the subclass.

    Args:
        job_type: ``Job`` or ``SyncJob``.
        sender: what the job handles send their calls on (a connection or a sync client).
        name: the queue.
        serializer: encodes job data and decodes data and results.
        defaults: job options used when a call omits them.
    """

    __slots__ = ("_job_type", "_sender", "defaults", "name", "serializer")

    def __init__(
        self, job_type: type[J], sender: Any, name: str, serializer: Serializer,
        defaults: Mapping[str, Any],
    ) -> None:
        self._job_type = job_type
        self._sender = sender
        self.name = name
        self.serializer = serializer
        self.defaults = dict(defaults)

    def _spec(self, name: str, data: Any, options: Mapping[str, Any]) -> JobSpec:
        if options:
            check_options(options)
            merged = {**self.defaults, **{k: v for k, v in options.items() if v is not None}}
        else:
            merged = self.defaults
        return build_spec(name, self.serializer.dumps(data), merged)

    def _job(self, spec: JobSpec, job_id: str, data: Any, duplicate: bool) -> J:
        return self._job_type.enqueued(
            self._sender, job_id, self.name, self.serializer, spec, data, duplicate)

    # ``add`` is the one-at-a-time hot path: a request builder and a reply parser that both
    # flavours call directly, without a ``Call`` and its parser closure per job.

    def add_request(self, name: str, data: Any, options: Mapping[str, Any]) -> Enqueue:
        """The ``enqueue`` request of ``add`` (``options`` merged over the queue's defaults).

        Raises:
            TypeError, ValueError: an unknown option, or one of the wrong type or range.
        """
        return Enqueue(self.name, (self._spec(name, data, options),))

    def added(self, request: Enqueue, data: Any, body: Mapping[str, Any]) -> J:
        """The job handle from ``add``'s request and its reply body."""
        result = parse_enqueued(body)
        return self._job(request.jobs[0], result.ids[0], data, bool(result.duplicates))

    def add_bulk_call(self, jobs: Iterable[Any], server: ServerInfo | None) -> BulkCall[list[J]]:
        """Requests of at most the broker's ``max_batch`` jobs and a share of its frame limit
        (the defaults before the first handshake).

        Per job this is the client's share of a bulk enqueue, so the common case, only
        ``(name, data)`` items and no queue defaults, takes ``client/bulk.py``'s short path.
        """
        items = jobs if type(jobs) is list else list(jobs)
        if not self.defaults and plain_items(items):
            specs, datas, size = plain_specs(items, self.serializer)
        else:
            specs, datas = [], []
            for item in items:
                name, data, options = bulk_item(item)
                specs.append(self._spec(name, data, options))
                datas.append(data)
            size = sum(map(spec_size, specs))
        batches = split_bulk(specs, size, server)
        requests = [Enqueue(self.name, tuple(batch)) for batch in batches]
        counts = [len(batch) for batch in batches]
        return BulkCall(requests, partial(self._enqueued, specs, datas, counts))

    def _enqueued(
        self, specs: list[JobSpec], datas: list[Any], counts: list[int],
        bodies: Sequence[Mapping[str, Any]],
    ) -> list[J]:
        """One handle per job of ``add_bulk``, in call order, from each request's reply body;
        ``duplicate`` is true where the id already existed."""
        out: list[J] = []
        append = out.append
        make = self._job_type.enqueued
        sender, queue, serializer = self._sender, self.name, self.serializer
        index = 0
        for count, body in zip(counts, bodies, strict=True):
            ids, duplicates = parse_enqueued(body)
            if duplicates:
                repeated = set(duplicates)
                for offset, job_id in enumerate(ids):
                    append(make(sender, job_id, queue, serializer, specs[index + offset],
                                datas[index + offset], offset in repeated))
            else:
                for job_id, spec, data in zip(ids, specs[index:index + count],
                                              datas[index:index + count], strict=False):
                    append(make(sender, job_id, queue, serializer, spec, data, False))
            index += count
        return out

    def get_job_call(self, job_id: str) -> Call[J]:
        return get_job_call(self._job_type, self._sender, job_id, self.serializer, self.name)

    def stats_call(self) -> Call[QueueStats]:
        return Call(Stats(self.name), self._own_stats)

    def _own_stats(self, body: Mapping[str, Any]) -> QueueStats:
        return _queue_stats(body).get(self.name) or EMPTY_QUEUE_STATS

    def pause_call(self, for_: Duration | None = None) -> Call[None]:
        for_ms = None if for_ is None else seconds_to_ms(for_, "for_")
        return Call(Pause(self.name, for_ms), _nothing)

    def resume_call(self) -> Call[None]:
        return Call(Resume(self.name), _nothing)

    def upsert_scheduler_call(
        self, key: str, name: str | None, data: Any, options: Mapping[str, Any],
        **rule: Any,
    ) -> Call[Scheduler]:
        """``Queue.upsert_scheduler``'s request: the template is built as ``add`` builds a job."""
        check_template_options(options)
        spec = self._spec(key if name is None else name, data, options)
        return upsert_call(self.name, key, spec, self.serializer, **rule)

    def schedulers_call(self, offset: int) -> Call[SchedulerPage]:
        return list_call(self.name, offset, self.serializer)

    def limit_call(
        self, rate: tuple[int, Duration] | bool | None, concurrency: int | bool | None = None
    ) -> Call[QueueLimits]:
        return limit_call(self.name, rate, concurrency)

    def clean_call(
        self, state: JobState | str, older_than: Duration, limit: int | None
    ) -> Call[int]:
        request = Clean(self.name, JobState(state), seconds_to_ms(older_than, "older_than"), limit)
        return Call(request, _removed)

    def failed_page_call(self, limit: int, offset: int) -> Call[tuple[list[J], int]]:
        request = ListFailed(self.name, max(1, min(limit, MAX_LIST_LIMIT)), offset)
        return Call(request, self._failed_page)

    def _failed_page(self, body: Mapping[str, Any]) -> tuple[list[J], int]:
        jobs = [
            self._job_type.from_info(self._sender, JobInfo.from_wire(raw), self.serializer)
            for raw in body["jobs"]
        ]
        return jobs, int(body.get("total", len(jobs)))

    def jobs_call(
        self, states: Sequence[JobState | str] | JobState | str, offset: int, limit: int
    ) -> Call[JobPage]:
        if isinstance(states, str):  # a JobState is a str too
            states = (states,)
        request = ListJobs(self.name, tuple(JobState(state) for state in states), offset, limit)
        return Call(request, parse_job_page)

    def retry_failed_call(self, job_ids: Sequence[str] | None, limit: int | None) -> Call[int]:
        ids = None if job_ids is None else tuple(job_ids)
        return Call(RetryFailed(self.name, ids, limit), partial(_retried, ids, self.name))

    def retry_failed_ids_call(self, job_ids: Sequence[str]) -> Call[tuple[int, list[str]]]:
        return Call(RetryFailed(self.name, tuple(job_ids), None), _retried_and_left)

    def remove_call(self, job_id: str) -> Call[JobState]:
        return cancel_call(job_id, self.name)

    def obliterate_call(self, force: bool) -> Call[int]:
        return Call(Obliterate(self.name, force), _removed)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r}>"


def _removed(body: Mapping[str, Any]) -> int:
    return int(body["removed"])


def _retried_and_left(body: Mapping[str, Any]) -> tuple[int, list[str]]:
    return int(body["retried"]), [str(job_id) for job_id in body.get("not_failed") or ()]


def _retried(ids: tuple[str, ...] | None, queue: str, body: Mapping[str, Any]) -> int:
    if ids is not None and len(ids) == 1:
        check_retried(body, ids[0], queue)
    return int(body["retried"])


def bulk_item(item: Any) -> tuple[str, Any, Mapping[str, Any]]:
    """One ``add_bulk`` item as ``(name, data, options)``.

    Raises:
        TypeError: the item is none of ``(name, data[, options])`` or a map.
    """
    if type(item) is tuple and len(item) == 2:  # (name, data): the common case, checked first
        return item[0], item[1], _NO_OPTIONS
    if isinstance(item, Mapping):
        options = {k: v for k, v in item.items() if k not in ("name", "data", "opts")}
        options.update(item.get("opts") or {})
        return item["name"], item.get("data"), options
    if isinstance(item, tuple | list) and 1 <= len(item) <= 3:
        name = item[0]
        data = item[1] if len(item) > 1 else None
        options = dict(item[2]) if len(item) > 2 and item[2] else {}
        return name, data, options
    raise TypeError("add_bulk items are (name, data[, options]) or {'name', 'data', 'opts'}")


_NO_OPTIONS: Final[Mapping[str, Any]] = {}
"""Shared empty options of ``bulk_item`` (never mutated: ``_spec`` only reads them)."""
