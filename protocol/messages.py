"""Every message of protocol version 1: envelopes, operations, validation. Sans-I/O.

Theory of operation
-------------------
A message is a msgpack array whose first item is its kind:

* ``[0, request_id, op, args]``  REQUEST, client → broker. ``args`` is a map with str keys.
* ``[1, request_id, body]``      REPLY, broker → client; ``body`` is a map.
* ``[2, request_id, code, text]`` ERROR reply, broker → client.
* ``[3, event, body]``           EVENT, broker → client, not tied to any request.

The request id is chosen by the client (uint32); the reply echoes it, so one connection pipelines
many requests and the broker may answer them out of order. Events carry no request id, so a
client tells them apart by kind alone.

Validation happens here, at the boundary: ``parse_request`` turns a decoded message into one of
the typed request tuples below or raises ``ProtocolError`` naming the field. The hot paths
(enqueue, reserve, ack, fail, extend) carry their items as positional arrays, not maps, so a batch
of jobs costs one tuple per job and no dict churn. Payloads and results are msgpack ``bin``: the
broker never decodes them.

Unknown keys in an args map are ignored (forward compatibility); keys must be strings.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from enum import IntEnum, StrEnum
from typing import Any, Final, NamedTuple, TypeVar

from protocol.errors import ErrorCode, ProtocolError, bad_argument

PROTOCOL_VERSION: Final = 1
_E = TypeVar("_E", bound=StrEnum)

# Limits enforced by validation (the broker may impose tighter ones; it says so in ``hello``).
MAX_BATCH: Final = 10_000
"""Most items in one enqueue, ack, fail or extend request."""
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
    Hello | Ping | Enqueue | Reserve | Ack | Fail | Extend | Progress | Get | Wait | Cancel
    | Stats | Pause | Resume | Clean | ListFailed | RetryFailed
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


# --------------------------------------------------------------------------- field checks


def _enum(enum: type[_E], value: Any, field: str) -> _E:
    try:
        return enum(value)
    except ValueError:
        raise bad_argument(field, "one of " + ", ".join(e.value for e in enum)) from None


def _str(args: Mapping[str, Any], key: str, *, max_len: int = MAX_NAME_LEN) -> str:
    value = args.get(key)
    if type(value) is not str or not 0 < len(value) <= max_len:
        raise bad_argument(key, f"str of 1..{max_len} characters")
    return value


def _opt_str(args: Mapping[str, Any], key: str) -> str | None:
    return None if args.get(key) is None else _str(args, key)


def _int(value: Any, field: str, low: int, high: int) -> int:
    if type(value) is not int or not low <= value <= high:
        raise bad_argument(field, f"int in {low}..{high}")
    return value


def _opt_int(args: Mapping[str, Any], key: str, low: int, high: int, default: Any = None) -> Any:
    value = args.get(key)
    return default if value is None else _int(value, key, low, high)


def _array(args: Mapping[str, Any], key: str, max_items: int = MAX_BATCH) -> tuple[Any, ...]:
    value = args.get(key)
    if type(value) is not tuple or not 0 < len(value) <= max_items:
        raise bad_argument(key, f"array of 1..{max_items} items")
    return value


def _job_id(value: Any, field: str) -> str:
    if type(value) is not str or not 0 < len(value) <= MAX_NAME_LEN:
        raise bad_argument(field, f"str of 1..{MAX_NAME_LEN} characters")
    return value


def _token(value: Any, field: str) -> int:
    if type(value) is not int or not 0 <= value <= MAX_TOKEN:
        raise bad_argument(field, "uint64 lease token")
    return value


def check_value(value: Any, field: str, depth: int = 0) -> None:
    """Check an arbitrary msgpack value (progress): str keys only, bounded depth."""
    if depth > MAX_VALUE_DEPTH:
        raise bad_argument(field, f"value nested at most {MAX_VALUE_DEPTH} deep")
    if type(value) is tuple or type(value) is list:
        for item in value:
            check_value(item, field, depth + 1)
    elif type(value) is dict:
        for key, item in value.items():
            if type(key) is not str:
                raise bad_argument(field, "map with str keys")
            check_value(item, field, depth + 1)


def parse_backoff(value: Any, field: str) -> Backoff | None:
    """Parse ``nil`` or ``[kind, base_ms, cap_ms?, jitter?]``."""
    if value is None:
        return None
    if type(value) is not tuple or not 2 <= len(value) <= 4:
        raise bad_argument(field, "[kind, base_ms, cap_ms?, jitter?]")
    kind = _enum(BackoffKind, value[0], field + ".kind")
    base_ms = _int(value[1], field + ".base_ms", 0, MAX_DELAY_MS)
    cap_ms = None if len(value) < 3 or value[2] is None else _int(
        value[2], field + ".cap_ms", 0, MAX_DELAY_MS
    )
    jitter: Any = 0.0 if len(value) < 4 or value[3] is None else value[3]
    if type(jitter) not in (int, float) or not 0 <= jitter <= 1:
        raise bad_argument(field + ".jitter", "number in 0..1")
    return Backoff(kind, base_ms, cap_ms, float(jitter))


def parse_retention(value: Any, field: str) -> Retention | None:
    """Parse ``nil``, ``true``, ``false`` or ``[count?, age_ms?]``."""
    if value is None:
        return None
    if value is True:
        return KEEP_ALL
    if value is False:
        return REMOVE_AT_ONCE
    if type(value) is not tuple or len(value) != 2:
        raise bad_argument(field, "nil, bool or [count?, age_ms?]")
    count = None if value[0] is None else _int(value[0], field + ".count", 0, 2**31)
    age_ms = None if value[1] is None else _int(value[1], field + ".age_ms", 0, MAX_DELAY_MS)
    return Retention(count, age_ms)


_JOB_PAD: Final = tuple((None,) * (11 - n) for n in range(12))
_PLAIN_TAIL: Final = (0, None, None, None, None, None, None, None)
"""A ``JobSpec`` from ``priority`` on, when every option is left to the broker."""
_new_tuple = tuple.__new__


def parse_job(raw: Any, index: int) -> JobSpec:
    """Validate one enqueue item (the hot path: keep it lean)."""
    if type(raw) is not tuple or not 3 <= len(raw) <= 11:
        raise bad_argument(f"jobs[{index}]", "array of 3..11 items")
    if len(raw) < 11:
        raw = raw + _JOB_PAD[len(raw)]
    (job_id, name, payload, priority, delay_ms, run_at_ms, max_attempts, backoff, lease_ms,
     keep_completed, keep_failed) = raw
    if type(payload) is not bytes:
        raise bad_argument(f"jobs[{index}].payload", "bin")
    if type(name) is not str or len(name) > MAX_NAME_LEN:
        raise bad_argument(f"jobs[{index}].name", f"str of 0..{MAX_NAME_LEN} characters")
    if job_id is not None:
        _job_id(job_id, f"jobs[{index}].id")
        if job_id.isascii() and job_id.isdigit():
            raise bad_argument(f"jobs[{index}].id", "a str that is not all ASCII digits (those "
                               "are the broker's own ids)")
    if priority is None:
        priority = 0
    elif type(priority) is not int or not PRIORITY_MIN <= priority <= PRIORITY_MAX:
        raise bad_argument(f"jobs[{index}].priority", f"int in {PRIORITY_MIN}..{PRIORITY_MAX}")
    if delay_ms is not None:
        _int(delay_ms, f"jobs[{index}].delay_ms", 0, MAX_DELAY_MS)
    if run_at_ms is not None:
        _int(run_at_ms, f"jobs[{index}].run_at_ms", 0, MAX_TIME_MS)
    if max_attempts is not None:
        _int(max_attempts, f"jobs[{index}].max_attempts", 1, MAX_ATTEMPTS)
    if backoff is not None:
        backoff = parse_backoff(backoff, f"jobs[{index}].backoff")
    if lease_ms is not None:
        _int(lease_ms, f"jobs[{index}].lease_ms", MIN_LEASE_MS, MAX_LEASE_MS)
    if keep_completed is not None:
        keep_completed = parse_retention(keep_completed, f"jobs[{index}].keep_completed")
    if keep_failed is not None:
        keep_failed = parse_retention(keep_failed, f"jobs[{index}].keep_failed")
    return _new_tuple(JobSpec, (job_id, name, payload, priority, delay_ms, run_at_ms,
                                max_attempts, backoff, lease_ms, keep_completed, keep_failed))


# --------------------------------------------------------------------------- parsers per op


def _parse_hello(args: Mapping[str, Any]) -> Hello:
    version = _int(args.get("version"), "version", 0, 2**31)
    client = args.get("client", "")
    if client is None:
        client = ""
    if type(client) is not str or len(client) > MAX_NAME_LEN:
        raise bad_argument("client", f"str of 0..{MAX_NAME_LEN} characters")
    token = args.get("token")
    if token is not None and (type(token) is not str or len(token) > 4096):
        raise bad_argument("token", "str of 0..4096 characters or nil")
    return Hello(version, client, token)


def _parse_ping(args: Mapping[str, Any]) -> Ping:
    return Ping()


def _parse_enqueue(args: Mapping[str, Any]) -> Enqueue:
    queue = _str(args, "queue")
    raw_jobs = _array(args, "jobs")
    jobs: list[JobSpec] = []
    append = jobs.append
    for index, raw in enumerate(raw_jobs):
        # Fast path for the common job: no id, no options ([nil, name, payload]).
        if type(raw) is tuple and len(raw) == 3 and raw[0] is None:
            name, payload = raw[1], raw[2]
            if type(payload) is bytes and type(name) is str and len(name) <= MAX_NAME_LEN:
                append(_new_tuple(JobSpec, (None, name, payload, *_PLAIN_TAIL)))
                continue
        append(parse_job(raw, index))
    return Enqueue(queue, tuple(jobs))


def _parse_reserve(args: Mapping[str, Any]) -> Reserve:
    queues = _array(args, "queues", MAX_RESERVE_QUEUES)
    for i, queue in enumerate(queues):
        if type(queue) is not str or not 0 < len(queue) <= MAX_NAME_LEN:
            raise bad_argument(f"queues[{i}]", f"str of 1..{MAX_NAME_LEN} characters")
    return Reserve(
        queues,
        _opt_int(args, "max", 1, MAX_RESERVE_JOBS, 1),
        _opt_int(args, "wait_ms", 0, MAX_WAIT_MS, 0),
        _opt_int(args, "lease_ms", MIN_LEASE_MS, MAX_LEASE_MS),
    )


def _item(raw: Any, index: int, low: int, high: int) -> tuple[Any, ...]:
    if type(raw) is not tuple or not low <= len(raw) <= high:
        raise bad_argument(f"items[{index}]", f"array of {low}..{high} items")
    _job_id(raw[0], f"items[{index}].id")
    _token(raw[1], f"items[{index}].token")
    return raw


def _parse_ack(args: Mapping[str, Any]) -> Ack:
    items: list[AckItem] = []
    append = items.append
    for i, raw in enumerate(_array(args, "items")):
        # Fast path: a well-formed item passes these checks inline; anything else takes the
        # slow path below, which names the offending field.
        if type(raw) is tuple and 2 <= len(raw) <= 3:
            job_id, token = raw[0], raw[1]
            result = raw[2] if len(raw) == 3 else None
            if (
                type(job_id) is str and 0 < len(job_id) <= MAX_NAME_LEN
                and type(token) is int and 0 <= token <= MAX_TOKEN
                and (result is None or type(result) is bytes)
            ):
                append(_new_tuple(AckItem, (job_id, token, result)))
                continue
        raw = _item(raw, i, 2, 3)
        result = raw[2] if len(raw) > 2 else None
        if result is not None and type(result) is not bytes:
            raise bad_argument(f"items[{i}].result", "bin or nil")
        append(_new_tuple(AckItem, (raw[0], raw[1], result)))
    return Ack(tuple(items))


def _parse_fail(args: Mapping[str, Any]) -> Fail:
    items = []
    for i, raw in enumerate(_array(args, "items")):
        raw = _item(raw, i, 3, 5)
        error = raw[2]
        if type(error) is not str or len(error) > MAX_ERROR_LEN:
            raise bad_argument(f"items[{i}].error", f"str of 0..{MAX_ERROR_LEN} characters")
        retry = raw[3] if len(raw) > 3 and raw[3] is not None else True
        if type(retry) is not bool:
            raise bad_argument(f"items[{i}].retry", "bool")
        delay_ms = raw[4] if len(raw) > 4 else None
        if delay_ms is not None:
            _int(delay_ms, f"items[{i}].delay_ms", 0, MAX_DELAY_MS)
        items.append(FailItem(raw[0], raw[1], error, retry, delay_ms))
    return Fail(tuple(items))


def _parse_extend(args: Mapping[str, Any]) -> Extend:
    items = []
    for i, raw in enumerate(_array(args, "items")):
        raw = _item(raw, i, 2, 3)
        lease_ms = raw[2] if len(raw) > 2 else None
        if lease_ms is not None:
            _int(lease_ms, f"items[{i}].lease_ms", MIN_LEASE_MS, MAX_LEASE_MS)
        items.append(ExtendItem(raw[0], raw[1], lease_ms))
    return Extend(tuple(items))


def _parse_progress(args: Mapping[str, Any]) -> Progress:
    job_id = _job_id(args.get("id"), "id")
    token = _token(args.get("token"), "token")
    value = args.get("progress")
    check_value(value, "progress")
    return Progress(job_id, token, value)


def _parse_get(args: Mapping[str, Any]) -> Get:
    return Get(_job_id(args.get("id"), "id"))


def _parse_wait(args: Mapping[str, Any]) -> Wait:
    return Wait(
        _job_id(args.get("id"), "id"),
        _opt_int(args, "timeout_ms", 0, MAX_WAIT_MS, 30_000),
    )


def _parse_cancel(args: Mapping[str, Any]) -> Cancel:
    return Cancel(_job_id(args.get("id"), "id"))


def _parse_stats(args: Mapping[str, Any]) -> Stats:
    return Stats(_opt_str(args, "queue"))


def _parse_pause(args: Mapping[str, Any]) -> Pause:
    return Pause(_str(args, "queue"))


def _parse_resume(args: Mapping[str, Any]) -> Resume:
    return Resume(_str(args, "queue"))


def _parse_clean(args: Mapping[str, Any]) -> Clean:
    queue = _str(args, "queue")
    state = _enum(JobState, args.get("state"), "state")
    if state not in CLEANABLE_STATES:
        raise bad_argument("state", "one of waiting, delayed, completed, failed")
    return Clean(
        queue,
        state,
        _opt_int(args, "older_than_ms", 0, MAX_TIME_MS, 0),
        _opt_int(args, "limit", 1, 2**31),
    )


def _parse_list_failed(args: Mapping[str, Any]) -> ListFailed:
    return ListFailed(
        _str(args, "queue"),
        _opt_int(args, "limit", 1, MAX_LIST_LIMIT, 100),
        _opt_int(args, "offset", 0, 2**31, 0),
    )


def _parse_retry_failed(args: Mapping[str, Any]) -> RetryFailed:
    queue = _str(args, "queue")
    job_ids = None
    if args.get("ids") is not None:
        job_ids = _array(args, "ids")
        for i, job_id in enumerate(job_ids):
            _job_id(job_id, f"ids[{i}]")
    return RetryFailed(queue, job_ids, _opt_int(args, "limit", 1, 2**31))


_PARSERS: Final[dict[str, Callable[[Mapping[str, Any]], Request]]] = {
    Op.HELLO: _parse_hello,
    Op.PING: _parse_ping,
    Op.ENQUEUE: _parse_enqueue,
    Op.RESERVE: _parse_reserve,
    Op.ACK: _parse_ack,
    Op.FAIL: _parse_fail,
    Op.EXTEND: _parse_extend,
    Op.PROGRESS: _parse_progress,
    Op.GET: _parse_get,
    Op.WAIT: _parse_wait,
    Op.CANCEL: _parse_cancel,
    Op.STATS: _parse_stats,
    Op.PAUSE: _parse_pause,
    Op.RESUME: _parse_resume,
    Op.CLEAN: _parse_clean,
    Op.LIST_FAILED: _parse_list_failed,
    Op.RETRY_FAILED: _parse_retry_failed,
}


def request_id_of(message: Any) -> int | None:
    """The request id of a decoded message that looks like a request, else ``None``.

    The broker uses it to answer a malformed request with an ERROR reply (keeping the
    connection) rather than closing the connection.
    """
    if (
        type(message) is tuple
        and len(message) == 4
        and type(message[0]) is int
        and message[0] == Kind.REQUEST
        and type(message[1]) is int
        and 0 <= message[1] <= MAX_REQUEST_ID
    ):
        return message[1]
    return None


def parse_request(message: Any) -> tuple[int, str, Request]:
    """Validate a decoded REQUEST message.

    Returns:
        ``(request_id, op, request)`` where ``request`` is the op's typed tuple.

    Raises:
        ProtocolError: ``BAD_FRAME`` if the envelope is not ``[0, id, op, args]``; ``UNKNOWN_OP``;
            ``BAD_ARGUMENT`` naming the field.
    """
    request_id = request_id_of(message)
    if request_id is None:
        raise ProtocolError(ErrorCode.BAD_FRAME, "expected a request [0, request_id, op, args]")
    op, args = message[2], message[3]
    parser = _PARSERS.get(op) if type(op) is str else None
    if parser is None:
        shown = repr(op[:MAX_NAME_LEN]) if type(op) is str else f"of type {type(op).__name__}"
        raise ProtocolError(ErrorCode.UNKNOWN_OP, f"unknown op {shown}", "op")
    if type(args) is not dict:
        raise bad_argument("args", "map")
    return request_id, op, parser(args)


# --------------------------------------------------------------------------- encoders


def job_to_wire(job: JobSpec) -> tuple[Any, ...] | list[Any]:
    """The positional wire form of one job (``SPEC.md`` §9.1), without trailing defaults.

    Args:
        job: the job.

    Returns:
        ``(id, name, payload)`` for a job with every option left to the broker (the hot path:
        a tuple packs as a msgpack array), else a list with backoff and retentions as lists.
    """
    if job[3:] == _PLAIN_TAIL:
        return job[:3]
    wire: list[Any] = list(job)
    for i in (7, 9, 10):
        if wire[i] is not None:
            wire[i] = list(wire[i])
    while len(wire) > 4 and wire[-1] is None:
        wire.pop()
    if len(wire) == 4 and wire[3] == 0:
        wire.pop()
    return wire


_job_to_wire = job_to_wire  # the name the client's tests import


def request_args(request: Request) -> dict[str, Any]:
    """The wire ``args`` map of a typed request (client side)."""
    match request:
        case Hello(version, client, token):
            return {"version": version, "client": client, "token": token}
        case Enqueue(queue, jobs):
            return {"queue": queue, "jobs": [job_to_wire(job) for job in jobs]}
        case Reserve(queues, max_jobs, wait_ms, lease_ms):
            return {"queues": list(queues), "max": max_jobs, "wait_ms": wait_ms,
                    "lease_ms": lease_ms}
        case Ack(items) | Fail(items) | Extend(items):
            return {"items": [list(item) for item in items]}
        case Progress(job_id, token, value):
            return {"id": job_id, "token": token, "progress": value}
        case Get(job_id) | Cancel(job_id):
            return {"id": job_id}
        case Wait(job_id, timeout_ms):
            return {"id": job_id, "timeout_ms": timeout_ms}
        case Stats(queue):
            return {"queue": queue}
        case Pause(queue) | Resume(queue):
            return {"queue": queue}
        case Clean(queue, state, older_than_ms, limit):
            return {"queue": queue, "state": str(state), "older_than_ms": older_than_ms,
                    "limit": limit}
        case ListFailed(queue, limit, offset):
            return {"queue": queue, "limit": limit, "offset": offset}
        case RetryFailed(queue, job_ids, limit):
            return {"queue": queue, "ids": None if job_ids is None else list(job_ids),
                    "limit": limit}
        case Ping():
            return {}
    raise TypeError(f"not a request: {request!r}")


OP_OF: Final[dict[type[Any], Op]] = {
    Hello: Op.HELLO, Ping: Op.PING, Enqueue: Op.ENQUEUE, Reserve: Op.RESERVE, Ack: Op.ACK,
    Fail: Op.FAIL, Extend: Op.EXTEND, Progress: Op.PROGRESS, Get: Op.GET, Wait: Op.WAIT,
    Cancel: Op.CANCEL, Stats: Op.STATS, Pause: Op.PAUSE, Resume: Op.RESUME, Clean: Op.CLEAN,
    ListFailed: Op.LIST_FAILED, RetryFailed: Op.RETRY_FAILED,
}


def request_message(request_id: int, request: Request) -> list[Any]:
    """The wire message for a typed request: ``[0, request_id, op, args]``."""
    return [Kind.REQUEST.value, request_id, OP_OF[type(request)].value, request_args(request)]


def reply_message(request_id: int, body: Mapping[str, Any]) -> list[Any]:
    """``[1, request_id, body]``."""
    return [1, request_id, body]


def error_message(request_id: int, code: ErrorCode, text: str) -> list[Any]:
    """``[2, request_id, code, text]``."""
    return [2, request_id, code.value, text]


def event_message(event: Event, body: Mapping[str, Any]) -> list[Any]:
    """``[3, event, body]``."""
    return [3, event.value, body]


# --------------------------------------------------------------------------- reply parsing


class Reply(NamedTuple):
    request_id: int
    body: dict[str, Any]


class ErrorReply(NamedTuple):
    request_id: int
    code: str
    message: str


class ServerEvent(NamedTuple):
    event: str
    body: dict[str, Any]


def parse_server_message(message: Any) -> Reply | ErrorReply | ServerEvent:
    """Classify a decoded broker → client message (client side).

    Raises:
        ProtocolError: ``BAD_FRAME`` if it is none of REPLY, ERROR or EVENT.
    """
    if type(message) is tuple and message and type(message[0]) is int:
        kind = message[0]
        if kind == Kind.REPLY and len(message) == 3 and type(message[1]) is int:
            body = message[2]
            if type(body) is dict:
                return Reply(message[1], body)
        elif (
            kind == Kind.ERROR and len(message) == 4 and type(message[1]) is int
            and type(message[2]) is str and type(message[3]) is str
        ):
            return ErrorReply(message[1], message[2], message[3])
        elif (
            kind == Kind.EVENT and len(message) == 3 and type(message[1]) is str
            and type(message[2]) is dict
        ):
            return ServerEvent(message[1], message[2])
    raise ProtocolError(ErrorCode.BAD_FRAME, "expected a reply, error or event message")


def parse_reserved(body: Mapping[str, Any]) -> list[ReservedJob]:
    """The jobs of a ``reserve`` reply body."""
    jobs = body.get("jobs")
    if type(jobs) is not tuple:
        raise bad_argument("jobs", "array")
    out = []
    for i, raw in enumerate(jobs):
        if type(raw) is not tuple or len(raw) != 11:
            raise bad_argument(f"jobs[{i}]", "array of 11 items")
        out.append(_new_tuple(ReservedJob, raw))
    return out


def parse_outcomes(body: Mapping[str, Any]) -> list[Outcome]:
    """The per-item outcomes of an ``ack``, ``fail`` or ``extend`` reply body."""
    results = body.get("results")
    if type(results) is not tuple:
        raise bad_argument("results", "array")
    out = []
    for i, raw in enumerate(results):
        if type(raw) is not tuple or len(raw) != 2 or type(raw[0]) is not str:
            raise bad_argument(f"results[{i}]", "[code, value]")
        out.append(_new_tuple(Outcome, raw))
    return out


def parse_enqueued(body: Mapping[str, Any]) -> EnqueueResult:
    """The ids and duplicate indexes of an ``enqueue`` reply body."""
    ids, duplicates = body.get("ids"), body.get("duplicates", ())
    if type(ids) is not tuple or type(duplicates) is not tuple:
        raise bad_argument("ids", "array")
    return EnqueueResult(ids, duplicates)
