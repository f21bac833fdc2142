"""A job as the producer sees it: what the broker last said about it, plus ways to ask again.

``JobRecord`` holds the fields (decoding ``data`` and ``result`` lazily with the queue's
serializer) and builds, without I/O, the calls that ask about the job again (``client/call.py``).
``JobHandle`` binds a record to the client that made it. ``Job`` sends those calls on an
asynchronous connection (``refresh()``, ``wait()``, ``remove()``, ``retry()``); the synchronous
producer's ``SyncJob`` (``client/sync.py``) sends the same calls on its blocking socket.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator, Mapping
from functools import partial
from typing import Any, Final, Generic, Self, TypeVar

from client.call import AsyncSender, Call, send
from client.errors import (
    ConflictError,
    ConnectionLostError,
    JobFailed,
    JournalFailureError,
    WaitTimeoutError,
)
from client.serializers import Serializer
from protocol.checks import MAX_WAIT_MS
from protocol.model import JobSpec, JobState
from protocol.operations import Cancel, Get, RetryFailed, Wait
from protocol.replies import JobInfo

FINISHED_STATES: Final = frozenset({JobState.COMPLETED, JobState.FAILED})
WAIT_CHUNK_S: Final = 30.0
"""Longest single ``wait`` long-poll; a longer ``job.wait()`` asks again (cheaply) after it."""
JOURNAL_RETRY_S: Final = 0.2
"""Pause before asking again after the broker answered a wait with ``JOURNAL_FAILURE``."""
_UNSET: Final = object()
_new: Final = object.__new__
_DELAYED: Final = JobState.DELAYED
_WAITING: Final = JobState.WAITING
S = TypeVar("S")


def job_info_from_body(body: Mapping[str, Any]) -> JobInfo | None:
    """The job in a ``get``/``wait`` reply body: the map itself, or under ``"job"``.

    Returns:
        The parsed job, or ``None`` if the body says there is none (``"job": nil``).
    """
    if "job" in body:
        raw = body["job"]
        return None if raw is None else JobInfo.from_wire(raw)
    return JobInfo.from_wire(body)


def ms_to_seconds(value: int | None) -> float | None:
    """Broker milliseconds since the epoch → ``time.time()`` seconds (``None`` stays ``None``)."""
    return None if value is None else value / 1000.0


class JobRecord:
    """A snapshot of one job.

    Attributes:
        id: the job id.
        queue: its queue.
        name: the handler name.
        state: ``waiting``, ``delayed``, ``active``, ``completed`` or ``failed`` (``None`` when
            unknown: a duplicate enqueue says nothing about the existing job's state).
        priority, attempts, max_attempts: as the broker records them.
        progress: the last progress value a worker reported.
        error: the last error text (message and traceback), if any attempt failed.
        created_at, run_at, started_at, finished_at: Unix times in seconds, or ``None``.
        owner: the worker holding an active job's lease, ``{"conn", "client", "host"}`` as
            ``Client.workers()`` shows it; ``None`` otherwise (and from an older broker,
            which does not report it).
        timeout: the job's timeout (one attempt's longest run) in seconds, or ``None``.
        duplicate: true when an enqueue found this id already present (nothing was created).
    """

    __slots__ = (
        "_data", "_payload", "_result", "_result_raw", "_serializer", "attempts",
        "created_at", "duplicate", "error", "finished_at", "id", "lease_deadline",
        "max_attempts", "name", "owner", "priority", "progress", "queue", "run_at",
        "started_at", "state", "timeout",
    )

    def __init__(
        self,
        job_id: str,
        queue: str,
        name: str,
        serializer: Serializer,
        *,
        payload: bytes | None = None,
        data: Any = _UNSET,
        state: JobState | None = None,
        priority: int = 0,
        duplicate: bool = False,
    ) -> None:
        self.id = job_id
        self.queue = queue
        self.name = name
        self._serializer = serializer
        self._payload = payload
        self._data = data
        self._result_raw: bytes | None = None
        self._result: Any = _UNSET
        self.state = state
        self.priority = priority
        self.attempts = 0
        self.max_attempts: int | None = None
        self.progress: Any = None
        self.error: str | None = None
        self.created_at: float | None = None
        self.run_at: float | None = None
        self.started_at: float | None = None
        self.finished_at: float | None = None
        self.lease_deadline: float | None = None
        self.owner: dict[str, Any] | None = None
        self.timeout: float | None = None
        self.duplicate = duplicate

    def _apply(self, info: JobInfo) -> None:
        """Take every field from a fresh broker description."""
        self.queue = info.queue
        self.name = info.name
        self.state = info.state
        self.priority = info.priority
        self.attempts = info.attempts
        self.max_attempts = info.max_attempts
        if info.payload != self._payload:
            self._payload = info.payload
            self._data = _UNSET
        if info.result != self._result_raw:
            self._result_raw = info.result
            self._result = _UNSET
        self.progress = info.progress
        self.error = info.error
        self.created_at = ms_to_seconds(info.created_at)
        self.run_at = ms_to_seconds(info.run_at)
        self.started_at = ms_to_seconds(info.started_at)
        self.finished_at = ms_to_seconds(info.finished_at)
        self.lease_deadline = ms_to_seconds(info.lease_deadline)
        self.owner = None if info.owner is None else dict(info.owner)
        self.timeout = None if info.timeout_ms is None else info.timeout_ms / 1000

    @property
    def data(self) -> Any:
        """The job's data, decoded with the queue's serializer."""
        if self._data is _UNSET:
            self._data = None if self._payload is None else self._serializer.loads(self._payload)
        return self._data

    @property
    def result(self) -> Any:
        """The handler's return value once completed (decoded), else ``None``."""
        if self._result is _UNSET:
            raw = self._result_raw
            self._result = None if raw is None else self._serializer.loads(raw)
        return self._result

    @property
    def finished(self) -> bool:
        """True once the job is ``completed`` or ``failed``."""
        return self.state in FINISHED_STATES

    def _outcome(self) -> Any:
        """The result if completed; raises ``JobFailed`` if failed."""
        if self.state is JobState.FAILED:
            raise JobFailed(self)
        return self.result

    def __repr__(self) -> str:
        state = self.state.value if self.state is not None else "unknown"
        return f"<{type(self).__name__} {self.id} {self.queue}/{self.name} {state}>"

    # ------------------------------------------------------------------ calls (no I/O)

    def _apply_body(self, body: Mapping[str, Any]) -> None:
        """Take the fields from a ``get``/``wait`` reply body (unless it says "no job")."""
        info = job_info_from_body(body)
        if info is not None:
            self._apply(info)

    def refresh_call(self) -> Call[None]:
        return Call(Get(self.id, self.queue), self._apply_body)

    def remove_call(self) -> Call[JobState]:
        return cancel_call(self.id, self.queue)

    def retry_call(self) -> Call[None]:
        return Call(RetryFailed(self.queue, (self.id,)),
                    partial(check_retried, job_id=self.id, queue=self.queue))

    def wait_calls(self, timeout: float | None, request_timeout: float) -> Iterator[Call[None]]:
        """The ``wait`` long-polls of ``wait()``, one after another, until the job finished.

        Each long-poll lasts at most ``WAIT_CHUNK_S`` and what is left of ``timeout``; its
        reply updates the record. The sender retries a poll lost with the connection.

        Raises:
            WaitTimeoutError: ``timeout`` seconds passed first.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self.finished:
            chunk = WAIT_CHUNK_S
            if deadline is not None:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise WaitTimeoutError(f"job {self.id} not finished within {timeout:g}s")
                chunk = min(chunk, remaining)
            timeout_ms = max(0, min(MAX_WAIT_MS, int(chunk * 1000)))
            yield Call(Wait(self.id, timeout_ms, self.queue), self._apply_body,
                       chunk + request_timeout)


class JobHandle(JobRecord, Generic[S]):
    """A job record bound to the client that made it (``S``: a connection or a sync client)."""

    __slots__ = ("_sender",)

    def __init__(
        self, sender: S, job_id: str, queue: str, name: str, serializer: Serializer, *,
        payload: bytes | None = None,
        data: Any = _UNSET,
        state: JobState | None = None,
        priority: int = 0,
        duplicate: bool = False,
    ) -> None:
        # Explicit keywords, not **fields: this runs once per enqueued job.
        JobRecord.__init__(self, job_id, queue, name, serializer, payload=payload, data=data,
                           state=state, priority=priority, duplicate=duplicate)
        self._sender = sender

    @classmethod
    def enqueued(
        cls, sender: S, job_id: str, queue: str, serializer: Serializer, spec: JobSpec,
        data: Any, duplicate: bool,
    ) -> Self:
        """The handle of a job just enqueued from ``spec`` (what ``__init__`` makes, plus the
        state and ``max_attempts`` the spec implies; a duplicate's state is unknown).

        The hot path of ``add`` and ``add_bulk`` (one call per job): it fills the slots directly,
        without ``type.__call__`` and ``__init__``'s keywords (3x cheaper); a test checks that
        it sets every slot ``__init__`` sets.
        """
        job = _new(cls)
        job.id = job_id
        job.queue = queue
        job.name = spec[1]  # indexes, not attribute names: NamedTuple fields are slow to read
        job._serializer = serializer
        job._payload = spec[2]
        job._data = data
        job._result_raw = None
        job._result = _UNSET
        job.state = None if duplicate else _DELAYED if spec[4] or spec[5] else _WAITING
        job.priority = spec[3]
        job.attempts = 0
        job.max_attempts = spec[6]
        job.progress = None
        job.error = None
        job.created_at = None
        job.run_at = None
        job.started_at = None
        job.finished_at = None
        job.lease_deadline = None
        job.owner = None
        job.timeout = None
        job.duplicate = duplicate
        job._sender = sender
        return job

    @classmethod
    def from_info(cls, sender: S, info: JobInfo, serializer: Serializer) -> Self:
        """A handle filled from a broker description."""
        job = cls(sender, info.id, info.queue, info.name, serializer, payload=info.payload)
        job._apply(info)
        return job


class Job(JobHandle[AsyncSender]):
    """A job handle bound to an asynchronous connection."""

    __slots__ = ()

    async def refresh(self) -> Self:
        """Fetch the job's current state from the broker.

        Returns:
            ``self``, updated.

        Raises:
            NotFoundError: the job no longer exists (removed or pruned by retention).
        """
        await send(self._sender, self.refresh_call())
        return self

    async def wait(self, timeout: float | None = None) -> Any:  # noqa: ASYNC109 - BullMQ-like API
        """Wait until the job finishes, with the broker's ``wait`` long-poll (no busy polling).

        Args:
            timeout: seconds to wait at most (``None``: no limit).

        Returns:
            The job's result (decoded) once it completed.

        Raises:
            JobFailed: the job ended in ``failed``; ``exc.job.error`` has the last error.
            WaitTimeoutError: it did not finish within ``timeout``.
            NotFoundError: the job was removed (cancelled or cleaned; a job removed as it
                finishes by ``remove_on_complete=True`` still gives its result to waiters
                already waiting).
            RequestTimeoutError: the broker stayed unreachable for ``request_timeout``.

        The broker answers only with committed state: a completion that a crash could still
        revert is never reported. A connection lost while waiting, or a journal fault on the
        broker (``JOURNAL_FAILURE``), is not an error: the wait asks again until ``timeout``.
        """
        for call in self.wait_calls(timeout, self._sender.request_timeout):
            try:
                await send(self._sender, call)
            except ConnectionLostError:
                continue  # a read: ask again once the connection is back (request() waits)
            except JournalFailureError:
                # The broker could not commit the job's state yet (a journal fault): it answers
                # only with durable state, so ask again shortly (within ``timeout``).
                await asyncio.sleep(JOURNAL_RETRY_S)
        return self._outcome()

    async def remove(self) -> JobState:
        """Delete the job from the broker (an active job's lease is revoked).

        Returns:
            The state it was in.

        Raises:
            NotFoundError: no such job.
        """
        return await send(self._sender, self.remove_call())

    async def retry(self) -> None:
        """Put a ``failed`` job back to ``waiting``.

        Raises:
            ConflictError: the job is not failed.
        """
        await send(self._sender, self.retry_call())


def cancel_call(job_id: str, queue: str | None = None) -> Call[JobState]:
    """Delete a job; the result is the state it was in."""
    return Call(Cancel(job_id, queue), _prior_state)


def _prior_state(body: Mapping[str, Any]) -> JobState:
    return JobState(body["state"])


def check_retried(body: Mapping[str, Any], job_id: str, queue: str) -> None:
    """Raise ``ConflictError`` if a ``retry_failed`` reply lists ``job_id`` as not failed."""
    for key in ("not_failed", "missing", "skipped"):
        if job_id in (body.get(key) or ()):
            raise ConflictError("CONFLICT", f"job {job_id} is not a failed job of queue {queue} "
                                "(it does not exist, or is in another queue or state)")
