"""Messages: round trips of every request, reply and event; validation of every field."""

from __future__ import annotations

import math
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocol.checks import (
    MAX_ATTEMPTS,
    MAX_BATCH,
    MAX_CONCURRENCY,
    MAX_DELAY_MS,
    MAX_ERROR_LEN,
    MAX_LEASE_MS,
    MAX_LIST_LIMIT,
    MAX_NAME_LEN,
    MAX_RATE,
    MAX_RATE_PERIOD_MS,
    MAX_RESERVE_JOBS,
    MAX_RESERVE_QUEUES,
    MAX_TIME_MS,
    MAX_TIMEOUT_MS,
    MAX_VALUE_DEPTH,
    MAX_WAIT_MS,
    MIN_RATE_PERIOD_MS,
    PRIORITY_MAX,
    PRIORITY_MIN,
)
from protocol.codec import FrameDecoder, encode_frame
from protocol.errors import ErrorCode, ProtocolError
from protocol.messages import (
    ErrorReply,
    Event,
    Reply,
    ServerEvent,
    error_message,
    event_message,
    parse_request,
    parse_server_message,
    reply_message,
    request_id_of,
    request_message,
)
from protocol.model import (
    KEEP_ALL,
    REMOVE_AT_ONCE,
    Backoff,
    BackoffKind,
    JobSpec,
    ReleaseItem,
    Retention,
)
from protocol.operations import (
    ACK,
    ENQUEUE,
    EXTEND,
    FAIL,
    GET,
    LIST_FAILED,
    OPERATIONS,
    RELEASE,
    RESERVE,
    STATS,
    WAIT,
    Hello,
    ListFailed,
    Release,
    Request,
    Reserve,
    Wait,
)
from protocol.replies import (
    EnqueueResult,
    JobInfo,
    QueueStats,
    ReservedJob,
    parse_enqueued,
    parse_outcomes,
    parse_reserved,
)
from tests.tools import strategies as s


def through_the_wire(message: Any) -> Any:
    """Encode one message as a frame and decode it again, as the peer would."""
    decoder = FrameDecoder()
    decoder.feed(encode_frame(message))
    (decoded,) = decoder.messages()
    return decoded


# --------------------------------------------------------------------------- round trips


@given(s.request_ids, s.requests())
def test_every_request_round_trips(request_id: int, request: Request) -> None:
    decoded = through_the_wire(request_message(request_id, request))
    assert parse_request(decoded) == (request_id, request_message(0, request)[2], request)


@pytest.mark.parametrize("op", sorted(OPERATIONS))
def test_each_op_round_trips(op: str) -> None:
    @given(s.request_ids, s.requests_by_op[op])
    def check(request_id: int, request: Request) -> None:
        got_id, got_op, got = parse_request(through_the_wire(request_message(request_id, request)))
        assert (got_id, got_op, got) == (request_id, op, request)
        assert type(got) is type(request)

    check()


def test_strategies_cover_every_op() -> None:
    assert set(s.requests_by_op) == set(OPERATIONS)


@given(s.request_ids, s.reply_bodies())
def test_every_reply_round_trips(request_id: int, op_body: tuple[str, dict[str, Any]]) -> None:
    op, body = op_body
    parsed = parse_server_message(through_the_wire(reply_message(request_id, body)))
    assert parsed == Reply(request_id, body)
    assert isinstance(parsed, Reply)
    got = parsed.body
    if op == ENQUEUE.name:
        assert parse_enqueued(got) == EnqueueResult(body["ids"], body["duplicates"])
    elif op == RESERVE.name:
        assert parse_reserved(got) == list(body["jobs"])
    elif op in (ACK.name, FAIL.name, EXTEND.name, RELEASE.name):
        assert parse_outcomes(got) == list(body["results"])
    elif op in (GET.name, WAIT.name):
        assert JobInfo.from_wire(got["job"]) == JobInfo.from_wire(body["job"])
    elif op == LIST_FAILED.name:
        assert [JobInfo.from_wire(j) for j in got["jobs"]] == [
            JobInfo.from_wire(j) for j in body["jobs"]
        ]
    elif op == STATS.name:
        assert {q: QueueStats.from_wire(v) for q, v in got["queues"].items()} == {
            q: QueueStats.from_wire(v) for q, v in body["queues"].items()
        }


@given(s.job_infos)
def test_job_info_round_trips(info: JobInfo) -> None:
    assert JobInfo.from_wire(through_the_wire([info.to_wire()])[0]) == info


@given(s.queue_stats)
def test_queue_stats_round_trip(stats: QueueStats) -> None:
    assert QueueStats.from_wire(through_the_wire([stats.to_wire()])[0]) == stats


@given(s.error_replies)
def test_error_replies_round_trip(reply: tuple[int, ErrorCode, str]) -> None:
    request_id, code, text = reply
    parsed = parse_server_message(through_the_wire(error_message(request_id, code, text)))
    assert parsed == ErrorReply(request_id, code.value, text)


@given(s.events)
def test_events_round_trip(event_body: tuple[Event, dict[str, Any]]) -> None:
    event, body = event_body
    parsed = parse_server_message(through_the_wire(event_message(event, body)))
    assert parsed == ServerEvent(event.value, body)


# --------------------------------------------------------------------------- envelopes


@pytest.mark.parametrize(
    "message",
    [
        None, 0, "ping", {}, (), (0,), (0, 1, "ping"), (0, 1, "ping", {}, 5),
        (1, 1, "ping", {}), (2, 1, "ping", {}), (3, 1, "ping", {}), (False, 1, "ping", {}),
        (0.0, 1, "ping", {}), ("0", 1, "ping", {}), (0, -1, "ping", {}),
        (0, 2**32, "ping", {}), (0, True, "ping", {}), (0, "1", "ping", {}),
        (0, 1.0, "ping", {}), [0, 1, "ping", {}],
    ],
)
def test_bad_envelope_is_bad_frame(message: Any) -> None:
    assert request_id_of(message) is None
    with pytest.raises(ProtocolError) as caught:
        parse_request(message)
    assert caught.value.code is ErrorCode.BAD_FRAME


def _nested(depth: int) -> Any:
    value: Any = "x"
    for _ in range(depth):
        value = (value,)
    return value


@pytest.mark.parametrize("op", ["nope", "", "PING", 5, None, b"ping", ("ping",), _nested(1020)])
def test_unknown_op_keeps_the_request_id(op: Any) -> None:
    message: tuple[Any, ...] = (0, 42, op, {})
    assert request_id_of(message) == 42
    with pytest.raises(ProtocolError) as caught:
        parse_request(message)
    assert caught.value.code is ErrorCode.UNKNOWN_OP
    assert caught.value.field == "op"


@pytest.mark.parametrize("args", [None, (), "x", 1, b"", ((("queue", "q"),),)])
def test_args_must_be_a_map(args: Any) -> None:
    with pytest.raises(ProtocolError) as caught:
        parse_request((0, 1, "ping", args))
    assert caught.value.code is ErrorCode.BAD_ARGUMENT
    assert caught.value.field == "args"


def test_request_id_bounds() -> None:
    assert parse_request((0, 0, "ping", {}))[0] == 0
    assert parse_request((0, 2**32 - 1, "ping", {}))[0] == 2**32 - 1


def test_unknown_keys_are_ignored() -> None:
    _, _, request = parse_request((0, 1, "get", {"id": "7", "future": (1, 2), "x": None}))
    assert request == parse_request((0, 1, "get", {"id": "7"}))[2]


def test_defaults() -> None:
    assert parse_request((0, 1, "hello", {"version": 1}))[2] == Hello(1, "", None)
    assert parse_request((0, 1, "hello", {"version": 1, "client": None}))[2] == Hello(1)
    assert parse_request((0, 1, "reserve", {"queues": ("q",)}))[2] == Reserve(("q",), 1, 0, None)
    assert parse_request((0, 1, "wait", {"id": "1"}))[2] == Wait("1", 30_000)
    assert parse_request((0, 1, "list_failed", {"queue": "q"}))[2] == ListFailed("q", 100, 0)
    release = parse_request((0, 1, "release", {"items": (("1", 7), ("2", 8, None))}))[2]
    assert release == Release((ReleaseItem("1", 7, None), ReleaseItem("2", 8, None)))
    release = parse_request((0, 1, "release", {"items": (("1", 7, 500, True),)}))[2]
    assert release == Release((ReleaseItem("1", 7, 500, True),))
    _, _, enqueue = parse_request((0, 1, "enqueue", {"queue": "q", "jobs": ((None, "n", b""),)}))
    assert enqueue.jobs == (JobSpec(None, "n", b""),)  # type: ignore[union-attr]


def _one_job(job: tuple[Any, ...]) -> JobSpec:
    _, _, request = parse_request((0, 1, "enqueue", {"queue": "q", "jobs": (job,)}))
    return request.jobs[0]  # type: ignore[union-attr]


def test_job_options_wire_forms() -> None:
    assert _one_job((None, "n", b"", None, None, None, None, ("fixed", 5))).backoff == Backoff(
        BackoffKind.FIXED, 5, None, 0.0
    )
    assert _one_job((None, "n", b"", None, None, None, None, ("exponential", 5, 9, 1))).backoff \
        == Backoff(BackoffKind.EXPONENTIAL, 5, 9, 1.0)
    job = _one_job((None, "n", b"", None, None, None, None, None, None, True, False))
    assert (job.keep_completed, job.keep_failed) == (KEEP_ALL, REMOVE_AT_ONCE)
    assert _one_job((None, "n", b"", 0, None, None, None, None, None, (5, None))).keep_completed \
        == Retention(5, None)
    assert _one_job((None, "n", b"", None)).priority == 0


@pytest.mark.parametrize("job_id", ["a1", "1a", " 1", "1.0", "-1", "\u0663", "\u00b2", "x" * 200])
def test_producer_ids_that_are_not_all_ascii_digits_are_accepted(job_id: str) -> None:
    assert _one_job((job_id, "n", b"")).job_id == job_id


def test_batch_limits() -> None:
    jobs = ((None, "n", b""),) * MAX_BATCH
    assert len(parse_request((0, 1, "enqueue", {"queue": "q", "jobs": jobs}))[2].jobs) == MAX_BATCH  # type: ignore[union-attr]
    with pytest.raises(ProtocolError) as caught:
        parse_request((0, 1, "enqueue", {"queue": "q", "jobs": jobs + jobs[:1]}))
    assert caught.value.field == "jobs"


def test_progress_depth_limit() -> None:
    ok = _nested(MAX_VALUE_DEPTH)
    _, _, progress = parse_request((0, 1, "progress", {"id": "1", "token": 1, "progress": ok}))
    assert progress.progress == ok  # type: ignore[union-attr]
    with pytest.raises(ProtocolError) as caught:
        parse_request((0, 1, "progress", {"id": "1", "token": 1, "progress": (ok,)}))
    assert caught.value.field == "progress"


# --------------------------------------------------------------------------- every field, wrong

MISSING = object()
"""Stands for "the key is absent" in the table below."""

JOB = ("job-1", "send", b"payload", 5, 10, 1_000, 3, ("exponential", 1_000, 60_000, 0.5), 30_000,
       (10, 3_600_000), True, 60_000)
VALID: dict[str, dict[str, Any]] = {
    "hello": {"version": 1, "client": "tests", "token": "secret"},
    "ping": {},
    "enqueue": {"queue": "q", "jobs": (JOB,)},
    "reserve": {"queues": ("a", "b"), "max": 10, "wait_ms": 100, "lease_ms": 1_000},
    "ack": {"items": (("1", 7, b"result"),)},
    "fail": {"items": (("1", 7, "boom", True, 100),)},
    "extend": {"items": (("1", 7, 1_000),)},
    "release": {"items": (("1", 7, 250),)},
    "progress": {"id": "1", "token": 7, "progress": {"pct": 50, "stage": ("a", 1)}},
    "get": {"id": "1"},
    "wait": {"id": "1", "timeout_ms": 10},
    "cancel": {"id": "1"},
    "stats": {"queue": "q"},
    "pause": {"queue": "q"},
    "resume": {"queue": "q"},
    "clean": {"queue": "q", "state": "completed", "older_than_ms": 0, "limit": 10},
    "list_failed": {"queue": "q", "limit": 10, "offset": 0},
    "retry_failed": {"queue": "q", "ids": ("a", "b"), "limit": 5},
    "subscribe": {"queues": ("a", "b"), "kinds": ("completed", "failed")},
    "unsubscribe": {"sub": 3},
    "metrics": {"queues": ("a",), "after": "a", "limit": 10, "buckets": True},
    "workers": {"all": True, "limit": 10, "offset": 0},
    "limit": {"queue": "q", "rate": (10, 1_000), "concurrency": 5},
    "schedule_upsert": {"queue": "q", "key": "nightly", "job": (None, "clean", b"p", 1),
                        "every_ms": 1_000, "cron": "0 9 * * *", "tz": "Europe/Berlin",
                        "start_ms": 1, "end_ms": 2, "limit": 3},
    "schedule_remove": {"queue": "q", "key": "nightly"},
    "schedule_list": {"queue": "q", "offset": 0, "limit": 10},
}

LONG = "x" * (MAX_NAME_LEN + 1)
NAME_BAD = [MISSING, None, 1, 1.5, True, b"q", "", LONG, ("q",), {"q": 1}]
ID_BAD = [MISSING, None, 1, True, b"1", "", LONG, ("1",), {}]
TOKEN_BAD = [MISSING, None, -1, 2**64, "7", 7.0, True, b"\x07"]
ITEMS_BAD = [MISSING, None, (), "x", 1, {}, ((),) * 0]


def _int_bad(low: int, high: int, *, required: bool = False) -> list[Any]:
    bad: list[Any] = [low - 1, high + 1, str(low), float(low), True, b"1", (low,)]
    return [*bad, MISSING, None] if required else bad


def _backoff(*items: Any) -> tuple[Any, ...]:
    return (*JOB[:7], items)


def _retention(*items: Any) -> tuple[Any, ...]:
    return (*JOB[:9], items)


# (op, path to the value, the field the error must name, bad values)
CASES: list[tuple[str, tuple[Any, ...], str, list[Any]]] = [
    ("hello", ("version",), "version", _int_bad(0, 2**31, required=True)),
    ("hello", ("client",), "client", [1, True, b"c", LONG, ("c",)]),
    ("hello", ("token",), "token", [1, True, b"t", "t" * 4097, ("t",)]),
    ("enqueue", ("queue",), "queue", NAME_BAD),
    ("enqueue", ("jobs",), "jobs", [*ITEMS_BAD, (JOB,) * (MAX_BATCH + 1)]),
    ("enqueue", ("jobs", 0), "jobs[0]", [None, (), JOB[:2], (*JOB, None), "x", 1, {}]),
    ("enqueue", ("jobs", 0, 0), "jobs[0].id", [1, True, b"x", "", LONG, "123", "0", ("a",)]),
    ("enqueue", ("jobs", 0, 1), "jobs[0].name", [None, 1, b"n", LONG, ("n",)]),
    ("enqueue", ("jobs", 0, 2), "jobs[0].payload", [None, "payload", 1, (), {}, True]),
    ("enqueue", ("jobs", 0, 3), "jobs[0].priority",
     _int_bad(PRIORITY_MIN, PRIORITY_MAX)),
    ("enqueue", ("jobs", 0, 4), "jobs[0].delay_ms", _int_bad(0, MAX_DELAY_MS)),
    ("enqueue", ("jobs", 0, 5), "jobs[0].run_at_ms", _int_bad(0, MAX_TIME_MS)),
    ("enqueue", ("jobs", 0, 6), "jobs[0].max_attempts", _int_bad(1, MAX_ATTEMPTS)),
    ("enqueue", ("jobs", 0, 7), "jobs[0].backoff",
     ["exponential", 1, True, (), ("fixed",), ("fixed", 1, 2, 0.5, 9), {}]),
    ("enqueue", ("jobs", 0), "jobs[0].backoff.kind",
     [_backoff("linear", 1), _backoff(1, 1), _backoff(None, 1), _backoff(b"fixed", 1)]),
    ("enqueue", ("jobs", 0), "jobs[0].backoff.base_ms",
     [_backoff("fixed", v) for v in _int_bad(0, MAX_DELAY_MS, required=True) if v is not MISSING]),
    ("enqueue", ("jobs", 0), "jobs[0].backoff.cap_ms",
     [_backoff("fixed", 1, v) for v in _int_bad(0, MAX_DELAY_MS)]),
    ("enqueue", ("jobs", 0), "jobs[0].backoff.jitter",
     [_backoff("fixed", 1, None, v) for v in (-0.1, 1.5, 2, "0.5", True, math.nan, math.inf)]),
    ("enqueue", ("jobs", 0, 8), "jobs[0].lease_ms", _int_bad(100, MAX_LEASE_MS)),
    ("enqueue", ("jobs", 0, 9), "jobs[0].keep_completed", ["x", 1, (1, 2, 3), {}]),
    ("enqueue", ("jobs", 0), "jobs[0].keep_completed.count",
     [_retention(v, None) for v in _int_bad(0, 2**31)]),
    ("enqueue", ("jobs", 0), "jobs[0].keep_completed.age_ms",
     [_retention(None, v) for v in _int_bad(0, MAX_DELAY_MS)]),
    ("enqueue", ("jobs", 0, 10), "jobs[0].keep_failed", ["x", 1, (1, 2, 3), {}]),
    ("enqueue", ("jobs", 0, 11), "jobs[0].timeout_ms", _int_bad(1, MAX_TIMEOUT_MS)),
    ("reserve", ("queues",), "queues",
     [*ITEMS_BAD, ("q",) * (MAX_RESERVE_QUEUES + 1)]),
    ("reserve", ("queues", 0), "queues[0]", NAME_BAD[1:]),
    ("reserve", ("max",), "max", _int_bad(1, MAX_RESERVE_JOBS)),
    ("reserve", ("wait_ms",), "wait_ms", _int_bad(0, MAX_WAIT_MS)),
    ("reserve", ("lease_ms",), "lease_ms", _int_bad(100, MAX_LEASE_MS)),
    ("ack", ("items",), "items", [*ITEMS_BAD, (("1", 7),) * (MAX_BATCH + 1)]),
    ("ack", ("items", 0), "items[0]", [None, "x", (), ("1",), ("1", 7, None, None), {}]),
    ("ack", ("items", 0, 0), "items[0].id", ID_BAD[1:]),
    ("ack", ("items", 0, 1), "items[0].token", TOKEN_BAD[1:]),
    ("ack", ("items", 0, 2), "items[0].result", ["text", 1, True, (b"r",), {}]),
    ("fail", ("items",), "items", ITEMS_BAD),
    ("fail", ("items", 0), "items[0]", [None, ("1", 7), ("1", 7, "e", True, 1, None)]),
    ("fail", ("items", 0, 0), "items[0].id", ID_BAD[1:]),
    ("fail", ("items", 0, 1), "items[0].token", TOKEN_BAD[1:]),
    ("fail", ("items", 0, 2), "items[0].error", [None, 1, b"e", "e" * (MAX_ERROR_LEN + 1)]),
    ("fail", ("items", 0, 3), "items[0].retry", [0, 1, "yes", b"", ()]),
    ("fail", ("items", 0, 4), "items[0].delay_ms", _int_bad(0, MAX_DELAY_MS)),
    ("extend", ("items",), "items", ITEMS_BAD),
    ("extend", ("items", 0), "items[0]", [None, ("1",), ("1", 7, 1_000, None)]),
    ("extend", ("items", 0, 0), "items[0].id", ID_BAD[1:]),
    ("extend", ("items", 0, 1), "items[0].token", TOKEN_BAD[1:]),
    ("extend", ("items", 0, 2), "items[0].lease_ms", _int_bad(100, MAX_LEASE_MS)),
    ("release", ("items",), "items", [*ITEMS_BAD, (("1", 7),) * (MAX_BATCH + 1)]),
    ("release", ("items", 0), "items[0]", [None, "x", (), ("1",), ("1", 7, 0, None, 1), {}]),
    ("release", ("items", 0, 0), "items[0].id", ID_BAD[1:]),
    ("release", ("items", 0, 1), "items[0].token", TOKEN_BAD[1:]),
    ("release", ("items", 0, 2), "items[0].delay_ms", _int_bad(0, MAX_DELAY_MS)),
    ("limit", ("queue",), "queue", NAME_BAD),
    ("limit", ("rate",), "rate", [True, 1, "10/s", (), (10,), (10, 1_000, 1), {}]),
    ("limit", ("rate", 0), "rate.max", _int_bad(1, MAX_RATE)),
    ("limit", ("rate", 1), "rate.period_ms", _int_bad(MIN_RATE_PERIOD_MS, MAX_RATE_PERIOD_MS)),
    ("limit", ("concurrency",), "concurrency", _int_bad(1, MAX_CONCURRENCY)),
    ("schedule_upsert", ("queue",), "queue", NAME_BAD),
    ("schedule_upsert", ("key",), "key", [MISSING, None, 1, True, b"k", "", "k" * 161, ("k",)]),
    ("schedule_upsert", ("job",), "job", [MISSING, None, (), "x", 1, {}, (None, "n")]),
    ("schedule_upsert", ("job", 0), "job.id", ["id-1", 1]),
    ("schedule_upsert", ("job", 2), "job.payload", [None, "p", 1]),
    ("schedule_upsert", ("every_ms",), "every_ms", _int_bad(1, 366 * 86_400_000)),
    ("schedule_upsert", ("cron",), "cron", [1, True, b"* * * * *", "", "   ", "x" * 201]),
    ("schedule_upsert", ("tz",), "tz", [1, True, b"UTC", "", "x" * 65]),
    ("schedule_upsert", ("start_ms",), "start_ms", _int_bad(0, MAX_TIME_MS)),
    ("schedule_upsert", ("end_ms",), "end_ms", _int_bad(0, MAX_TIME_MS)),
    ("schedule_upsert", ("limit",), "limit", _int_bad(1, 2**31)),
    ("schedule_remove", ("queue",), "queue", NAME_BAD),
    ("schedule_remove", ("key",), "key", [MISSING, None, 1, "", "k" * 161]),
    ("schedule_list", ("queue",), "queue", NAME_BAD[2:]),
    ("schedule_list", ("offset",), "offset", _int_bad(0, 2**31)),
    ("schedule_list", ("limit",), "limit", _int_bad(1, MAX_LIST_LIMIT)),
    ("progress", ("id",), "id", ID_BAD),
    ("progress", ("token",), "token", TOKEN_BAD),
    ("progress", ("progress",), "progress",
     [{1: "x"}, {b"k": 1}, ({None: 1},), _nested(MAX_VALUE_DEPTH + 1)]),
    ("get", ("id",), "id", ID_BAD),
    ("wait", ("id",), "id", ID_BAD),
    ("wait", ("timeout_ms",), "timeout_ms", _int_bad(0, MAX_WAIT_MS)),
    ("cancel", ("id",), "id", ID_BAD),
    ("stats", ("queue",), "queue", NAME_BAD[2:]),
    ("pause", ("queue",), "queue", NAME_BAD),
    ("resume", ("queue",), "queue", NAME_BAD),
    ("clean", ("queue",), "queue", NAME_BAD),
    ("clean", ("state",), "state", [MISSING, None, "active", "bogus", 1, b"failed", ("failed",)]),
    ("clean", ("older_than_ms",), "older_than_ms", _int_bad(0, MAX_TIME_MS)),
    ("clean", ("limit",), "limit", _int_bad(1, 2**31)),
    ("list_failed", ("queue",), "queue", NAME_BAD),
    ("list_failed", ("limit",), "limit", _int_bad(1, MAX_LIST_LIMIT)),
    ("list_failed", ("offset",), "offset", _int_bad(0, 2**31)),
    ("retry_failed", ("queue",), "queue", NAME_BAD),
    ("retry_failed", ("ids",), "ids", [(), "a", 1, True, {}, ("a",) * (MAX_BATCH + 1)]),
    ("retry_failed", ("ids", 0), "ids[0]", [None, 1, "", LONG, b"a"]),
    ("retry_failed", ("limit",), "limit", _int_bad(1, 2**31)),
    ("subscribe", ("queues",), "queues", [(), "a", 1, True, {}, ("a",) * 1_001]),
    ("subscribe", ("queues", 0), "queues[0]", [None, 1, "", LONG, b"a"]),
    ("subscribe", ("kinds",), "kinds", [(), "completed", 1, True, {}, ("added",) * 101]),
    ("subscribe", ("kinds", 0), "kinds[0]", [None, 1, "", "lagged", "bogus", b"added"]),
    ("unsubscribe", ("sub",), "sub", _int_bad(0, 2**53, required=True)),
    ("metrics", ("queues",), "queues", [(), "a", 1, True, {}, ("a",) * 1_001]),
    ("metrics", ("queues", 0), "queues[0]", [None, 1, "", LONG, b"a"]),
    ("metrics", ("after",), "after", NAME_BAD[2:]),
    ("metrics", ("limit",), "limit", _int_bad(1, MAX_LIST_LIMIT)),
    ("metrics", ("buckets",), "buckets", [0, 1, "true", b"", ()]),
    ("workers", ("all",), "all", [0, 1, "true", b"", ()]),
    ("workers", ("limit",), "limit", _int_bad(1, MAX_LIST_LIMIT)),
    ("workers", ("offset",), "offset", _int_bad(0, 2**31)),
]


def _replace(container: Any, path: tuple[Any, ...], value: Any) -> Any:
    key, rest = path[0], path[1:]
    if type(container) is dict:
        new = dict(container)
        if rest:
            new[key] = _replace(container[key], rest, value)
        elif value is MISSING:
            new.pop(key, None)
        else:
            new[key] = value
        return new
    items = list(container)
    items[key] = _replace(items[key], rest, value) if rest else value
    return tuple(items)


@pytest.mark.parametrize("op", sorted(VALID))
def test_valid_args_parse(op: str) -> None:
    assert parse_request((0, 9, op, VALID[op]))[:2] == (9, op)


@pytest.mark.parametrize("op", sorted(VALID))
def test_table_covers_every_field(op: str) -> None:
    covered = {case[1][0] for case in CASES if case[0] == op}
    assert covered == set(VALID[op])


@pytest.mark.parametrize(
    ("op", "path", "field", "value"),
    [
        pytest.param(op, path, field, value, id=f"{field}={value!r:.40}")
        for op, path, field, values in CASES
        for value in values
    ],
)
def test_wrong_field_is_bad_argument_naming_it(
    op: str, path: tuple[Any, ...], field: str, value: Any
) -> None:
    args = _replace(VALID[op], path, value)
    with pytest.raises(ProtocolError) as caught:
        parse_request((0, 5, op, args))
    assert caught.value.code is ErrorCode.BAD_ARGUMENT
    assert caught.value.field == field
    assert caught.value.message.startswith(field + ":")


@given(st.sampled_from(sorted(VALID)), st.data())
def test_arbitrary_values_in_known_fields_raise_only_protocol_error(
    op: str, data: st.DataObject
) -> None:
    args = {key: data.draw(st.one_of(st.just(value), s.any_msgpack()), label=key)
            for key, value in VALID[op].items()}
    try:
        parse_request((0, 1, op, args))
    except ProtocolError as exc:
        assert exc.code is ErrorCode.BAD_ARGUMENT
        assert exc.field is not None


# --------------------------------------------------------------------------- client-side parsing


@pytest.mark.parametrize(
    "message",
    [None, (), (1, 1), (1, "1", {}), (1, 1, ()), (True, 1, {}), (2, 1, "CODE"),
     (2, 1, 5, "text"), (3, 5, {}), (3, "draining", ()), (4, 1, {}), (0, 1, "ping", {})],
)
def test_parse_server_message_rejects(message: Any) -> None:
    with pytest.raises(ProtocolError) as caught:
        parse_server_message(message)
    assert caught.value.code is ErrorCode.BAD_FRAME


@pytest.mark.parametrize(
    ("parse", "body", "field"),
    [
        (parse_reserved, {}, "jobs"),
        (parse_reserved, {"jobs": ((1, 2),)}, "jobs[0]"),
        (parse_reserved, {"jobs": (("1",) * 10,)}, "jobs[0]"),
        (parse_outcomes, {"results": ()}, None),
        (parse_outcomes, {"results": (("OK",),)}, "results[0]"),
        (parse_outcomes, {"results": ((1, 2),)}, "results[0]"),
        (parse_enqueued, {"ids": None}, "ids"),
    ],
)
def test_reply_body_parsers(parse: Any, body: dict[str, Any], field: str | None) -> None:
    if field is None:
        assert parse(body) == []
        return
    with pytest.raises(ProtocolError) as caught:
        parse(body)
    assert caught.value.field == field


@given(s.reserved_jobs)
def test_reserved_job_arrays_may_grow(job: ReservedJob) -> None:
    assert parse_reserved({"jobs": ((*job, "a later field"),)}) == [job]


def test_job_info_from_wire_checks_keys_and_state() -> None:
    wire = JobInfo("1", "q", "n", "waiting", 0, 0, 3, b"", None, None, None, 1, 1,  # type: ignore[arg-type]
                   None, None, None).to_wire()
    assert JobInfo.from_wire({**wire, "future": 1}) == JobInfo.from_wire(wire)
    for bad, field in ((None, "job"), ({k: v for k, v in wire.items() if k != "name"}, "job.name"),
                       ({**wire, "state": "gone"}, "job.state")):
        with pytest.raises(ProtocolError) as caught:
            JobInfo.from_wire(bad)
        assert caught.value.field == field
    with pytest.raises(ProtocolError):
        QueueStats.from_wire({"waiting": 1})
