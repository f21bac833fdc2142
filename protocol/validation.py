"""Validation of incoming requests: ``parse_request`` and the field checks. Sans-I/O.

``parse_request`` turns a decoded REQUEST message into ``(request_id, op, typed request)`` or
raises ``ProtocolError``: ``BAD_FRAME`` for a bad envelope (the connection cannot go on),
``UNKNOWN_OP``, or ``BAD_ARGUMENT`` whose ``field`` is the dotted path of the offending field
(``"jobs[3].priority"``) and whose message starts with it. Unknown keys in ``args`` are ignored;
a nil value is the same as a missing key.

The hot paths (enqueue, ack) check well-formed items inline and fall back to the per-field
checks only to name what is wrong, so a valid batch costs one tuple per item and no dict churn.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Final

from protocol.errors import ErrorCode, ProtocolError, bad_argument
from protocol.model import (
    CLEANABLE_STATES,
    KEEP_ALL,
    MAX_ATTEMPTS,
    MAX_AUTH_TOKEN_LEN,
    MAX_BATCH,
    MAX_DELAY_MS,
    MAX_ERROR_LEN,
    MAX_LEASE_MS,
    MAX_LIST_LIMIT,
    MAX_NAME_LEN,
    MAX_REQUEST_ID,
    MAX_RESERVE_JOBS,
    MAX_RESERVE_QUEUES,
    MAX_TIME_MS,
    MAX_TOKEN,
    MAX_VALUE_DEPTH,
    MAX_WAIT_MS,
    MIN_LEASE_MS,
    PLAIN_TAIL,
    PRIORITY_MAX,
    PRIORITY_MIN,
    REMOVE_AT_ONCE,
    Ack,
    AckItem,
    Backoff,
    BackoffKind,
    Cancel,
    Clean,
    Enqueue,
    Extend,
    ExtendItem,
    Fail,
    FailItem,
    Get,
    Hello,
    JobSpec,
    JobState,
    Kind,
    ListFailed,
    Op,
    Pause,
    Ping,
    Progress,
    Release,
    ReleaseItem,
    Request,
    Reserve,
    Resume,
    Retention,
    RetryFailed,
    Stats,
    Wait,
    _enum,
    _new_tuple,
)

# --------------------------------------------------------------------------- field checks

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
    if type(value) is not tuple or len(value) > 2:
        raise bad_argument(field, "nil, bool or [count?, age_ms?]")
    value += (None,) * (2 - len(value))  # trailing optional items may be omitted (SPEC §9)
    count = None if value[0] is None else _int(value[0], field + ".count", 0, 2**31)
    age_ms = None if value[1] is None else _int(value[1], field + ".age_ms", 0, MAX_DELAY_MS)
    return Retention(count, age_ms)


_JOB_PAD: Final = tuple((None,) * (11 - n) for n in range(12))


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
    if token is not None and (type(token) is not str or len(token) > MAX_AUTH_TOKEN_LEN):
        raise bad_argument("token", f"str of 0..{MAX_AUTH_TOKEN_LEN} characters or nil")
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
                append(_new_tuple(JobSpec, (None, name, payload, *PLAIN_TAIL)))
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


def _parse_release(args: Mapping[str, Any]) -> Release:
    items = []
    for i, raw in enumerate(_array(args, "items")):
        raw = _item(raw, i, 2, 3)
        delay_ms = raw[2] if len(raw) > 2 else None
        if delay_ms is not None:
            _int(delay_ms, f"items[{i}].delay_ms", 0, MAX_DELAY_MS)
        items.append(ReleaseItem(raw[0], raw[1], delay_ms))
    return Release(tuple(items))


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
    Op.RELEASE: _parse_release,
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
    op, request = parse_request_body(message)
    return request_id, op, request


def parse_request_body(message: tuple[Any, ...]) -> tuple[str, Request]:
    """``parse_request`` for a message whose envelope ``request_id_of`` already accepted.

    Returns:
        ``(op, request)``.

    Raises:
        ProtocolError: ``UNKNOWN_OP``; ``BAD_ARGUMENT`` naming the field.
    """
    op, args = message[2], message[3]
    parser = _PARSERS.get(op) if type(op) is str else None
    if parser is None:
        shown = repr(op[:MAX_NAME_LEN]) if type(op) is str else f"of type {type(op).__name__}"
        raise ProtocolError(ErrorCode.UNKNOWN_OP, f"unknown op {shown}", "op")
    if type(args) is not dict:
        raise bad_argument("args", "map")
    return op, parser(args)

