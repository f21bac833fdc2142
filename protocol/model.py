"""The vocabulary of protocol version 1: limits, enums and the typed messages. Sans-I/O.

Every request, reply item and shared structure of ``protocol/SPEC.md`` is a ``NamedTuple`` here
(or a ``StrEnum``/``IntEnum``), so both the broker and the client handle typed values while the
wire carries plain msgpack arrays and maps. Validation of incoming requests lives in
``protocol.validation``; envelopes and reply parsing in ``protocol.messages``, which re-exports
everything defined here (import from ``protocol.messages`` or ``protocol``).
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import IntEnum, StrEnum
from typing import Any, Final, NamedTuple, TypeVar

from protocol.errors import bad_argument

PROTOCOL_VERSION: Final = 1
_E = TypeVar("_E", bound=StrEnum)

# Limits enforced by validation (the broker may impose tighter ones; it says so in ``hello``).
MAX_BATCH: Final = 10_000
"""Most items in one enqueue, ack, fail, extend or release request."""
MAX_NAME_LEN: Final = 200
"""Longest queue name, job name or job id, in characters."""
MAX_RESERVE_QUEUES: Final = 64
MAX_RESERVE_JOBS: Final = 1_000
MAX_WAIT_MS: Final = 600_000
MIN_LEASE_MS: Final = 100
MAX_LEASE_MS: Final = 86_400_000
MAX_DELAY_MS: Final = 10 * 365 * 86_400_000
MAX_ATTEMPTS: Final = 1_000_000
MAX_ERROR_LEN: Final = 65_536
"""Longest error text in a fail item, in characters."""
MAX_LIST_LIMIT: Final = 1_000
MAX_VALUE_DEPTH: Final = 32
"""Deepest nesting allowed in a progress value."""
PRIORITY_MIN: Final = -(2**31)
PRIORITY_MAX: Final = 2**31 - 1
MAX_REQUEST_ID: Final = 2**32 - 1
MAX_TOKEN: Final = 2**64 - 1
MAX_AUTH_TOKEN_LEN: Final = 4096
"""Longest auth token a ``hello`` carries (characters); the broker refuses a longer one at start."""
MAX_TIME_MS: Final = 2**53


class Kind(IntEnum):
    """The first item of every message."""

    REQUEST = 0
    REPLY = 1
    ERROR = 2
    EVENT = 3


class Op(StrEnum):
    """Operation names carried in requests."""

    HELLO = "hello"
    PING = "ping"
    ENQUEUE = "enqueue"
    RESERVE = "reserve"
    ACK = "ack"
    FAIL = "fail"
    EXTEND = "extend"
    RELEASE = "release"
    PROGRESS = "progress"
    GET = "get"
    WAIT = "wait"
    CANCEL = "cancel"
    STATS = "stats"
    PAUSE = "pause"
    RESUME = "resume"
    CLEAN = "clean"
    LIST_FAILED = "list_failed"
    RETRY_FAILED = "retry_failed"


class Event(StrEnum):
    """Names of server-initiated events."""

    ERROR = "error"
    """``{"code": str, "message": str}``: a connection-level error; the broker closes after it."""
    DRAINING = "draining"
    """``{}``: the broker is shutting down; stop reserving, finish and ack what you hold."""


class JobState(StrEnum):
    """A job's state as seen on the wire."""

    WAITING = "waiting"
    DELAYED = "delayed"
    ACTIVE = "active"
    COMPLETED = "completed"
    FAILED = "failed"


class BackoffKind(StrEnum):
    EXPONENTIAL = "exponential"
    FIXED = "fixed"


CLEANABLE_STATES: Final = frozenset(
    {JobState.WAITING, JobState.DELAYED, JobState.COMPLETED, JobState.FAILED}
)
OK: Final = "OK"
"""The code of a successful per-item outcome."""


# --------------------------------------------------------------------------- value types


class Backoff(NamedTuple):
    """Redelivery delay policy. Wire form: ``[kind, base_ms, cap_ms?, jitter?]``."""

    kind: BackoffKind
    base_ms: int
    cap_ms: int | None = None
    jitter: float = 0.0


class Retention(NamedTuple):
    """How many finished jobs to keep, and for how long. ``None`` means no limit.

    Wire form: ``[count?, age_ms?]``; ``true`` means keep forever (``[nil, nil]``) and ``false``
    means remove at once (``[0, nil]``).
    """

    count: int | None  # type: ignore[assignment]  # shadows tuple.count; the wire name wins
    age_ms: int | None


KEEP_ALL: Final = Retention(None, None)
REMOVE_AT_ONCE: Final = Retention(0, None)


class JobSpec(NamedTuple):
    """One job of an enqueue batch. ``None`` fields take the broker's defaults.

    Wire form: ``[job_id?, name, payload, priority?, delay_ms?, run_at_ms?, max_attempts?,
    backoff?, lease_ms?, keep_completed?, keep_failed?]``; trailing items may be omitted.
    """

    job_id: str | None
    name: str
    payload: bytes
    priority: int = 0
    delay_ms: int | None = None
    run_at_ms: int | None = None
    max_attempts: int | None = None
    backoff: Backoff | None = None
    lease_ms: int | None = None
    keep_completed: Retention | None = None
    keep_failed: Retention | None = None


class AckItem(NamedTuple):
    job_id: str
    token: int
    result: bytes | None = None


class FailItem(NamedTuple):
    job_id: str
    token: int
    error: str
    retry: bool = True
    delay_ms: int | None = None


class ExtendItem(NamedTuple):
    job_id: str
    token: int
    lease_ms: int | None = None


class ReleaseItem(NamedTuple):
    """Hand a leased job back without counting its attempt; ``delay_ms`` > 0 delays it."""

    job_id: str
    token: int
    delay_ms: int | None = None


# --------------------------------------------------------------------------- requests


class Hello(NamedTuple):
    version: int
    client: str = ""
    token: str | None = None


class Ping(NamedTuple):
    pass


class Enqueue(NamedTuple):
    queue: str
    jobs: tuple[JobSpec, ...]


class Reserve(NamedTuple):
    queues: tuple[str, ...]
    max_jobs: int = 1
    wait_ms: int = 0
    lease_ms: int | None = None


class Ack(NamedTuple):
    items: tuple[AckItem, ...]


class Fail(NamedTuple):
    items: tuple[FailItem, ...]


class Extend(NamedTuple):
    items: tuple[ExtendItem, ...]


class Release(NamedTuple):
    items: tuple[ReleaseItem, ...]


class Progress(NamedTuple):
    job_id: str
    token: int
    progress: Any


class Get(NamedTuple):
    job_id: str


class Wait(NamedTuple):
    job_id: str
    timeout_ms: int = 30_000


class Cancel(NamedTuple):
    job_id: str


class Stats(NamedTuple):
    queue: str | None = None


class Pause(NamedTuple):
    queue: str


class Resume(NamedTuple):
    queue: str


class Clean(NamedTuple):
    queue: str
    state: JobState
    older_than_ms: int = 0
    limit: int | None = None


class ListFailed(NamedTuple):
    queue: str
    limit: int = 100
    offset: int = 0


class RetryFailed(NamedTuple):
    queue: str
    job_ids: tuple[str, ...] | None = None
    limit: int | None = None


Request = (
    Hello | Ping | Enqueue | Reserve | Ack | Fail | Extend | Release | Progress | Get | Wait
    | Cancel | Stats | Pause | Resume | Clean | ListFailed | RetryFailed
)

# --------------------------------------------------------------------------- replies


class ReservedJob(NamedTuple):
    """One job handed out by ``reserve``. Wire form: an array of these items in this order."""

    job_id: str
    queue: str
    name: str
    payload: bytes
    attempt: int
    """1 for the first delivery, 2 for the first retry, ..."""
    max_attempts: int
    token: int
    lease_ms: int
    lease_deadline_ms: int
    created_at_ms: int
    progress: Any = None


class Outcome(NamedTuple):
    """The result of one batch item: ``code`` is ``"OK"`` or an error code.

    On success ``value`` is op-specific (the job's new state, or the new lease deadline); on
    error it is the message.
    """

    code: str
    value: Any

    @property
    def ok(self) -> bool:
        return self.code == OK


class EnqueueResult(NamedTuple):
    ids: tuple[str, ...]
    duplicates: tuple[int, ...]
    """Indexes (into the batch) of jobs whose id already existed: nothing was created for them."""


JOB_INFO_FIELDS: Final = (
    "id", "queue", "name", "state", "priority", "attempts", "max_attempts", "payload",
    "progress", "result", "error", "created_at", "run_at", "started_at", "finished_at",
    "lease_deadline",
)


class JobInfo(NamedTuple):
    """A job as ``get``, ``wait`` and ``list_failed`` describe it.

    Wire form: a map with these keys (``JOB_INFO_FIELDS``).
    """

    id: str
    queue: str
    name: str
    state: JobState
    priority: int
    attempts: int
    max_attempts: int
    payload: bytes
    progress: Any
    result: bytes | None
    error: str | None
    created_at: int
    run_at: int
    started_at: int | None
    finished_at: int | None
    lease_deadline: int | None

    def to_wire(self) -> dict[str, Any]:
        return dict(zip(JOB_INFO_FIELDS, self, strict=True))

    @classmethod
    def from_wire(cls, body: Any) -> JobInfo:
        if not isinstance(body, Mapping):
            raise bad_argument("job", "map")
        try:
            values = [body[key] for key in JOB_INFO_FIELDS]
        except KeyError as exc:
            raise bad_argument(f"job.{exc.args[0]}", "present") from None
        values[3] = _enum(JobState, values[3], "job.state")
        return cls(*values)


QUEUE_STATS_FIELDS: Final = (
    "waiting", "delayed", "active", "completed", "failed", "paused", "oldest_waiting_ms",
    "total_completed", "total_failed",
)


class QueueStats(NamedTuple):
    """One queue's counters. Wire form: a map with these keys."""

    waiting: int
    delayed: int
    active: int
    completed: int
    failed: int
    paused: bool
    oldest_waiting_ms: int | None
    """Age of the oldest waiting job, or ``None`` when none waits."""
    total_completed: int
    """Completions since the queue was created (survives retention pruning and restarts)."""
    total_failed: int

    def to_wire(self) -> dict[str, Any]:
        return dict(zip(QUEUE_STATS_FIELDS, self, strict=True))

    @classmethod
    def from_wire(cls, body: Any) -> QueueStats:
        if not isinstance(body, Mapping):
            raise bad_argument("queue stats", "map")
        try:
            return cls(*(body[key] for key in QUEUE_STATS_FIELDS))
        except KeyError as exc:
            raise bad_argument(f"stats.{exc.args[0]}", "present") from None


# --------------------------------------------------------------------------- helpers

_new_tuple = tuple.__new__
"""Builds a NamedTuple from a tuple without the keyword-argument machinery (hot paths)."""

PLAIN_TAIL: Final = (0, None, None, None, None, None, None, None)
"""A ``JobSpec`` from ``priority`` on, when every option is left to the broker (``spec[3:]``)."""


def _enum(enum: type[_E], value: Any, field: str) -> _E:
    try:
        return enum(value)
    except ValueError:
        raise bad_argument(field, "one of " + ", ".join(e.value for e in enum)) from None
