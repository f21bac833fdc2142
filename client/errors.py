"""The client's exceptions.

Broker ERROR replies become ``BrokerError`` subclasses chosen by wire code (``NotFoundError`` for
``NOT_FOUND``, and so on); a code this client does not know becomes a plain ``BrokerError``.
Transport problems are ``ConnectionLostError`` (the connection dropped with requests pending) or
``ConnectionClosedError`` (the client was closed). Handlers raise ``Retry``, ``RateLimited`` or
``UnrecoverableError`` to steer what the worker tells the broker.
"""

from __future__ import annotations

from typing import Any, Final, Protocol

from protocol.errors import ErrorCode


class JobwireError(Exception):
    """Base class of every exception the client raises."""


class ConnectionError_(JobwireError, ConnectionError):
    """Base of the transport errors; also a builtin ``ConnectionError``."""


class ConnectionLostError(ConnectionError_):
    """The connection dropped while this request was pending; ``__cause__`` says why.

    A write request that fails this way may or may not have taken effect.
    """


class ConnectionClosedError(ConnectionError_):
    """The client was closed (or gave up connecting) before this request completed."""


class RequestTimeoutError(JobwireError, TimeoutError):
    """No reply arrived within the request's timeout. A write may or may not have taken effect."""


class BrokerError(JobwireError):
    """The broker answered a request with an error.

    Attributes:
        code: the wire error code (``protocol.ErrorCode`` value, or an unknown code string).
        message: the broker's human-readable message.
    """

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.code, self.message))


class NotFoundError(BrokerError):
    """``NOT_FOUND``: no job with that id (never existed, removed, or pruned by retention)."""


class StaleLeaseError(BrokerError):
    """``STALE_LEASE``: the lease token is no longer the job's current one; nothing changed."""


class ConflictError(BrokerError):
    """``CONFLICT``: the job is not in a state the operation applies to."""


class BadArgumentError(BrokerError):
    """``BAD_ARGUMENT`` (or another request-shape error): the message names the field."""


class PayloadTooLargeError(BrokerError):
    """``PAYLOAD_TOO_LARGE``: a payload, result or progress value is over the broker's limit."""


class QueueFullError(BrokerError):
    """``QUEUE_FULL``: the broker's job limits are reached; retry later."""


class OverloadedError(BrokerError):
    """``OVERLOADED``: too many connections or requests in flight."""


class DrainingError(BrokerError):
    """``DRAINING``: the broker is shutting down and accepts no new jobs."""


class JournalFailureError(BrokerError):
    """``JOURNAL_FAILURE``: the write was not made durable; retry it with the same job id."""


class AuthenticationError(BrokerError):
    """``UNAUTHORIZED``: the token is missing or wrong. The client does not reconnect after it."""


class ProtocolMismatchError(BrokerError):
    """``UNSUPPORTED_VERSION``, ``BAD_FRAME`` and other errors that mean the two sides disagree."""


_BY_CODE: Final[dict[str, type[BrokerError]]] = {
    ErrorCode.NOT_FOUND: NotFoundError,
    ErrorCode.STALE_LEASE: StaleLeaseError,
    ErrorCode.CONFLICT: ConflictError,
    ErrorCode.BAD_ARGUMENT: BadArgumentError,
    ErrorCode.UNKNOWN_OP: ProtocolMismatchError,
    ErrorCode.PAYLOAD_TOO_LARGE: PayloadTooLargeError,
    ErrorCode.QUEUE_FULL: QueueFullError,
    ErrorCode.OVERLOADED: OverloadedError,
    ErrorCode.DRAINING: DrainingError,
    ErrorCode.JOURNAL_FAILURE: JournalFailureError,
    ErrorCode.UNAUTHORIZED: AuthenticationError,
    ErrorCode.UNSUPPORTED_VERSION: ProtocolMismatchError,
    ErrorCode.HANDSHAKE_REQUIRED: ProtocolMismatchError,
    ErrorCode.BAD_FRAME: ProtocolMismatchError,
    ErrorCode.FRAME_TOO_LARGE: ProtocolMismatchError,
}


def broker_error(code: str, message: str) -> BrokerError:
    """The exception for a broker error reply or per-item outcome.

    Args:
        code: the wire error code.
        message: the broker's message.

    Returns:
        An instance of the ``BrokerError`` subclass registered for ``code``.
    """
    return _BY_CODE.get(code, BrokerError)(code, message)


class FailedJob(Protocol):
    """What ``JobFailed`` carries of a job: a ``client.JobRecord`` (``Job``, ``SyncJob``) fits."""

    @property
    def id(self) -> str: ...
    @property
    def queue(self) -> str: ...
    @property
    def name(self) -> str: ...
    @property
    def attempts(self) -> int: ...
    @property
    def max_attempts(self) -> int | None: ...
    @property
    def error(self) -> str | None: ...
    @property
    def data(self) -> Any: ...


class JobFailed(JobwireError):
    """``job.wait()`` found the job in the ``failed`` state.

    Attributes:
        job: the job as the broker last described it (``job.error`` holds its last error).
    """

    def __init__(self, job: FailedJob) -> None:
        first_line = (job.error or "").split("\n", 1)[0]
        super().__init__(f"job {job.id} failed after {job.attempts} attempt(s): {first_line}")
        self.job = job


class WaitTimeoutError(JobwireError, TimeoutError):
    """``job.wait(timeout=)`` ran out of time before the job finished."""


class Retry(Exception):
    """Raised by a handler: fail this attempt and retry after ``delay`` seconds.

    The attempt still counts; when no attempts remain the job goes to ``failed``.

    Args:
        delay: seconds until the retry (``None``: the job's backoff policy decides).
        reason: text recorded as the job's error.
    """

    def __init__(self, delay: float | None = None, reason: str = "retry requested") -> None:
        super().__init__(reason)
        if delay is not None and delay < 0:
            raise ValueError("Retry delay must be >= 0")
        self.delay = delay
        self.reason = reason


class RateLimited(Exception):
    """Raised by a handler: "not now" (the service it calls is rate limited). The job goes back
    to ``delayed`` for ``delay`` seconds **without counting an attempt** (unlike ``Retry``,
    which fails the attempt), so a job is never dead-lettered for being throttled.

    Args:
        delay: seconds until the job may run again (0: at once).
        pause_queue: also hand out **no job of this queue** to any worker for ``delay``
            seconds (BullMQ's ``worker.rateLimit(ms)`` then ``throw Worker.RateLimitError()``);
            ``Queue.resume()`` lifts it early.
    """

    def __init__(self, delay: float, *, pause_queue: bool = False) -> None:
        super().__init__(f"rate limited: try again in {delay:g}s")
        if delay < 0:
            raise ValueError("RateLimited delay must be >= 0")
        self.delay = delay
        self.pause_queue = pause_queue


class UnrecoverableError(Exception):
    """Raised by a handler: fail the job at once, without retrying (it goes to ``failed``)."""
