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

Validation happens at the boundary: ``parse_request`` (``protocol.validation``) turns a decoded
message into one of the typed request tuples (``protocol.model``) or raises ``ProtocolError``
naming the field. The hot paths (enqueue, reserve, ack, fail, extend) carry their items as
positional arrays, not maps, so a batch of jobs costs one tuple per job and no dict churn.
Payloads and results are msgpack ``bin``: the broker never decodes them.

Unknown keys in an args map are ignored (forward compatibility); keys must be strings.

This module is the public face of the three: it builds envelopes (``request_message``,
``reply_message``, ``error_message``, ``event_message``), parses what the broker sends
(``parse_server_message`` and the body parsers), and re-exports every name of
``protocol.model`` and ``protocol.validation``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final, NamedTuple

from protocol.errors import ErrorCode, ProtocolError, bad_argument
from protocol.model import (
    CLEANABLE_STATES,
    JOB_INFO_FIELDS,
    KEEP_ALL,
    MAX_ATTEMPTS,
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
    OK,
    PLAIN_TAIL,
    PRIORITY_MAX,
    PRIORITY_MIN,
    PROTOCOL_VERSION,
    QUEUE_STATS_FIELDS,
    REMOVE_AT_ONCE,
    Ack,
    AckItem,
    Backoff,
    BackoffKind,
    Cancel,
    Clean,
    Enqueue,
    EnqueueResult,
    Event,
    Extend,
    ExtendItem,
    Fail,
    FailItem,
    Get,
    Hello,
    JobInfo,
    JobSpec,
    JobState,
    Kind,
    ListFailed,
    Op,
    Outcome,
    Pause,
    Ping,
    Progress,
    QueueStats,
    Release,
    ReleaseItem,
    Request,
    Reserve,
    ReservedJob,
    Resume,
    Retention,
    RetryFailed,
    Stats,
    Wait,
    _new_tuple,
)
from protocol.validation import (
    check_value,
    parse_backoff,
    parse_job,
    parse_request,
    parse_request_body,
    parse_retention,
    request_id_of,
)

__all__ = [
    "CLEANABLE_STATES",
    "JOB_INFO_FIELDS",
    "KEEP_ALL",
    "MAX_ATTEMPTS",
    "MAX_BATCH",
    "MAX_DELAY_MS",
    "MAX_ERROR_LEN",
    "MAX_LEASE_MS",
    "MAX_LIST_LIMIT",
    "MAX_NAME_LEN",
    "MAX_REQUEST_ID",
    "MAX_RESERVE_JOBS",
    "MAX_RESERVE_QUEUES",
    "MAX_TIME_MS",
    "MAX_TOKEN",
    "MAX_VALUE_DEPTH",
    "MAX_WAIT_MS",
    "MIN_LEASE_MS",
    "OK",
    "OP_OF",
    "PRIORITY_MAX",
    "PRIORITY_MIN",
    "PROTOCOL_VERSION",
    "QUEUE_STATS_FIELDS",
    "REMOVE_AT_ONCE",
    "Ack",
    "AckItem",
    "Backoff",
    "BackoffKind",
    "Cancel",
    "Clean",
    "Enqueue",
    "EnqueueResult",
    "ErrorReply",
    "Event",
    "Extend",
    "ExtendItem",
    "Fail",
    "FailItem",
    "Get",
    "Hello",
    "JobInfo",
    "JobSpec",
    "JobState",
    "Kind",
    "ListFailed",
    "Op",
    "Outcome",
    "Pause",
    "Ping",
    "Progress",
    "QueueStats",
    "Release",
    "ReleaseItem",
    "Reply",
    "Request",
    "Reserve",
    "ReservedJob",
    "Resume",
    "Retention",
    "RetryFailed",
    "ServerEvent",
    "Stats",
    "Wait",
    "_job_to_wire",
    "check_value",
    "error_message",
    "event_message",
    "job_to_wire",
    "parse_backoff",
    "parse_enqueued",
    "parse_job",
    "parse_outcomes",
    "parse_request",
    "parse_request_body",
    "parse_reserved",
    "parse_retention",
    "parse_server_message",
    "reply_message",
    "request_args",
    "request_id_of",
    "request_message",
]

# --------------------------------------------------------------------------- encoders


def job_to_wire(job: JobSpec) -> tuple[Any, ...] | list[Any]:
    """The positional wire form of one job (``SPEC.md`` §9.1), without trailing defaults.

    Args:
        job: the job.

    Returns:
        ``(id, name, payload)`` for a job with every option left to the broker (the hot path:
        a tuple packs as a msgpack array), else a list with backoff and retentions as lists.
    """
    if job[3:] == PLAIN_TAIL:
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


def _enqueue_args(request: Enqueue) -> dict[str, Any]:
    return {"queue": request.queue, "jobs": [job_to_wire(job) for job in request.jobs]}


def request_args(request: Request) -> dict[str, Any]:
    """The wire ``args`` map of a typed request (client side)."""
    match request:
        case Hello(version, client, token):
            return {"version": version, "client": client, "token": token}
        case Enqueue():
            return _enqueue_args(request)
        case Reserve(queues, max_jobs, wait_ms, lease_ms):
            return {"queues": list(queues), "max": max_jobs, "wait_ms": wait_ms,
                    "lease_ms": lease_ms}
        case Ack(items) | Fail(items) | Extend(items) | Release(items):
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
    Fail: Op.FAIL, Extend: Op.EXTEND, Release: Op.RELEASE, Progress: Op.PROGRESS, Get: Op.GET,
    Wait: Op.WAIT, Cancel: Op.CANCEL, Stats: Op.STATS, Pause: Op.PAUSE, Resume: Op.RESUME,
    Clean: Op.CLEAN, ListFailed: Op.LIST_FAILED, RetryFailed: Op.RETRY_FAILED,
}


_OP_NAME: Final[dict[type[Any], str]] = {cls: op.value for cls, op in OP_OF.items()}
_REQUEST: Final = Kind.REQUEST.value
_ENQUEUE: Final = Op.ENQUEUE.value


def request_message(request_id: int, request: Request) -> list[Any]:
    """The wire message for a typed request: ``[0, request_id, op, args]``."""
    if type(request) is Enqueue:  # the producer's hot path, without the match in request_args
        return [_REQUEST, request_id, _ENQUEUE, _enqueue_args(request)]
    return [_REQUEST, request_id, _OP_NAME[type(request)], request_args(request)]


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
    """The jobs of a ``reserve`` reply body.

    Items a later protocol version appends to a job's array are ignored (``SPEC.md`` §9.4).

    Raises:
        ProtocolError: ``BAD_ARGUMENT`` if the body is not shaped as SPEC.md says.
    """
    jobs = body.get("jobs")
    if type(jobs) is not tuple:
        raise bad_argument("jobs", "array")
    out = []
    for i, raw in enumerate(jobs):
        if type(raw) is not tuple or len(raw) < 11:
            raise bad_argument(f"jobs[{i}]", "array of at least 11 items")
        out.append(_new_tuple(ReservedJob, raw if len(raw) == 11 else raw[:11]))
    return out


def parse_outcomes(body: Mapping[str, Any]) -> list[Outcome]:
    """The per-item outcomes of an ``ack``, ``fail``, ``extend`` or ``release`` reply body."""
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
