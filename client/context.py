"""What a handler receives: ``JobContext`` (id, name, data, attempt, progress(), extend()).

Async handlers await ``ctx.progress(value)`` and ``ctx.extend(seconds)``. Plain ``def`` handlers
run in a worker thread and call the blocking twins ``ctx.progress_sync`` and ``ctx.extend_sync``,
which hand the request to the worker's event loop and wait for the broker's answer. A context
knows the connection and the loop it came from, not the worker.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Coroutine
from typing import Any, TypeVar

from client.call import AsyncSender
from client.errors import broker_error
from protocol.model import ExtendItem
from protocol.operations import Extend, Progress
from protocol.replies import ReservedJob, parse_outcomes

_T = TypeVar("_T")


class JobContext:
    """One delivery (attempt) of a job, as a handler sees it.

    Attributes:
        id: the job id.
        name: the job name (which handler runs it).
        queue: the queue it came from.
        data: the decoded payload.
        attempt: 1 for the first delivery, 2 for the first retry, ...
        max_attempts: attempts allowed in total.
        token: the lease token (needed only when speaking the protocol directly).
        lease: the lease length in seconds.
        timeout: the job's timeout in seconds (the longest this attempt may run), or ``None``.
        timeout_at: local monotonic time when the worker cancels the handler for ``timeout``
            (counted from when the job arrived, as the broker counts from the reservation).
        timed_out: set when a time limit ended the attempt; a plain ``def`` handler, whose
            thread cannot be stopped, may check it to give up early.
        lease_lost: set when the broker refused to extend the lease (it expired or the job was
            removed); the outcome of this attempt will be refused too.
        result: the handler's return value, once it returned (for ``on_completed`` callbacks).
    """

    __slots__ = (
        "_connection", "_loop", "attempt", "created_at", "data", "deadline", "id", "lease",
        "lease_lost", "max_attempts", "name", "payload", "queue", "result", "timed_out",
        "timeout", "timeout_at", "token",
    )

    def __init__(
        self, reserved: ReservedJob, received_at: float, connection: AsyncSender,
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        self._connection = connection
        self._loop = loop
        # One unpacking instead of a field read per item (a context is made per job).
        (self.id, self.queue, self.name, self.payload, self.attempt, self.max_attempts,
         self.token, lease_ms, _, created_at_ms, _, timeout_ms) = reserved
        self.data: Any = None
        self.lease = lease = lease_ms / 1000.0
        self.deadline = received_at + lease
        """Local monotonic time by which the lease must be extended (conservative)."""
        if timeout_ms is None:
            self.timeout = self.timeout_at = None
        else:
            self.timeout = timeout_ms / 1000.0
            self.timeout_at = received_at + self.timeout
        self.timed_out = False
        self.created_at = created_at_ms / 1000.0
        self.lease_lost = False
        self.result: Any = None

    @property
    def is_last_attempt(self) -> bool:
        """True when a failure of this attempt sends the job to ``failed``."""
        return self.attempt >= self.max_attempts

    async def progress(self, value: Any) -> None:
        """Record a progress value (any small msgpack value) on the job.

        Raises:
            StaleLeaseError: the lease is no longer held.
            NotFoundError: the job was removed.
        """
        await self._connection.request(Progress(self.id, self.token, value))

    async def extend(self, seconds: float | None = None) -> float:
        """Extend the lease now (the worker also does this by itself while the handler runs).

        Args:
            seconds: the new lease length from now (default: the job's lease).

        Returns:
            The new lease deadline, Unix seconds.

        Raises:
            StaleLeaseError: the lease is no longer held.
            NotFoundError: the job was removed.
        """
        lease_ms = None if seconds is None else max(100, round(seconds * 1000))
        sent_at = time.monotonic()
        body = await self._connection.request(
            Extend((ExtendItem(self.id, self.token, lease_ms),))
        )
        outcome = parse_outcomes(body)[0]
        if not outcome.ok:
            self.lease_lost = True
            raise broker_error(outcome.code, str(outcome.value))
        self.deadline = sent_at + (self.lease if seconds is None else seconds)
        return float(outcome.value) / 1000.0

    def progress_sync(self, value: Any) -> None:
        """``progress`` for plain ``def`` handlers (call from the handler's thread only)."""
        self._from_thread(self.progress(value))

    def extend_sync(self, seconds: float | None = None) -> float:
        """``extend`` for plain ``def`` handlers (call from the handler's thread only)."""
        return self._from_thread(self.extend(seconds))

    def _from_thread(self, coro: Coroutine[Any, Any, _T]) -> _T:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result()

    def __repr__(self) -> str:
        return f"<JobContext {self.id} {self.queue}/{self.name} attempt={self.attempt}>"
