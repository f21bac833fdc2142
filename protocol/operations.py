"""Every operation of protocol version 1, each declared once. Sans-I/O.

Theory of operation
-------------------
An operation is a request type (a ``NamedTuple``, used by both sides, as h11 uses its event
classes) and one ``Operation`` declaration naming:

* the op name carried in ``[0, request_id, op, args]``;
* the request's fields in order, each with its ``args`` key, its strict check, its default when
  the key is missing or nil, and (rarely) how the client puts it on the wire;
* the client's parser of the reply body (mostly from ``protocol.replies``), whose shape the
  docstring under the declaration gives;
* whether the broker sends the reply only after the request's changes committed.

From the fields come the broker's strict parser (``Operation.parse``, generated once per op as
straight-line code, no reflection per request) and the client's ``args`` encoder
(``Operation.args``); ``protocol.messages`` wraps both in envelopes. ``OPERATIONS`` (by name) and
``OPERATION_OF`` (by request type) list every declaration, so the broker checks at import that
each has a handler. Unknown keys in ``args`` are ignored; a nil value is the same as a missing key.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Final, NamedTuple, TypeVar

from protocol.batches import parse_ack_items, parse_jobs
from protocol.checks import (
    MAX_AUTH_TOKEN_LEN,
    MAX_CONCURRENCY,
    MAX_COUNT,
    MAX_DELAY_MS,
    MAX_LEASE_MS,
    MAX_LIST_LIMIT,
    MAX_NAME_LEN,
    MAX_RATE,
    MAX_RATE_PERIOD_MS,
    MAX_RESERVE_JOBS,
    MAX_RESERVE_QUEUES,
    MAX_STATS_LIMIT,
    MAX_TIME_MS,
    MAX_WAIT_MS,
    MIN_LEASE_MS,
    MIN_RATE_PERIOD_MS,
    check_enum,
    check_int,
    check_name,
    check_token,
    check_value,
    int_in,
    names,
    text,
)
from protocol.declaration import OPERATION_OF as OPERATION_OF
from protocol.declaration import OPERATIONS as OPERATIONS
from protocol.declaration import REQUIRED as REQUIRED
from protocol.declaration import Field as Field
from protocol.declaration import Operation as Operation
from protocol.declaration import Request as Request
from protocol.declaration import declare as declare
from protocol.errors import bad_argument
from protocol.model import (
    CLEANABLE_STATES,
    AckItem,
    ExtendItem,
    FailItem,
    JobSpec,
    JobState,
    ReleaseItem,
    jobs_to_wire,
    parse_extend_items,
    parse_fail_items,
    parse_release_items,
    release_items_to_wire,
)
from protocol.replies import (
    EnqueueResult,
    FailedPage,
    JobInfo,
    JobPage,
    Outcome,
    ReservedJob,
    Retried,
    StatsReply,
    parse_enqueued,
    parse_failed_page,
    parse_job_info,
    parse_job_page,
    parse_now,
    parse_outcomes,
    parse_removed,
    parse_reserved,
    parse_retried,
    parse_state,
    parse_stats,
)

R = TypeVar("R")
T = TypeVar("T")


def _nothing(body: Mapping[str, Any]) -> None:
    return None


def _states_to_wire(states: tuple[JobState | str, ...]) -> list[str]:
    return [JobState(state).value for state in states]


# --------------------------------------------------------------------------- session


class Hello(NamedTuple):
    """The handshake; the first request of every connection."""

    version: int
    client: str = ""
    token: str | None = None


def _hello_token(value: Any, field: str) -> str:
    if type(value) is not str or len(value) > MAX_AUTH_TOKEN_LEN:
        raise bad_argument(field, f"str of 0..{MAX_AUTH_TOKEN_LEN} characters or nil")
    return value


HELLO: Final = declare(Operation(
    "hello", Hello,
    (Field("version", int_in(0, 2**31)), Field("client", text(MAX_NAME_LEN), ""),
     Field("token", _hello_token, None)),
    reply=dict,
    after_commit=False,
))
"""Reply: ``{version, server, now, max_frame, max_payload, max_batch, max_inflight}``."""


class Ping(NamedTuple):
    pass


PING: Final = declare(Operation("ping", Ping, (), reply=parse_now, after_commit=False))
"""Reply: ``{now}``."""


class Time(NamedTuple):
    """Ask for the broker's clock (for clients' clock-skew checks)."""


TIME: Final[Operation[Time, int]] = declare(Operation(
    "time", Time, (), reply=parse_now, after_commit=False,
))
"""Reply: ``{now}``: the broker's clock, Unix ms."""


# --------------------------------------------------------------------------- producers


class Enqueue(NamedTuple):
    queue: str
    jobs: Sequence[JobSpec]
    """A tuple (the client's), or ``PlainJobs`` as the broker parses a batch of plain jobs."""


ENQUEUE: Final[Operation[Enqueue, EnqueueResult]] = declare(Operation(
    "enqueue", Enqueue,
    (Field("queue", check_name), Field("jobs", parse_jobs, to_wire=jobs_to_wire)),
    reply=parse_enqueued,
    after_commit=True,  # duplicates wait too: the first enqueue of that id may not be durable
))
"""Reply: ``{ids: [str], duplicates: [index]}``."""


# --------------------------------------------------------------------------- workers


class Reserve(NamedTuple):
    queues: tuple[str, ...]
    max_jobs: int = 1
    wait_ms: int = 0
    lease_ms: int | None = None


RESERVE: Final[Operation[Reserve, list[ReservedJob]]] = declare(Operation(
    "reserve", Reserve,
    (Field("queues", names(MAX_RESERVE_QUEUES)),
     Field("max", int_in(1, MAX_RESERVE_JOBS), 1),
     Field("wait_ms", int_in(0, MAX_WAIT_MS), 0),
     Field("lease_ms", int_in(MIN_LEASE_MS, MAX_LEASE_MS), None)),
    reply=parse_reserved,
    # A reservation lost in a crash only leaves the job waiting with the attempt uncounted.
    after_commit=False,
))
"""Reply: ``{jobs: [ReservedJob as array]}``."""


class Ack(NamedTuple):
    items: Sequence[AckItem]
    """A tuple (the client's), or ``AckBatch`` as the broker parses a batch."""


ACK: Final[Operation[Ack, list[Outcome]]] = declare(Operation(
    "ack", Ack, (Field("items", parse_ack_items),), reply=parse_outcomes, after_commit=True,
))
"""Reply: ``{results: [[code, value]]}``, one per item."""


class Fail(NamedTuple):
    items: tuple[FailItem, ...]


FAIL: Final[Operation[Fail, list[Outcome]]] = declare(Operation(
    "fail", Fail, (Field("items", parse_fail_items),), reply=parse_outcomes, after_commit=True,
))
"""Reply: ``{results: [[code, value]]}``, one per item."""


class Extend(NamedTuple):
    items: tuple[ExtendItem, ...]


EXTEND: Final[Operation[Extend, list[Outcome]]] = declare(Operation(
    "extend", Extend, (Field("items", parse_extend_items),), reply=parse_outcomes,
    after_commit=True,
))
"""Reply: ``{results: [[code, value]]}``, one per item."""


class Release(NamedTuple):
    items: tuple[ReleaseItem, ...]


RELEASE: Final[Operation[Release, list[Outcome]]] = declare(Operation(
    "release", Release,
    (Field("items", parse_release_items, to_wire=release_items_to_wire),), reply=parse_outcomes,
    after_commit=True,
))
"""Reply: ``{results: [[code, value]]}``, one per item."""


class Progress(NamedTuple):
    job_id: str
    token: int
    progress: Any


PROGRESS: Final[Operation[Progress, None]] = declare(Operation(
    "progress", Progress,
    (Field("id", check_name), Field("token", check_token), Field("progress", check_value, None)),
    reply=_nothing,
    after_commit=True,
))
"""Reply: ``{}``."""


# --------------------------------------------------------------------------- jobs


# Job ids are unique per queue: ``queue`` picks the job when its user id is live in several
# queues (else ``AMBIGUOUS_ID``); broker-assigned ids are unique in the broker.
class Get(NamedTuple):
    job_id: str
    queue: str | None = None


# Reads of one job wait for the commit too: they must never show a state a crash could revert.
GET: Final[Operation[Get, JobInfo]] = declare(Operation(
    "get", Get, (Field("id", check_name), Field("queue", check_name, None)),
    reply=parse_job_info, after_commit=True,
))
"""Reply: ``{job: JobInfo map}``; ``NOT_FOUND`` when the job does not exist."""


class Wait(NamedTuple):
    job_id: str
    timeout_ms: int = 30_000
    queue: str | None = None


WAIT: Final[Operation[Wait, JobInfo]] = declare(Operation(
    "wait", Wait,
    (Field("id", check_name), Field("timeout_ms", int_in(0, MAX_WAIT_MS), 30_000),
     Field("queue", check_name, None)),
    reply=parse_job_info,
    after_commit=True,
))
"""Reply: ``{job: JobInfo map}`` once the job finished or ``timeout_ms`` passed; ``NOT_FOUND``."""


class Cancel(NamedTuple):
    job_id: str
    queue: str | None = None


CANCEL: Final[Operation[Cancel, JobState]] = declare(Operation(
    "cancel", Cancel, (Field("id", check_name), Field("queue", check_name, None)),
    reply=parse_state, after_commit=True,
))
"""Reply: ``{state: the state the job was in}``."""


# --------------------------------------------------------------------------- queues


class Stats(NamedTuple):
    queue: str | None = None
    offset: int = 0
    limit: int = MAX_STATS_LIMIT


STATS: Final[Operation[Stats, StatsReply]] = declare(Operation(
    "stats", Stats,
    (Field("queue", check_name, None), Field("offset", int_in(0, MAX_COUNT), 0),
     Field("limit", int_in(1, MAX_STATS_LIMIT), MAX_STATS_LIMIT)),
    reply=parse_stats,
    after_commit=False,
))
"""Reply: ``{queues: {name: QueueStats map}, total: int, broker: {version, connections,
uptime_ms, draining}}``: with ``queue``, that queue alone (``offset`` and ``limit`` unused);
else the queues from the ``offset``-th in creation order, at most ``limit``, and ``total`` the
number of queues."""


class Pause(NamedTuple):
    queue: str
    for_ms: int | None = None
    """A "not now" pause of this long instead of a pause until ``resume`` (SPEC §8.12)."""


PAUSE: Final[Operation[Pause, None]] = declare(Operation(
    "pause", Pause,
    (Field("queue", check_name), Field("for_ms", int_in(1, MAX_DELAY_MS), None)),
    reply=_nothing, after_commit=True,
))
"""Reply: ``{}``."""


class Resume(NamedTuple):
    queue: str


RESUME: Final[Operation[Resume, None]] = declare(Operation(
    "resume", Resume, (Field("queue", check_name),), reply=_nothing, after_commit=True,
))
"""Reply: ``{}``."""


class Clean(NamedTuple):
    queue: str
    state: JobState
    older_than_ms: int = 0
    limit: int | None = None


def _cleanable(value: Any, field: str) -> JobState:
    state = check_enum(JobState, value, field)
    if state not in CLEANABLE_STATES:
        raise bad_argument(field, "one of waiting, delayed, completed, failed")
    return state


CLEAN: Final[Operation[Clean, int]] = declare(Operation(
    "clean", Clean,
    (Field("queue", check_name), Field("state", _cleanable),
     Field("older_than_ms", int_in(0, MAX_TIME_MS), 0), Field("limit", int_in(1, MAX_COUNT), None)),
    reply=parse_removed,
    after_commit=True,
))
"""Reply: ``{removed: int}``."""


class ListFailed(NamedTuple):
    queue: str
    limit: int = 100
    offset: int = 0


LIST_FAILED: Final[Operation[ListFailed, FailedPage]] = declare(Operation(
    "list_failed", ListFailed,
    (Field("queue", check_name), Field("limit", int_in(1, MAX_LIST_LIMIT), 100),
     Field("offset", int_in(0, MAX_COUNT), 0)),
    reply=parse_failed_page,
    after_commit=False,
))
"""Reply: ``{jobs: [JobInfo map], total: int}``."""


class ListJobs(NamedTuple):
    queue: str
    states: tuple[JobState, ...]
    offset: int = 0
    limit: int = 100


def _states(value: Any, field: str) -> tuple[JobState, ...]:
    if type(value) is str:
        value = (value,)
    if type(value) is not tuple or not 0 < len(value) <= len(JobState):
        raise bad_argument(field, f"a state or an array of 1..{len(JobState)} distinct states")
    states = tuple(check_enum(JobState, item, f"{field}[{i}]") for i, item in enumerate(value))
    if len(set(states)) != len(states):
        raise bad_argument(field, "distinct states")
    return states


LIST_JOBS: Final[Operation[ListJobs, JobPage]] = declare(Operation(
    "list_jobs", ListJobs,
    (Field("queue", check_name), Field("states", _states, to_wire=_states_to_wire),
     Field("offset", int_in(0, MAX_COUNT), 0), Field("limit", int_in(1, MAX_LIST_LIMIT), 100)),
    reply=parse_job_page,
    after_commit=False,
))
"""Reply: ``{jobs: [JobInfo map, with "conn" for an active job], total: int}``."""


class RetryFailed(NamedTuple):
    queue: str
    job_ids: tuple[str, ...] | None = None
    limit: int | None = None


RETRY_FAILED: Final[Operation[RetryFailed, Retried]] = declare(Operation(
    "retry_failed", RetryFailed,
    (Field("queue", check_name), Field("ids", names(), None, to_wire=list),
     Field("limit", int_in(1, MAX_COUNT), None)),
    reply=parse_retried,
    after_commit=True,
))
"""Reply: ``{retried: int, not_failed: [ids that were not failed jobs of the queue]}``."""


class Limit(NamedTuple):
    """Set, change, clear or read a queue's flow control.

    ``rate``: ``(max, period_ms)`` to set, ``False`` to clear, ``None`` to leave it;
    ``concurrency``: a limit to set, ``False`` to clear, ``None`` to leave it. Neither: a read.
    """

    queue: str
    rate: tuple[int, int] | bool | None = None
    concurrency: int | bool | None = None


def _rate(value: Any, field: str) -> tuple[int, int] | bool:
    if value is False:
        return False
    if type(value) is not tuple or len(value) != 2:
        raise bad_argument(field, "[max, period_ms] or false")
    return (check_int(value[0], field + ".max", 1, MAX_RATE),
            check_int(value[1], field + ".period_ms", MIN_RATE_PERIOD_MS, MAX_RATE_PERIOD_MS))


def _concurrency(value: Any, field: str) -> int | bool:
    if value is False:
        return False
    return check_int(value, field, 1, MAX_CONCURRENCY)


def _rate_to_wire(value: tuple[int, int] | bool) -> list[int] | bool:
    return value if isinstance(value, bool) else list(value)


def _limits(body: Mapping[str, Any]) -> dict[str, int | None]:
    return dict(body["limits"])


LIMIT: Final[Operation[Limit, dict[str, int | None]]] = declare(Operation(
    "limit", Limit,
    (Field("queue", check_name), Field("rate", _rate, None, to_wire=_rate_to_wire),
     Field("concurrency", _concurrency, None)),
    reply=_limits,
    after_commit=True,
))
"""Reply: ``{limits: {rate_max, rate_period_ms, concurrency, paused_until}}`` (nil: not set),
the queue's flow control after the change."""


class Obliterate(NamedTuple):
    queue: str
    force: bool = False


def _flag(value: Any, field: str) -> bool:
    if type(value) is not bool:
        raise bad_argument(field, "bool")
    return value


OBLITERATE: Final[Operation[Obliterate, int]] = declare(Operation(
    "obliterate", Obliterate,
    (Field("queue", check_name), Field("force", _flag, False)),
    reply=parse_removed,
    after_commit=True,
))
"""Reply: ``{removed: int}``; ``CONFLICT`` while the queue has active jobs and ``force`` is not
set (nothing changed)."""
