"""Repeatable jobs (job schedulers) as calls, without I/O: what ``Queue.upsert_scheduler``,
``remove_scheduler`` and ``schedulers`` (and their blocking twins) send and how they read the
reply. Python units: seconds, datetimes or Unix seconds; the wire's are milliseconds.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from functools import partial
from typing import Any, NamedTuple

from client.call import Call
from client.options import Duration, seconds_to_ms, to_run_at_ms
from client.serializers import Serializer
from protocol.model import JobSpec
from protocol.scheduling import (
    ScheduleList,
    ScheduleRemove,
    SchedulerInfo,
    SchedulerPage,
    ScheduleUpsert,
    parse_scheduler_page,
    parse_upserted,
)

RULE_FIELDS = ("every", "cron", "tz", "start", "end", "limit")
"""The keyword arguments of ``upsert_scheduler`` that say when it runs (the rest are job
options)."""
NOT_IN_TEMPLATE = ("job_id", "delay", "run_at")
"""Job options a template cannot have: each run gets its own id and run time."""


class Scheduler(NamedTuple):
    """A repeatable job's scheduler as the broker holds it (times in Unix seconds).

    Attributes:
        queue, key: where its jobs go and its name (unique per queue).
        name, data: each run's job: the handler name and its data.
        every: the period in seconds, or ``None`` for a cron scheduler.
        cron, tz: the cron pattern and its IANA time zone (``None``: UTC).
        start, end: no run before ``start`` or after ``end`` (Unix seconds), if set.
        limit: at most this many runs in all, if set; ``count`` runs made so far.
        next_run: when the next run is due (its job exists, delayed until then), or ``None``
            when there are no more.
        created: whether this upsert created the scheduler (``upsert_scheduler`` only).
        changed: whether this upsert changed it (``False``: the same definition was there).
        job: each run's job options as sent (``protocol.model.JobSpec``).
    """

    queue: str
    key: str
    name: str
    data: Any
    every: float | None
    cron: str | None
    tz: str | None
    start: float | None
    end: float | None
    limit: int | None
    count: int  # type: ignore[assignment]  # shadows tuple.count; the field name wins
    next_run: float | None
    created: bool
    changed: bool
    job: JobSpec


def _seconds(ms: int | None) -> float | None:
    return None if ms is None else ms / 1000


def scheduler_from_info(
    info: SchedulerInfo, serializer: Serializer, created: bool = False, changed: bool = False
) -> Scheduler:
    """The public ``Scheduler`` of the broker's record (its data decoded)."""
    return Scheduler(
        info.queue, info.key, info.job.name, serializer.loads(info.job.payload),
        _seconds(info.every_ms), info.cron, info.tz, _seconds(info.start_ms),
        _seconds(info.end_ms), info.limit, info.count, _seconds(info.next_run_at), created,
        changed, info.job,
    )


def upsert_call(
    queue: str, key: str, template: JobSpec, serializer: Serializer, *,
    every: Duration | None, cron: str | None, tz: str | None,
    start: datetime | float | None, end: datetime | float | None, limit: int | None,
) -> Call[Scheduler]:
    """``schedule_upsert`` (SPEC §8.25). The broker checks every range and the pattern.

    Raises:
        TypeError, ValueError: neither or both of ``every`` and ``cron``; a negative period.
    """
    if (every is None) == (cron is None):
        raise TypeError("give exactly one of every= (seconds) and cron= (a cron pattern)")
    request = ScheduleUpsert(
        queue, key, template, None if every is None else seconds_to_ms(every, "every"), cron, tz,
        None if start is None else to_run_at_ms(start), None if end is None else to_run_at_ms(end),
        limit,
    )
    return Call(request, partial(_upserted, serializer))


def _upserted(serializer: Serializer, body: Mapping[str, Any]) -> Scheduler:
    upserted = parse_upserted(body)
    return scheduler_from_info(upserted.scheduler, serializer, upserted.created, upserted.changed)


def check_template_options(options: Mapping[str, Any]) -> None:
    """Raise ``TypeError`` for options a template cannot have."""
    refused = [name for name in NOT_IN_TEMPLATE if options.get(name) is not None]
    if refused:
        raise TypeError(f"a scheduler's job cannot have {', '.join(refused)}: each run gets "
                        "its own id and run time")


def remove_call(queue: str, key: str) -> Call[bool]:
    """``schedule_remove`` (SPEC §8.26): whether the scheduler existed."""
    return Call(ScheduleRemove(queue, key), lambda body: bool(body["removed"]))


def list_call(queue: str | None, offset: int, serializer: Serializer) -> Call[SchedulerPage]:
    """One page of ``schedule_list`` (SPEC §8.27); ``schedulers`` pages through them all."""
    return Call(ScheduleList(queue, offset), parse_scheduler_page)


def more(gathered: list[SchedulerInfo], page: SchedulerPage) -> int | None:
    """Add ``page`` to ``gathered``; the offset of the next page, or ``None`` when done."""
    before = len(gathered)
    gathered.extend(page.schedulers)
    if not page.schedulers or len(gathered) == before or len(gathered) >= page.total:
        return None
    return len(gathered)
