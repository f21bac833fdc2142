"""A synchronous producer for code without an event loop (Django, Flask, scripts, cron jobs).

Design choice: a plain blocking socket speaking ``protocol/`` directly, with no background
thread and no event loop. Each call sends its request frame(s) and reads until the matching
reply arrives. A lock makes one ``SyncClient`` safe to share between threads (calls are then
serialised; use one client per thread for parallel enqueues). The socket opens lazily on the
first call and reopens on the next call after a failure, and after ``os.fork()`` (a child never
shares its parent's socket). A call that fails with ``ConnectionLostError`` is not retried
automatically: an enqueue may or may not have happened, so retry it with a ``job_id``.

What each operation sends and how its reply is read is not written here: ``SyncQueue`` and
``SyncJob`` use the same ``QueueOperations`` and ``JobRecord`` calls as the asynchronous
``Queue`` and ``Job`` (``client/operations.py``, ``client/job.py``) and only send them.

::

    from client import SyncClient

    jobs = SyncClient("jobwire://127.0.0.1:7400")
    job = jobs.queue("emails").add("send", {"to": "ada@example.com"}, attempts=5)
    print(job.wait(timeout=30))
"""

from __future__ import annotations

import contextlib
import os
import socket
import ssl as ssl_module
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Self, TypeVar

from client.call import BulkCall, Call
from client.endpoint import DEFAULT_URL, ServerInfo, parse_url
from client.errors import (
    ConnectionClosedError,
    ConnectionLostError,
    JournalFailureError,
    NotFoundError,
    RequestTimeoutError,
    broker_error,
)
from client.job import JOURNAL_RETRY_S, JobHandle, cancel_call
from client.operations import (
    QueueLimits,
    QueueOperations,
    add_metrics,
    get_job_call,
    metrics_call,
    more_stats,
    ping_call,
    stats_call,
    stats_page_call,
    workers_call,
)
from client.options import Duration, check_options
from client.schedules import RULE_FIELDS, Scheduler, more, remove_call, scheduler_from_info
from client.serializers import Serializer, get_serializer
from protocol.checks import MAX_REQUEST_ID
from protocol.codec import FrameDecoder, encode_frames
from protocol.messages import (
    PROTOCOL_VERSION,
    ErrorReply,
    Reply,
    parse_server_message,
    request_message,
)
from protocol.model import JobState
from protocol.operations import Hello, Request
from protocol.replies import JobPage, QueueStats
from protocol.scheduling import SchedulerInfo

R = TypeVar("R")
_RECV_SIZE = 256 * 1024


class SyncClient:
    """A blocking producer/admin client.

    Args:
        url: ``jobwire://[token@]host[:port]`` or ``jobwires://`` (TLS).
        serializer: ``"msgpack"`` (default), ``"json"``, ``"raw"`` or your own.
        token: auth token (overrides one in the URL).
        ssl: an ``ssl.SSLContext`` for TLS.
        timeout: default seconds per call.
        connect_timeout: seconds to connect and handshake.
    """

    def __init__(
        self,
        url: str = DEFAULT_URL,
        *,
        serializer: Serializer | str | None = None,
        token: str | None = None,
        ssl: ssl_module.SSLContext | None = None,
        timeout: float = 30.0,
        connect_timeout: float = 10.0,
        client_name: str = "jobwire-sync",
    ) -> None:
        self.endpoint = parse_url(url)
        self.serializer = get_serializer(serializer)
        self._token = token if token is not None else self.endpoint.token
        if ssl is None and self.endpoint.tls:
            ssl = ssl_module.create_default_context()
        self._ssl = ssl
        self.timeout = timeout
        self.connect_timeout = connect_timeout
        self.client_name = client_name
        self.server: ServerInfo | None = None
        self._sock: socket.socket | None = None
        self._pid = 0
        self._decoder = FrameDecoder(64 * 1024 * 1024)
        self._next_id = 1
        self._lock = threading.Lock()
        self._closed = False

    # ------------------------------------------------------------------ lifecycle

    def connect(self) -> Self:
        """Open the connection now (otherwise the first call does).

        Raises:
            OSError: the broker is unreachable.
            AuthenticationError: the token was refused.
        """
        with self._lock:
            self._ensure_open()
        return self

    def close(self) -> None:
        """Close the socket. Safe to call twice; the client cannot be used afterwards."""
        with self._lock:
            self._closed = True
            self._drop()

    def __enter__(self) -> Self:
        return self.connect()

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _drop(self) -> None:
        sock, self._sock = self._sock, None
        self._decoder = FrameDecoder(64 * 1024 * 1024)
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.close()

    def _ensure_open(self) -> socket.socket:
        if self._closed:
            raise ConnectionClosedError("SyncClient is closed")
        if self._sock is not None and self._pid == os.getpid():
            return self._sock
        self._sock = None  # after fork: never touch the parent's socket
        self._decoder = FrameDecoder(64 * 1024 * 1024)
        endpoint = self.endpoint
        sock = socket.create_connection((endpoint.host, endpoint.port), self.connect_timeout)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if self._ssl is not None:
            sock = self._ssl.wrap_socket(sock, server_hostname=endpoint.host)
        self._sock, self._pid = sock, os.getpid()
        try:
            body = self._exchange(
                [Hello(PROTOCOL_VERSION, self.client_name, self._token)], self.connect_timeout
            )[0]
        except BaseException:
            self._drop()
            raise
        self.server = ServerInfo.from_body(body)
        return sock

    # ------------------------------------------------------------------ requests

    def request(self, request: Request, *, timeout: float | None = None) -> dict[str, Any]:
        """Send one request and wait for its reply body.

        Raises:
            BrokerError: the broker answered with an error.
            ConnectionLostError: the connection failed (it reopens on the next call).
            RequestTimeoutError: no reply within ``timeout`` (the connection is dropped).
        """
        return self.requests([request], timeout=timeout)[0]

    def requests(
        self, requests: Sequence[Request], *, timeout: float | None = None
    ) -> list[dict[str, Any]]:
        """Send several requests at once (pipelined) and return their reply bodies in order.

        Raises:
            BrokerError: the first error reply (the other requests were still answered).
        """
        with self._lock:
            self._ensure_open()
            return self._exchange(requests, self.timeout if timeout is None else timeout)

    def call(self, call: Call[R]) -> R:
        """Send one ``Call`` (``client/call.py``) and return its parsed result."""
        return call.parse(self.request(call.request, timeout=call.timeout))

    def call_bulk(self, call: BulkCall[R]) -> R:
        """Send the requests of a ``BulkCall`` together and return its parsed result."""
        return call.parse(self.requests(call.requests) if call.requests else [])

    def _exchange(self, requests: Sequence[Request], timeout: float) -> list[dict[str, Any]]:
        sock = self._sock
        assert sock is not None
        ids = []
        messages = []
        for request in requests:
            ids.append(self._next_id)
            messages.append(request_message(self._next_id, request))
            self._next_id = self._next_id % MAX_REQUEST_ID + 1
        deadline = time.monotonic() + timeout
        replies: dict[int, Reply | ErrorReply] = {}
        try:
            sock.settimeout(timeout)
            sock.sendall(encode_frames(messages))
            wanted = set(ids)
            while wanted:
                message = self._decoder.next_message()
                if message is None:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        raise TimeoutError
                    sock.settimeout(remaining)
                    data = sock.recv(_RECV_SIZE)
                    if not data:
                        raise ConnectionResetError("the broker closed the connection")
                    self._decoder.feed(data)
                    continue
                parsed = parse_server_message(message)
                if isinstance(parsed, Reply | ErrorReply) and parsed.request_id in wanted:
                    wanted.discard(parsed.request_id)
                    replies[parsed.request_id] = parsed
                # events (draining, error) and stray replies need no action here
        except TimeoutError:
            self._drop()
            raise RequestTimeoutError(f"no reply within {timeout:g}s") from None
        except (OSError, ValueError) as exc:
            self._drop()
            raise ConnectionLostError(
                f"connection to {self.endpoint.host}:{self.endpoint.port} lost"
            ) from exc
        bodies = []
        for request_id in ids:
            reply = replies[request_id]
            if isinstance(reply, ErrorReply):
                raise broker_error(reply.code, reply.message)
            bodies.append(reply.body)
        return bodies

    # ------------------------------------------------------------------ producer API

    def queue(
        self, name: str, *, serializer: Serializer | str | None = None, **defaults: Any
    ) -> SyncQueue:
        """A handle on queue ``name``; ``defaults`` apply to every ``add``."""
        check_options(defaults)
        ser = self.serializer if serializer is None else get_serializer(serializer)
        return SyncQueue(self, name, ser, defaults)

    def get_job(
        self, job_id: str, *, serializer: Serializer | str | None = None,
        queue: str | None = None,
    ) -> SyncJob:
        """Fetch a job by id (of ``queue``, if given: see ``Client.get_job``).

        Raises:
            NotFoundError: no such job.
            AmbiguousIdError: no ``queue`` and the id is a job's in several queues.
        """
        ser = self.serializer if serializer is None else get_serializer(serializer)
        return self.call(get_job_call(SyncJob, self, job_id, ser, queue))

    def remove_job(self, job_id: str, *, queue: str | None = None) -> JobState:
        """Delete a job; returns the state it was in."""
        return self.call(cancel_call(job_id, queue))

    def stats(self, queue: str | None = None) -> dict[str, QueueStats]:
        """Counters per queue: every queue (page by page), or just ``queue``."""
        if queue is not None:
            return self.call(stats_call(queue))
        gathered: dict[str, QueueStats] = {}
        offset: int | None = 0
        while offset is not None:
            page, total = self.call(stats_page_call(offset))
            offset = more_stats(gathered, page, total)
        return gathered

    def ping(self) -> int:
        """Round-trip; returns the broker's clock (Unix ms)."""
        return self.call(ping_call())

    def metrics(self, queues: Sequence[str] | None = None, *,
                buckets: bool = False) -> dict[str, Any]:
        """``Client.metrics``, blocking."""
        out: dict[str, Any] = {"broker": {}, "queues": {}}
        after: str | None = None
        while True:
            after = add_metrics(out, self.call(metrics_call(queues, after, buckets)))
            if after is None:
                return out

    def workers(self, *, include_all: bool = False) -> list[dict[str, Any]]:
        """``Client.workers``, blocking."""
        out: list[dict[str, Any]] = []
        while True:
            page = self.call(workers_call(include_all, len(out)))
            out += page.workers
            if not page.workers or len(out) >= page.total:
                return out


class SyncQueue(QueueOperations["SyncJob"]):
    """The blocking twin of ``client.Queue``: the same ``QueueOperations``, sent on the sync
    client's socket."""

    __slots__ = ("_client",)

    def __init__(
        self, client: SyncClient, name: str, serializer: Serializer, defaults: Mapping[str, Any]
    ) -> None:
        super().__init__(SyncJob, client, name, serializer, defaults)
        self._client = client

    def add(self, name: str, data: Any = None, **options: Any) -> SyncJob:
        """Enqueue one job (same options as ``client.Queue.add``); returns once durable."""
        request = self.add_request(name, data, options)
        job = self.added(request, data, self._client.request(request))
        if job.duplicate:
            _as_stored(job)
        return job

    def add_bulk(self, jobs: Iterable[Any]) -> list[SyncJob]:
        """Enqueue many jobs in one round trip (see ``client.Queue.add_bulk``)."""
        added = self._client.call_bulk(self.add_bulk_call(jobs, self._client.server))
        for job in added:
            if job.duplicate:
                _as_stored(job)
        return added

    def get_job(self, job_id: str) -> SyncJob:
        """Fetch a job by id with this queue's serializer."""
        return self._client.call(self.get_job_call(job_id))

    def stats(self) -> QueueStats:
        """This queue's counters."""
        return self._client.call(self.stats_call())

    def pause(self, *, for_: Duration | None = None) -> None:
        """Stop handing out this queue's jobs until ``resume`` (or for ``for_`` seconds only:
        ``Queue.pause``)."""
        self._client.call(self.pause_call(for_))

    def resume(self) -> None:
        """Hand out jobs again."""
        self._client.call(self.resume_call())

    def set_rate_limit(self, max: int, per: Duration) -> QueueLimits:
        """Let at most ``max`` of this queue's jobs start in any window of ``per`` seconds,
        across every worker (enforced by the broker; BullMQ's ``limiter: {max, duration}``).

        Returns:
            The queue's limits after the change.

        Raises:
            BadArgumentError: ``max`` outside 1..1,000,000 or ``per`` outside 1 ms..31 days.
        """
        return self._client.call(self.limit_call((max, per)))

    def clear_rate_limit(self) -> QueueLimits:
        """Remove this queue's rate limit."""
        return self._client.call(self.limit_call(False))

    def set_concurrency(self, limit: int) -> QueueLimits:
        """Let at most ``limit`` of this queue's jobs be active at once, across every worker.

        Raises:
            BadArgumentError: ``limit`` outside 1..1,000,000.
        """
        return self._client.call(self.limit_call(None, limit))

    def clear_concurrency(self) -> QueueLimits:
        """Remove this queue's concurrency limit."""
        return self._client.call(self.limit_call(None, False))

    def limits(self) -> QueueLimits:
        """This queue's rate and concurrency limits and its "not now" pause, if any."""
        return self._client.call(self.limit_call(None))

    def clean(
        self, state: JobState | str, *, older_than: float = 0, limit: int | None = None
    ) -> int:
        """Delete jobs in ``state`` older than ``older_than`` seconds; returns how many."""
        return self._client.call(self.clean_call(state, older_than, limit))

    def failed(self, limit: int = 100, offset: int = 0) -> list[SyncJob]:
        """Failed jobs, newest first."""
        jobs, _ = self._client.call(self.failed_page_call(limit, offset))
        return jobs

    def jobs(
        self, state: Sequence[JobState | str] | JobState | str, *, offset: int = 0,
        limit: int = 100,
    ) -> JobPage:
        """A page of the queue's jobs by state (as ``Queue.jobs``)."""
        return self._client.call(self.jobs_call(state, offset, limit))

    def retry_failed(
        self, job_ids: Sequence[str] | None = None, *, limit: int | None = None
    ) -> int:
        """Move failed jobs back to waiting; returns how many."""
        return self._client.call(self.retry_failed_call(job_ids, limit))

    def retry_failed_ids(self, job_ids: Sequence[str]) -> tuple[int, list[str]]:
        """Move the given failed jobs back to waiting; see ``client.Queue.retry_failed_ids``."""
        return self._client.call(self.retry_failed_ids_call(job_ids))

    def remove(self, job_id: str) -> JobState:
        """Delete this queue's job ``job_id``; returns the state it was in."""
        return self._client.call(self.remove_call(job_id))

    def obliterate(self, force: bool = False) -> int:
        """Delete this queue and its jobs; returns how many (see ``Queue.obliterate``)."""
        return self._client.call(self.obliterate_call(force))

    def upsert_scheduler(self, key: str, *, name: str | None = None, data: Any = None,
                         **rule_and_options: Any) -> Scheduler:
        """Create or update a repeatable job (see ``client.Queue.upsert_scheduler``)."""
        rule = {field: rule_and_options.pop(field, None) for field in RULE_FIELDS}
        return self._client.call(
            self.upsert_scheduler_call(key, name, data, rule_and_options, **rule))

    def remove_scheduler(self, key: str) -> bool:
        """Delete a scheduler (see ``client.Queue.remove_scheduler``)."""
        return self._client.call(remove_call(self.name, key))

    def schedulers(self) -> list[Scheduler]:
        """This queue's schedulers, each with its next run (see ``client.Queue.schedulers``)."""
        gathered: list[SchedulerInfo] = []
        offset: int | None = 0
        while offset is not None:
            offset = more(gathered, self._client.call(self.schedulers_call(offset)))
        return [scheduler_from_info(info, self.serializer) for info in gathered]


def _as_stored(job: SyncJob) -> None:
    """A duplicate's handle shows the stored job, not the request (see ``client.Queue.add``)."""
    with contextlib.suppress(NotFoundError):  # removed since: only the request's view is left
        job.refresh()


class SyncJob(JobHandle[SyncClient]):
    """A job handle with blocking ``refresh``, ``wait`` and ``remove``."""

    __slots__ = ()

    def refresh(self) -> Self:
        """Fetch the current state. Raises ``NotFoundError`` if the job is gone."""
        self._sender.call(self.refresh_call())
        return self

    def wait(self, timeout: float | None = None) -> Any:
        """Block until the job finishes (broker long-poll); see ``client.Job.wait``.

        Raises:
            JobFailed: the job failed.
            WaitTimeoutError: not finished within ``timeout``.
            OSError: the broker went away and cannot be reached again.
        """
        for call in self.wait_calls(timeout, self._sender.timeout):
            try:
                self._sender.call(call)
            except ConnectionLostError:
                continue  # a read: the next call reconnects (or raises OSError if it cannot)
            except JournalFailureError:  # not durable yet on the broker: ask again shortly
                time.sleep(JOURNAL_RETRY_S)
        return self._outcome()

    def remove(self) -> JobState:
        """Delete the job; returns the state it was in."""
        return self._sender.call(self.remove_call())
