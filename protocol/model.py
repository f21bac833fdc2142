"""The values requests carry, each with its wire form both ways. Sans-I/O.

The job states and backoff kinds, a job's options (backoff, retention), a job to enqueue and the
items of ack/fail/extend/release batches are ``NamedTuple``s or enums here, and beside each one
are its encoder (what the client puts on the wire) and its strict parser (what the broker accepts,
raising ``BAD_ARGUMENT`` that names the field). The values replies carry are in
``protocol.replies``.

The hot paths (enqueue jobs, ack items) accept a well-formed item with inline checks and fall
back to the per-field checks only to name what is wrong, so a valid batch costs one tuple per
item and no dict churn; ``protocol.batches`` takes larger batches as a whole.
"""

from __future__ import annotations

from collections.abc import Sequence
from enum import StrEnum
from typing import Any, Final, NamedTuple

from protocol.checks import (
    MAX_ATTEMPTS,
    MAX_COUNT,
    MAX_DELAY_MS,
    MAX_ERROR_LEN,
    MAX_LEASE_MS,
    MAX_NAME_LEN,
    MAX_TIME_MS,
    MAX_TIMEOUT_MS,
    MIN_LEASE_MS,
    MIN_TIMEOUT_MS,
    PRIORITY_MAX,
    PRIORITY_MIN,
    check_array,
    check_enum,
    check_int,
    check_name,
    check_token,
)
from protocol.errors import bad_argument

new_tuple: Final = tuple.__new__
"""Builds a NamedTuple from a tuple of its fields without the keyword machinery (hot paths)."""


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


# --------------------------------------------------------------------------- job options


class Backoff(NamedTuple):
    """Redelivery delay policy. Wire form: ``[kind, base_ms, cap_ms?, jitter?]``."""

    kind: BackoffKind
    base_ms: int
    cap_ms: int | None = None
    jitter: float = 0.0


def parse_backoff(value: Any, field: str) -> Backoff | None:
    """Parse ``nil`` or ``[kind, base_ms, cap_ms?, jitter?]``."""
    if value is None:
        return None
    if type(value) is not tuple or not 2 <= len(value) <= 4:
        raise bad_argument(field, "[kind, base_ms, cap_ms?, jitter?]")
    kind = check_enum(BackoffKind, value[0], field + ".kind")
    base_ms = check_int(value[1], field + ".base_ms", 0, MAX_DELAY_MS)
    cap_ms = None if len(value) < 3 or value[2] is None else check_int(
        value[2], field + ".cap_ms", 0, MAX_DELAY_MS
    )
    jitter: Any = 0.0 if len(value) < 4 or value[3] is None else value[3]
    if type(jitter) not in (int, float) or not 0 <= jitter <= 1:
        raise bad_argument(field + ".jitter", "number in 0..1")
    return Backoff(kind, base_ms, cap_ms, float(jitter))


class Retention(NamedTuple):
    """How many finished jobs to keep, and for how long. ``None`` means no limit.

    Wire form: ``[count?, age_ms?]``; ``true`` means keep forever (``[nil, nil]``) and ``false``
    means remove at once (``[0, nil]``).
    """

    count: int | None  # type: ignore[assignment]  # shadows tuple.count; the wire name wins
    age_ms: int | None


KEEP_ALL: Final = Retention(None, None)
REMOVE_AT_ONCE: Final = Retention(0, None)


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
    count = None if value[0] is None else check_int(value[0], field + ".count", 0, MAX_COUNT)
    age_ms = None if value[1] is None else check_int(value[1], field + ".age_ms", 0, MAX_DELAY_MS)
    return Retention(count, age_ms)


# --------------------------------------------------------------------------- enqueue


class JobSpec(NamedTuple):
    """One job of an enqueue batch. ``None`` fields take the broker's defaults.

    Wire form: ``[job_id?, name, payload, priority?, delay_ms?, run_at_ms?, max_attempts?,
    backoff?, lease_ms?, keep_completed?, keep_failed?, timeout_ms?]``; trailing items may be
    omitted (so a job without a timeout is an array of at most 11 items, which every broker of
    protocol version 1 accepts).
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
    timeout_ms: int | None = None
    """The longest one attempt may run (``SPEC.md`` §11.9); ``None``: no limit."""


PLAIN_TAIL: Final = (0, None, None, None, None, None, None, None, None)
"""A ``JobSpec`` from ``priority`` on, when every option is left to the broker (``spec[3:]``)."""


def job_to_wire(job: JobSpec) -> tuple[Any, ...] | list[Any]:
    """The positional wire form of one job (``SPEC.md`` §9.1), without trailing defaults.

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


def jobs_to_wire(jobs: Sequence[JobSpec]) -> list[tuple[Any, ...] | list[Any]]:
    """The ``jobs`` array of an enqueue request: ``job_to_wire`` of each job.

    A client's bulk enqueue is usually all plain jobs (every option left to the broker): such a
    batch is checked and cut to ``(id, name, payload)`` column by column, in C (``zip`` and
    ``tuple.count``, comparing with ``==`` as ``job[3:] == PLAIN_TAIL`` does), for a third less
    than ``job_to_wire`` job by job. A batch whose first or last job has options goes job by job
    at once.
    """
    if len(jobs) > 1 and jobs[0][3:] == PLAIN_TAIL and jobs[-1][3:] == PLAIN_TAIL:
        columns = tuple(zip(*jobs, strict=True))
        count = len(jobs)
        if columns[3].count(0) == count and all(
            column.count(None) == count for column in columns[4:]
        ):
            return list(zip(columns[0], columns[1], columns[2], strict=True))
    return [job_to_wire(job) for job in jobs]


_JOB_PAD: Final = tuple((None,) * (12 - n) for n in range(13))


def parse_job(raw: Any, index: int) -> JobSpec:
    """Validate one enqueue item in any form ``job_to_wire`` may give."""
    if type(raw) is not tuple or not 3 <= len(raw) <= 12:
        raise bad_argument(f"jobs[{index}]", "array of 3..12 items")
    if len(raw) < 12:
        raw = raw + _JOB_PAD[len(raw)]
    (job_id, name, payload, priority, delay_ms, run_at_ms, max_attempts, backoff, lease_ms,
     keep_completed, keep_failed, timeout_ms) = raw
    if type(payload) is not bytes:
        raise bad_argument(f"jobs[{index}].payload", "bin")
    if type(name) is not str or len(name) > MAX_NAME_LEN:
        raise bad_argument(f"jobs[{index}].name", f"str of 0..{MAX_NAME_LEN} characters")
    if job_id is not None:
        check_name(job_id, f"jobs[{index}].id")
        if job_id.isascii() and job_id.isdigit():
            raise bad_argument(f"jobs[{index}].id", "a str that is not all ASCII digits (those "
                               "are the broker's own ids)")
    if priority is None:
        priority = 0
    elif type(priority) is not int or not PRIORITY_MIN <= priority <= PRIORITY_MAX:
        raise bad_argument(f"jobs[{index}].priority", f"int in {PRIORITY_MIN}..{PRIORITY_MAX}")
    if delay_ms is not None:
        check_int(delay_ms, f"jobs[{index}].delay_ms", 0, MAX_DELAY_MS)
    if run_at_ms is not None:
        check_int(run_at_ms, f"jobs[{index}].run_at_ms", 0, MAX_TIME_MS)
    if max_attempts is not None:
        check_int(max_attempts, f"jobs[{index}].max_attempts", 1, MAX_ATTEMPTS)
    if backoff is not None:
        backoff = parse_backoff(backoff, f"jobs[{index}].backoff")
    if lease_ms is not None:
        check_int(lease_ms, f"jobs[{index}].lease_ms", MIN_LEASE_MS, MAX_LEASE_MS)
    if keep_completed is not None:
        keep_completed = parse_retention(keep_completed, f"jobs[{index}].keep_completed")
    if keep_failed is not None:
        keep_failed = parse_retention(keep_failed, f"jobs[{index}].keep_failed")
    if timeout_ms is not None:
        check_int(timeout_ms, f"jobs[{index}].timeout_ms", MIN_TIMEOUT_MS, MAX_TIMEOUT_MS)
    return new_tuple(JobSpec, (job_id, name, payload, priority, delay_ms, run_at_ms,
                               max_attempts, backoff, lease_ms, keep_completed, keep_failed,
                               timeout_ms))


# --------------------------------------------------------------------------- batch items


class AckItem(NamedTuple):
    """Wire form: ``[job_id, token, result?]``."""

    job_id: str
    token: int
    result: bytes | None = None


class FailItem(NamedTuple):
    """Wire form: ``[job_id, token, error, retry?, delay_ms?]``."""

    job_id: str
    token: int
    error: str
    retry: bool = True
    delay_ms: int | None = None


class ExtendItem(NamedTuple):
    """Wire form: ``[job_id, token, lease_ms?]``."""

    job_id: str
    token: int
    lease_ms: int | None = None


class ReleaseItem(NamedTuple):
    """Hand a leased job back without counting its attempt; ``delay_ms`` > 0 delays it, and
    ``pause_queue`` also stops the job's queue handing out any job for that long ("not now").

    Wire form: ``[job_id, token, delay_ms?, pause_queue?]``.
    """

    job_id: str
    token: int
    delay_ms: int | None = None
    pause_queue: bool = False


def batch_item(raw: Any, index: int, low: int, high: int) -> tuple[Any, ...]:
    """The checks every batch item shares: an array of ``low..high`` items, id, token."""
    if type(raw) is not tuple or not low <= len(raw) <= high:
        raise bad_argument(f"items[{index}]", f"array of {low}..{high} items")
    check_name(raw[0], f"items[{index}].id")
    check_token(raw[1], f"items[{index}].token")
    return raw


def parse_fail_items(value: Any, field: str) -> tuple[FailItem, ...]:
    """The ``items`` of a fail request."""
    items = []
    for i, raw in enumerate(check_array(value, field)):
        raw = batch_item(raw, i, 3, 5)
        error = raw[2]
        if type(error) is not str or len(error) > MAX_ERROR_LEN:
            raise bad_argument(f"items[{i}].error", f"str of 0..{MAX_ERROR_LEN} characters")
        retry = raw[3] if len(raw) > 3 and raw[3] is not None else True
        if type(retry) is not bool:
            raise bad_argument(f"items[{i}].retry", "bool")
        delay_ms = raw[4] if len(raw) > 4 else None
        if delay_ms is not None:
            check_int(delay_ms, f"items[{i}].delay_ms", 0, MAX_DELAY_MS)
        items.append(FailItem(raw[0], raw[1], error, retry, delay_ms))
    return tuple(items)


def parse_extend_items(value: Any, field: str) -> tuple[ExtendItem, ...]:
    """The ``items`` of an extend request."""
    items = []
    for i, raw in enumerate(check_array(value, field)):
        raw = batch_item(raw, i, 2, 3)
        lease_ms = raw[2] if len(raw) > 2 else None
        if lease_ms is not None:
            check_int(lease_ms, f"items[{i}].lease_ms", MIN_LEASE_MS, MAX_LEASE_MS)
        items.append(ExtendItem(raw[0], raw[1], lease_ms))
    return tuple(items)


def parse_release_items(value: Any, field: str) -> tuple[ReleaseItem, ...]:
    """The ``items`` of a release request."""
    items = []
    for i, raw in enumerate(check_array(value, field)):
        raw = batch_item(raw, i, 2, 4)
        delay_ms = raw[2] if len(raw) > 2 else None
        if delay_ms is not None:
            check_int(delay_ms, f"items[{i}].delay_ms", 0, MAX_DELAY_MS)
        pause_queue = raw[3] if len(raw) > 3 and raw[3] is not None else False
        if type(pause_queue) is not bool:
            raise bad_argument(f"items[{i}].pause_queue", "bool")
        items.append(ReleaseItem(raw[0], raw[1], delay_ms, pause_queue))
    return tuple(items)


def release_items_to_wire(items: tuple[ReleaseItem, ...]) -> list[tuple[Any, ...]]:
    """The ``items`` of a release request, without trailing defaults (``[id, token]`` for a
    plain hand-back, which every broker of protocol version 1 accepts)."""
    out: list[tuple[Any, ...]] = []
    for item in items:
        if item.pause_queue:
            out.append(tuple(item))
        elif item.delay_ms is not None:
            out.append(item[:3])
        else:
            out.append(item[:2])
    return out


