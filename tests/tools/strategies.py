"""Hypothesis strategies for every jobwire protocol message, reusable by any test.

Every strategy draws values that the protocol accepts, in the exact form the decoder gives them
back (arrays as tuples, maps as dicts with str keys, payloads as bytes), so a round trip through
``request_message`` → ``encode_frame`` → ``FrameDecoder`` → ``parse_request`` compares equal.

Requests: ``requests()`` (any op) or the per-op strategies (``enqueues()``, ``reserves()``, ...);
``requests_by_op`` maps each op name to its strategy. Replies: ``reserved_jobs()``, ``outcomes()``,
``job_infos()``, ``queue_stats()``, ``hello_bodies()``, ``reply_bodies()`` (``(op, body)`` pairs
shaped like the broker's replies), ``error_replies()``, ``events()``. Values: ``msgpack_values()``
(anything a progress field may hold), ``any_msgpack()`` (anything msgpack can carry, including
values the protocol rejects: for fuzzing).
"""

from __future__ import annotations

from typing import Any

from hypothesis import strategies as st

from protocol.checks import (
    MAX_ATTEMPTS,
    MAX_CONCURRENCY,
    MAX_DELAY_MS,
    MAX_EVERY_MS,
    MAX_LEASE_MS,
    MAX_LIST_LIMIT,
    MAX_NAME_LEN,
    MAX_RATE,
    MAX_RATE_PERIOD_MS,
    MAX_REQUEST_ID,
    MAX_RESERVE_JOBS,
    MAX_RESERVE_QUEUES,
    MAX_SCHEDULE_KEY_LEN,
    MAX_STATS_LIMIT,
    MAX_TIME_MS,
    MAX_TIMEOUT_MS,
    MAX_TOKEN,
    MAX_VALUE_DEPTH,
    MAX_WAIT_MS,
    MIN_EVERY_MS,
    MIN_LEASE_MS,
    MIN_RATE_PERIOD_MS,
    MIN_TIMEOUT_MS,
    PRIORITY_MAX,
    PRIORITY_MIN,
)
from protocol.errors import ErrorCode
from protocol.messages import PROTOCOL_VERSION, Event
from protocol.model import (
    CLEANABLE_STATES,
    AckItem,
    Backoff,
    BackoffKind,
    ExtendItem,
    FailItem,
    JobSpec,
    JobState,
    ReleaseItem,
    Retention,
)
from protocol.observing import (
    METRICS,
    SUBSCRIBABLE,
    SUBSCRIBE,
    UNSUBSCRIBE,
    WORKERS,
    Metrics,
    Subscribe,
    Unsubscribe,
    Workers,
)
from protocol.operations import (
    ACK,
    CANCEL,
    CLEAN,
    ENQUEUE,
    EXTEND,
    FAIL,
    GET,
    HELLO,
    LIMIT,
    LIST_FAILED,
    LIST_JOBS,
    OBLITERATE,
    OPERATIONS,
    PAUSE,
    PING,
    PROGRESS,
    RELEASE,
    RESERVE,
    RESUME,
    RETRY_FAILED,
    STATS,
    WAIT,
    Ack,
    Cancel,
    Clean,
    Enqueue,
    Extend,
    Fail,
    Get,
    Hello,
    Limit,
    ListFailed,
    ListJobs,
    Obliterate,
    Pause,
    Ping,
    Progress,
    Release,
    Request,
    Reserve,
    Resume,
    RetryFailed,
    Stats,
    Wait,
)
from protocol.replies import OK, JobInfo, Outcome, QueueStats, ReservedJob
from protocol.scheduling import (
    SCHEDULE_LIST,
    SCHEDULE_REMOVE,
    SCHEDULE_UPSERT,
    ScheduleList,
    ScheduleRemove,
    ScheduleUpsert,
)

INT64_MIN = -(2**63)
UINT64_MAX = 2**64 - 1
BATCH = 6
"""Most items a drawn batch holds: enough to exercise indexing, few enough to stay fast."""

# --------------------------------------------------------------------------- scalars

request_ids = st.integers(0, MAX_REQUEST_ID)
tokens = st.integers(0, MAX_TOKEN)
times_ms = st.integers(0, MAX_TIME_MS)
payloads = st.binary(max_size=64)

names = st.one_of(
    st.text(min_size=1, max_size=16),
    st.text(alphabet="abcdefghijklmnopqrstuvwxyz-_.:0123456789", min_size=1, max_size=24),
    st.just("q" * MAX_NAME_LEN),
)
"""Queue names and job ids as the broker accepts them (1..200 characters)."""

job_names = st.one_of(st.just(""), names)
"""Job names may also be empty."""

producer_ids = names.filter(lambda s: not (s.isascii() and s.isdigit()))
"""Ids a producer may choose: anything but all ASCII digits (reserved for broker ids)."""

broker_ids = st.integers(1, 2**53).map(str)
"""Ids as the broker assigns them."""

job_ids = st.one_of(broker_ids, producer_ids)


def _depth(value: Any) -> int:
    if type(value) is tuple:
        return 1 + max((_depth(v) for v in value), default=0)
    if type(value) is dict:
        return 1 + max((_depth(v) for v in value.values()), default=0)
    return 0


_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(INT64_MIN, UINT64_MAX),
    st.floats(allow_nan=False),
    st.text(max_size=16),
    st.binary(max_size=16),
)


def msgpack_values(max_leaves: int = 12) -> st.SearchStrategy[Any]:
    """Any value a progress field may hold: scalars, tuples, str-keyed maps, depth <= 32."""
    return st.recursive(
        _scalars,
        lambda children: st.one_of(
            st.lists(children, max_size=4).map(tuple),
            st.dictionaries(st.text(max_size=8), children, max_size=4),
        ),
        max_leaves=max_leaves,
    ).filter(lambda v: _depth(v) <= MAX_VALUE_DEPTH)


def any_msgpack(max_leaves: int = 16) -> st.SearchStrategy[Any]:
    """Anything msgpack can encode, including non-str keys: for fuzzing validators."""
    keys = st.one_of(st.text(max_size=8), st.binary(max_size=4), st.integers(-5, 5), st.none(),
                     st.booleans())
    return st.recursive(
        _scalars,
        lambda children: st.one_of(
            st.lists(children, max_size=5).map(tuple),
            st.dictionaries(keys, children, max_size=4),
        ),
        max_leaves=max_leaves,
    )


# --------------------------------------------------------------------------- job options

backoffs = st.builds(
    Backoff,
    st.sampled_from(BackoffKind),
    st.integers(0, MAX_DELAY_MS),
    st.one_of(st.none(), st.integers(0, MAX_DELAY_MS)),
    st.one_of(st.just(0.0), st.floats(0.0, 1.0)),
)

retentions = st.builds(
    Retention,
    st.one_of(st.none(), st.integers(0, 2**31)),
    st.one_of(st.none(), st.integers(0, MAX_DELAY_MS)),
)


def _opt(strategy: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.one_of(st.none(), strategy)


job_specs = st.builds(
    JobSpec,
    _opt(producer_ids),
    job_names,
    payloads,
    st.integers(PRIORITY_MIN, PRIORITY_MAX),
    _opt(st.integers(0, MAX_DELAY_MS)),
    _opt(times_ms),
    _opt(st.integers(1, MAX_ATTEMPTS)),
    _opt(backoffs),
    _opt(st.integers(MIN_LEASE_MS, MAX_LEASE_MS)),
    _opt(retentions),
    _opt(retentions),
    _opt(st.integers(MIN_TIMEOUT_MS, MAX_TIMEOUT_MS)),
)

plain_job_specs = st.tuples(job_names, payloads).map(lambda t: JobSpec(None, *t))
"""Jobs with every option left to the broker (the common case)."""


def _batch(strategy: st.SearchStrategy[Any], max_size: int = BATCH) -> st.SearchStrategy[Any]:
    return st.lists(strategy, min_size=1, max_size=max_size).map(tuple)


# --------------------------------------------------------------------------- requests

hellos = st.builds(
    Hello,
    st.one_of(st.just(PROTOCOL_VERSION), st.integers(0, 2**31)),
    st.one_of(st.just(""), names),
    _opt(st.text(max_size=64)),
)
pings = st.just(Ping())
enqueues = st.builds(Enqueue, names, _batch(st.one_of(plain_job_specs, job_specs)))
reserves = st.builds(
    Reserve,
    _batch(names, max_size=min(BATCH, MAX_RESERVE_QUEUES)),
    st.integers(1, MAX_RESERVE_JOBS),
    st.integers(0, MAX_WAIT_MS),
    _opt(st.integers(MIN_LEASE_MS, MAX_LEASE_MS)),
)
ack_items = st.builds(AckItem, job_ids, tokens, _opt(payloads))
fail_items = st.builds(
    FailItem, job_ids, tokens, st.text(max_size=40), st.booleans(),
    _opt(st.integers(0, MAX_DELAY_MS)),
)
extend_items = st.builds(ExtendItem, job_ids, tokens, _opt(st.integers(MIN_LEASE_MS, MAX_LEASE_MS)))
release_items = st.builds(
    ReleaseItem, job_ids, tokens, _opt(st.integers(0, MAX_DELAY_MS)), st.booleans()
)
acks = st.builds(Ack, _batch(ack_items))
fails = st.builds(Fail, _batch(fail_items))
extends = st.builds(Extend, _batch(extend_items))
releases = st.builds(Release, _batch(release_items))
progresses = st.builds(Progress, job_ids, tokens, msgpack_values())
gets = st.builds(Get, job_ids, _opt(names))
waits = st.builds(Wait, job_ids, st.integers(0, MAX_WAIT_MS), _opt(names))
cancels = st.builds(Cancel, job_ids, _opt(names))
stats = st.builds(Stats, _opt(names), st.integers(0, 2**31), st.integers(1, MAX_STATS_LIMIT))
pauses = st.builds(Pause, names, _opt(st.integers(1, MAX_DELAY_MS)))
resumes = st.builds(Resume, names)
cleans = st.builds(
    Clean, names, st.sampled_from(sorted(CLEANABLE_STATES)), times_ms,
    _opt(st.integers(1, 2**31)),
)
list_faileds = st.builds(
    ListFailed, names, st.integers(1, MAX_LIST_LIMIT), st.integers(0, 2**31)
)
list_jobs = st.builds(
    ListJobs, names, st.lists(st.sampled_from(JobState), min_size=1, max_size=5, unique=True)
    .map(tuple), st.integers(0, 2**31), st.integers(1, MAX_LIST_LIMIT),
)
retry_faileds = st.builds(
    RetryFailed, names, _opt(_batch(job_ids)), _opt(st.integers(1, 2**31))
)
obliterates = st.builds(Obliterate, names, st.booleans())

limits = st.builds(
    Limit, names,
    st.none() | st.just(False) | st.tuples(st.integers(1, MAX_RATE),
                                           st.integers(MIN_RATE_PERIOD_MS, MAX_RATE_PERIOD_MS)),
    st.none() | st.just(False) | st.integers(1, MAX_CONCURRENCY),
)
subscribes = st.builds(
    Subscribe, _opt(_batch(names)),
    _opt(st.frozensets(st.sampled_from(sorted(SUBSCRIBABLE)), min_size=1)),
)
unsubscribes = st.builds(Unsubscribe, st.integers(0, 2**53))
metrics = st.builds(
    Metrics, _opt(_batch(names)), _opt(names), st.integers(1, MAX_LIST_LIMIT), st.booleans()
)
templates = st.builds(
    JobSpec, st.none(), job_names, payloads, st.integers(PRIORITY_MIN, PRIORITY_MAX), st.none(),
    st.none(), _opt(st.integers(1, MAX_ATTEMPTS)), _opt(backoffs),
    _opt(st.integers(MIN_LEASE_MS, MAX_LEASE_MS)), _opt(retentions), _opt(retentions),
    _opt(st.integers(MIN_TIMEOUT_MS, MAX_TIMEOUT_MS)),
)
schedule_keys = st.text(min_size=1, max_size=MAX_SCHEDULE_KEY_LEN)
schedule_upserts = st.builds(
    ScheduleUpsert, names, schedule_keys, templates,
    _opt(st.integers(MIN_EVERY_MS, MAX_EVERY_MS)), _opt(st.sampled_from(("0 9 * * *", "@daily"))),
    _opt(st.sampled_from(("UTC", "Europe/Berlin"))), _opt(times_ms), _opt(times_ms),
    _opt(st.integers(1, 2**31)),
)
schedule_removes = st.builds(ScheduleRemove, names, schedule_keys)
schedule_lists = st.builds(ScheduleList, _opt(names), st.integers(0, 2**31),
                           st.integers(1, MAX_LIST_LIMIT))
workers = st.builds(Workers, st.booleans(), st.integers(1, MAX_LIST_LIMIT), st.integers(0, 2**31))

requests_by_op: dict[str, st.SearchStrategy[Any]] = {
    HELLO.name: hellos,
    PING.name: pings,
    ENQUEUE.name: enqueues,
    RESERVE.name: reserves,
    ACK.name: acks,
    FAIL.name: fails,
    EXTEND.name: extends,
    RELEASE.name: releases,
    PROGRESS.name: progresses,
    GET.name: gets,
    WAIT.name: waits,
    CANCEL.name: cancels,
    STATS.name: stats,
    PAUSE.name: pauses,
    RESUME.name: resumes,
    CLEAN.name: cleans,
    LIST_FAILED.name: list_faileds,
    LIST_JOBS.name: list_jobs,
    RETRY_FAILED.name: retry_faileds,
    LIMIT.name: limits,
    OBLITERATE.name: obliterates,
    SUBSCRIBE.name: subscribes,
    UNSUBSCRIBE.name: unsubscribes,
    METRICS.name: metrics,
    WORKERS.name: workers,
    SCHEDULE_UPSERT.name: schedule_upserts,
    SCHEDULE_REMOVE.name: schedule_removes,
    SCHEDULE_LIST.name: schedule_lists,
}
requests_by_op.update({  # an op without fields has one request: its declaration says it all
    name: st.just(op.request_type()) for name, op in OPERATIONS.items()
    if not op.fields and name not in requests_by_op
})


def requests() -> st.SearchStrategy[Request]:
    """Any valid typed request."""
    return st.one_of(*requests_by_op.values())


# --------------------------------------------------------------------------- replies

reserved_jobs = st.builds(
    ReservedJob,
    job_ids, names, job_names, payloads,
    st.integers(1, MAX_ATTEMPTS), st.integers(1, MAX_ATTEMPTS), tokens,
    st.integers(MIN_LEASE_MS, MAX_LEASE_MS), times_ms, times_ms,
    msgpack_values(max_leaves=4), _opt(st.integers(MIN_TIMEOUT_MS, MAX_TIMEOUT_MS)),
)

error_codes = st.sampled_from(ErrorCode)

outcomes = st.one_of(
    st.builds(Outcome, st.just(OK),
              st.sampled_from(["completed", "waiting", "delayed", "failed"])),
    st.builds(Outcome, st.just(OK), times_ms),
    st.builds(Outcome, error_codes.map(str), st.text(max_size=40)),
)

job_infos = st.builds(
    JobInfo,
    job_ids, names, job_names, st.sampled_from(JobState),
    st.integers(PRIORITY_MIN, PRIORITY_MAX), st.integers(0, MAX_ATTEMPTS),
    st.integers(1, MAX_ATTEMPTS), payloads, msgpack_values(max_leaves=4), _opt(payloads),
    _opt(st.text(max_size=40)), times_ms, times_ms, _opt(times_ms), _opt(times_ms),
    _opt(times_ms),
    _opt(st.fixed_dictionaries({"conn": st.integers(1, 2**40), "client": _opt(names),
                                "host": _opt(names)})),
    _opt(st.integers(1, 2**40)),
)

queue_stats = st.builds(
    QueueStats,
    *(st.integers(0, 2**40) for _ in range(5)),
    st.booleans(),
    _opt(st.integers(0, 2**40)),
    st.integers(0, 2**53),
    st.integers(0, 2**53),
)

hello_bodies = st.fixed_dictionaries({
    "version": st.just(PROTOCOL_VERSION),
    "server": st.text(max_size=32),
    "now": times_ms,
    "max_frame": st.integers(1, 2**32 - 1),
    "max_payload": st.integers(1, 2**32 - 1),
    "max_batch": st.integers(1, 10_000),
    "max_inflight": st.integers(1, 2**31),
})


@st.composite
def _enqueue_bodies(draw: st.DrawFn) -> dict[str, Any]:
    ids = draw(_batch(job_ids))
    dups = draw(st.sets(st.integers(0, len(ids) - 1)))
    return {"ids": ids, "duplicates": tuple(sorted(dups))}


def reply_bodies() -> st.SearchStrategy[tuple[str, dict[str, Any]]]:
    """``(op, body)``: a reply body for each op, as the broker sends it (``protocol/SPEC.md``)."""
    job_map = job_infos.map(JobInfo.to_wire)
    per_op: list[st.SearchStrategy[tuple[str, dict[str, Any]]]] = [
        st.tuples(st.just(HELLO.name), hello_bodies),
        st.tuples(st.just(PING.name), st.fixed_dictionaries({"now": times_ms})),
        st.tuples(st.just(ENQUEUE.name), _enqueue_bodies()),
        st.tuples(st.just(RESERVE.name), st.fixed_dictionaries(
            {"jobs": st.lists(reserved_jobs, max_size=BATCH).map(tuple)})),
        *(
            st.tuples(st.just(op), st.fixed_dictionaries(
                {"results": st.lists(outcomes, max_size=BATCH).map(tuple)}))
            for op in (ACK.name, FAIL.name, EXTEND.name, RELEASE.name)
        ),
        *(st.tuples(st.just(op), st.just({})) for op in (PROGRESS.name, PAUSE.name, RESUME.name)),
        *(st.tuples(st.just(op), st.fixed_dictionaries({"job": job_map}))
          for op in (GET.name, WAIT.name)),
        st.tuples(st.just(CANCEL.name), st.fixed_dictionaries(
            {"state": st.sampled_from(JobState).map(str)})),
        st.tuples(st.just(STATS.name), st.fixed_dictionaries({
            "queues": st.dictionaries(names, queue_stats.map(QueueStats.to_wire), max_size=3),
            "total": st.integers(0, 2**31),
            "broker": st.fixed_dictionaries({
                "version": st.text(max_size=8), "connections": st.integers(0, 10_000),
                "uptime_ms": times_ms, "draining": st.booleans(),
            }),
        })),
        *(st.tuples(st.just(op), st.fixed_dictionaries({"removed": st.integers(0, 2**31)}))
          for op in (CLEAN.name, OBLITERATE.name)),
        st.tuples(st.just(LIST_JOBS.name), st.fixed_dictionaries({
            "jobs": st.lists(job_map, max_size=3).map(tuple), "total": st.integers(0, 2**31),
        })),
        st.tuples(st.just(LIST_FAILED.name), st.fixed_dictionaries({
            "jobs": st.lists(job_map, max_size=3).map(tuple), "total": st.integers(0, 2**31),
        })),
        st.tuples(st.just(RETRY_FAILED.name), st.fixed_dictionaries({
            "retried": st.integers(0, 2**31),
            "not_failed": st.lists(job_ids, max_size=3).map(tuple),
        })),
    ]
    return st.one_of(*per_op)


error_replies = st.tuples(request_ids, error_codes, st.text(max_size=80))
"""``(request_id, code, text)`` for ``error_message``."""

events: st.SearchStrategy[tuple[Event, dict[str, Any]]] = st.one_of(
    st.tuples(st.just(Event.DRAINING), st.just({})),
    st.tuples(st.just(Event.ERROR), st.fixed_dictionaries({
        "code": error_codes.map(str), "message": st.text(max_size=80),
    })),
)
"""``(event, body)`` for ``event_message``."""
