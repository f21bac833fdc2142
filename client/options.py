"""Job options in Python units (seconds, datetimes, BullMQ-style retention) → wire ``JobSpec``.

Pure functions shared by the asynchronous and the synchronous producer. Units: every duration
is in seconds (``float`` or ``datetime.timedelta``); ``run_at`` is a ``datetime`` (naive means
local time) or Unix seconds.

``timeout`` (seconds) limits one attempt's run time: the worker cancels the handler then, and the
broker fails the attempt if no outcome came (``SPEC.md`` §11.9); on the wire ``timeout_ms``.

``remove_on_complete`` / ``remove_on_fail`` follow BullMQ: ``True`` removes the job as soon as it
finishes, ``False`` keeps it forever, an ``int`` keeps that many of the newest, and a mapping
``{"count": n, "age": seconds}`` keeps at most ``n`` jobs no older than ``age``. ``None`` means
the broker's queue default.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any, Final

from protocol.checks import MAX_BATCH
from protocol.model import KEEP_ALL, REMOVE_AT_ONCE, Backoff, BackoffKind, JobSpec, Retention

OPTION_NAMES: Final = frozenset({
    "priority", "delay", "run_at", "attempts", "backoff", "job_id", "lease",
    "remove_on_complete", "remove_on_fail", "timeout",
})
"""Keyword options that ``queue.add`` and ``client.queue(name, **defaults)`` accept."""

FRAME_BUDGET: Final = 0.8
"""Fraction of the broker's max frame that one enqueue request may fill."""
PER_JOB_OVERHEAD: Final = 64
"""Bytes of framing per job beyond its payload and names (an over-estimate)."""

Duration = float | int | timedelta


def seconds_to_ms(value: Duration, field: str) -> int:
    """A non-negative duration in seconds (or a ``timedelta``) → whole milliseconds.

    Raises:
        ValueError: negative.
        TypeError: not a number or timedelta.
    """
    if isinstance(value, timedelta):
        seconds = value.total_seconds()
    elif isinstance(value, int | float) and not isinstance(value, bool):
        seconds = float(value)
    else:
        raise TypeError(f"{field}: expected seconds (a number) or a timedelta")
    if seconds < 0:
        raise ValueError(f"{field}: must be >= 0 seconds")
    return round(seconds * 1000)


def exponential(
    base: Duration = 1.0, *, max: Duration | None = None, jitter: float = 0.0
) -> Backoff:
    """Exponential backoff: ``base * 2**(attempt-1)`` seconds, capped by ``max``.

    Args:
        base: the first retry's delay, seconds.
        max: the longest delay, seconds (``None``: the broker's cap).
        jitter: 0..1, the fraction of each delay that is randomised.
    """
    if not 0.0 <= jitter <= 1.0:
        raise ValueError("jitter must be in 0..1")
    cap = None if max is None else seconds_to_ms(max, "backoff max")
    return Backoff(BackoffKind.EXPONENTIAL, seconds_to_ms(base, "backoff"), cap, float(jitter))


def fixed(delay: Duration, *, jitter: float = 0.0) -> Backoff:
    """Fixed backoff: every retry waits ``delay`` seconds."""
    if not 0.0 <= jitter <= 1.0:
        raise ValueError("jitter must be in 0..1")
    return Backoff(BackoffKind.FIXED, seconds_to_ms(delay, "backoff"), None, float(jitter))


_BULLMQ_BACKOFF_KEYS: Final = frozenset({"type", "delay", "jitter"})


def to_backoff(value: Any) -> Backoff | None:
    """Accept ``None``, a ``Backoff``, seconds (exponential from that base), or BullMQ's own map
    ``{"type": "exponential"|"fixed", "delay": MILLISECONDS, "jitter": 0..1}``.

    The map is BullMQ's shape, so it takes BullMQ's unit: ``delay`` is in **milliseconds** there
    (``{"type": "exponential", "delay": 2000}`` is a 2 s base), unlike every other duration of
    this client, which is in seconds. Keys BullMQ does not have are refused, so a map written for
    another unit fails loudly instead of being read a thousand times too long.
    """
    if value is None or isinstance(value, Backoff):
        return value
    if isinstance(value, Mapping):
        unknown = set(value) - _BULLMQ_BACKOFF_KEYS
        if unknown:
            raise ValueError(
                f"backoff: unknown key(s) {sorted(unknown)}; the map form is BullMQ's "
                "{'type', 'delay' (milliseconds), 'jitter'}; for seconds and a cap use "
                "exponential(base, max=...) or fixed(seconds)")
        kind = BackoffKind(value.get("type", "exponential"))
        delay_ms = value.get("delay", 1000)
        if not isinstance(delay_ms, int | float) or isinstance(delay_ms, bool) or delay_ms < 0:
            raise ValueError("backoff: 'delay' must be a number of milliseconds >= 0")
        jitter = float(value.get("jitter", 0.0))
        if kind is BackoffKind.FIXED:
            return fixed(delay_ms / 1000, jitter=jitter)
        return exponential(delay_ms / 1000, jitter=jitter)
    return exponential(value)


def to_retention(value: Any, field: str) -> Retention | None:
    """BullMQ-style ``remove_on_*`` → wire retention (see the module docstring)."""
    if value is None or isinstance(value, Retention):
        return value
    if value is True:
        return REMOVE_AT_ONCE
    if value is False:
        return KEEP_ALL
    if isinstance(value, int):
        if value < 0:
            raise ValueError(f"{field}: a count must be >= 0")
        return Retention(value, None)
    if isinstance(value, Mapping):
        count = value.get("count")
        age = value.get("age")
        return Retention(
            None if count is None else int(count),
            None if age is None else seconds_to_ms(age, f"{field}.age"),
        )
    raise TypeError(f"{field}: expected bool, int, or {{'count': n, 'age': seconds}}")


def to_run_at_ms(value: datetime | float | int) -> int:
    """A ``datetime`` (naive: local time) or Unix seconds → Unix milliseconds."""
    if isinstance(value, datetime):
        return round(value.timestamp() * 1000)
    if isinstance(value, int | float) and not isinstance(value, bool):
        return round(float(value) * 1000)
    raise TypeError("run_at: expected a datetime or Unix seconds")


def check_options(options: Mapping[str, Any]) -> None:
    """Raise ``TypeError`` naming any option ``queue.add`` does not know."""
    unknown = set(options) - OPTION_NAMES
    if unknown:
        raise TypeError(
            f"unknown job option(s): {', '.join(sorted(unknown))}; "
            f"expected some of {', '.join(sorted(OPTION_NAMES))}"
        )


def build_spec(name: str, payload: bytes, options: Mapping[str, Any]) -> JobSpec:
    """The wire ``JobSpec`` for one job.

    Args:
        name: the handler name.
        payload: the serialized data.
        options: merged queue defaults and per-call options (``None`` values mean "default").

    Raises:
        TypeError, ValueError: an option of the wrong type or range.
    """
    if not options:  # every option left to the broker: the common case, and the cheapest
        return JobSpec(None, name, payload)
    get = options.get
    delay = get("delay")
    run_at = get("run_at")
    attempts = get("attempts")
    lease = get("lease")
    timeout = get("timeout")
    priority = get("priority")
    if attempts is not None and (not isinstance(attempts, int) or attempts < 1):
        raise ValueError("attempts: must be an int >= 1")
    if priority is not None and not isinstance(priority, int):
        raise TypeError("priority: must be an int (lower runs first)")
    return JobSpec(
        get("job_id"),
        name,
        payload,
        priority or 0,
        None if delay is None else seconds_to_ms(delay, "delay"),
        None if run_at is None else to_run_at_ms(run_at),
        attempts,
        to_backoff(get("backoff")),
        None if lease is None else seconds_to_ms(lease, "lease"),
        to_retention(get("remove_on_complete"), "remove_on_complete"),
        to_retention(get("remove_on_fail"), "remove_on_fail"),
        None if timeout is None else seconds_to_ms(timeout, "timeout"),
    )


def spec_size(spec: JobSpec) -> int:
    """An over-estimate of a job's bytes inside an enqueue frame."""
    return len(spec.payload) + len(spec.name) + len(spec.job_id or "") + PER_JOB_OVERHEAD


def split_batches(
    specs: list[JobSpec], max_batch: int = MAX_BATCH, max_bytes: int = 1 << 30
) -> list[list[JobSpec]]:
    """Split an enqueue into requests of at most ``max_batch`` jobs and about ``max_bytes``.

    Order is kept; a single job larger than ``max_bytes`` still gets a request of its own (the
    broker then answers with its own size error).
    """
    batches: list[list[JobSpec]] = []
    current: list[JobSpec] = []
    size = 0
    for spec in specs:
        cost = spec_size(spec)
        if current and (len(current) >= max_batch or size + cost > max_bytes):
            batches.append(current)
            current, size = [], 0
        current.append(spec)
        size += cost
    if current:
        batches.append(current)
    return batches

