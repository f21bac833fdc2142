"""Repeatable jobs' calendar: when a scheduler's occurrences fall. Pure: the clock is passed in.

Theory of operation
-------------------
A scheduler's ``Rule`` is either ``every_ms`` (a period) or a ``cron`` pattern read in the time
zone ``tz`` (an IANA name; UTC when not given), optionally bounded by ``start_ms`` and ``end_ms``
(both inclusive) and by ``limit`` occurrences in all. ``next_run(rule, after_ms, made)`` is the
first occurrence strictly after ``after_ms``, or ``None`` when there is none (past ``end_ms``, or
``made`` occurrences already reached ``limit``).

* ``every``: occurrences are ``anchor_ms + k * every_ms`` for ``k >= 0``. The anchor is
  ``start_ms`` when given, else the time the scheduler was first upserted (kept by later upserts
  of the same definition), so the runs keep their phase across restarts and upserts.
* ``cron``: the calendar arithmetic is croniter's (``croniter`` on PyPI, maintained under the
  pallets-eco organisation; used by Apache Airflow and Celery-beat users, so its DST and
  day-of-month/day-of-week rules get exercised far beyond what a hand-written parser would).
  The pattern is evaluated on wall-clock time in ``tz`` (``zoneinfo``; the ``tzdata`` package
  supplies the database where the system has none): ``0 9 * * *`` in ``Europe/Berlin`` is 09:00
  Berlin time in winter and in summer. A time that does not exist on the day the clocks go
  forward runs at the first minute after the gap; a time that exists twice when they go back
  runs once. Five fields, or six with seconds first (as BullMQ's ``cron-parser`` reads them),
  or croniter's ``@hourly``-style aliases. croniter's random (``R``) and hashed (``H``) fields
  are refused: they would not give the same times after a restart.

Invariants: ``next_run`` is deterministic (the same rule and arguments give the same answer) and
strictly increasing in ``after_ms`` steps: ``next_run(rule, t) > t``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache
from typing import Final, NamedTuple
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import CroniterBadCronError, CroniterBadDateError, CroniterError, croniter

from protocol.checks import MAX_EVERY_MS, MIN_EVERY_MS
from protocol.model import JobSpec
from protocol.scheduling import SchedulerInfo

MAX_CRON_LEN: Final = 200
MAX_TZ_LEN: Final = 64
_RANDOM_FIELD: Final = re.compile(r"(^|[\s,/])[RrHh](\(|$|[\s,/])")


class ScheduleError(ValueError):
    """A rule that cannot run. ``field`` names the offending field by its wire key
    (``every_ms``, ``cron``, ``tz``, ``end_ms``); the message starts with it."""

    def __init__(self, field: str, expected: str) -> None:
        super().__init__(f"{field}: {expected}")
        self.field = field


class Rule(NamedTuple):
    """When a scheduler runs (see the theory of operation above). Times are Unix ms."""

    every_ms: int | None
    cron: str | None
    tz: str | None
    start_ms: int | None
    end_ms: int | None
    limit: int | None
    anchor_ms: int
    """``every``: occurrences fall at ``anchor_ms + k * every_ms`` (``k >= 0``)."""


@lru_cache(maxsize=256)
def zone(name: str | None) -> ZoneInfo | None:
    """The time zone ``name`` (``None``: UTC).

    Raises:
        ScheduleError: no such zone.
    """
    if name is None or name == "UTC":
        return None
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ScheduleError("tz", f"a known IANA time zone name, not {name!r}") from None


def _cron(pattern: str, tz: str | None, after_ms: int) -> croniter:
    tzinfo = zone(tz)
    start = datetime.fromtimestamp(after_ms / 1000, tzinfo or UTC)
    seconds = len(pattern.split()) == 6
    return croniter(pattern, start, second_at_beginning=seconds)


def validate(rule: Rule, now: int) -> None:
    """Check that ``rule`` can run: one of ``every``/``cron``, a period in range, a pattern
    croniter reads and that matches some time, a known time zone, ``start <= end``.

    Raises:
        ScheduleError: naming the field at fault.
    """
    if (rule.every_ms is None) == (rule.cron is None):
        raise ScheduleError("every_ms", "exactly one of every and cron")
    if rule.every_ms is not None:
        if not MIN_EVERY_MS <= rule.every_ms <= MAX_EVERY_MS:
            raise ScheduleError("every_ms", f"a period of {MIN_EVERY_MS}..{MAX_EVERY_MS} ms")
        if rule.tz is not None:
            raise ScheduleError("tz", "only with cron (every counts milliseconds, not hours)")
    if rule.start_ms is not None and rule.end_ms is not None and rule.end_ms < rule.start_ms:
        raise ScheduleError("end_ms", "a time at or after start_ms")
    zone(rule.tz)
    pattern = rule.cron
    if pattern is None:
        return
    if len(pattern) > MAX_CRON_LEN or len(pattern.split()) not in (1, 5, 6):
        raise ScheduleError("cron", "a cron pattern of 5 fields, or 6 with seconds first")
    if _RANDOM_FIELD.search(pattern):
        raise ScheduleError("cron", "no random (R) or hashed (H) fields: they change on restart")
    try:
        _cron(pattern, rule.tz, now).get_next(float)
    except CroniterBadDateError:
        raise ScheduleError("cron", f"a pattern that matches some date, not {pattern!r}") from None
    except (CroniterBadCronError, CroniterError, ValueError, KeyError, IndexError) as exc:
        raise ScheduleError("cron", f"a valid cron pattern, not {pattern!r} ({exc})") from None


def next_run(rule: Rule, after_ms: int, made: int = 0) -> int | None:
    """The first occurrence of ``rule`` strictly after ``after_ms``, or ``None`` if there is
    none (past ``end_ms``, or ``made`` occurrences have reached ``limit``).

    Args:
        rule: a rule that ``validate`` accepted.
        after_ms: the time the occurrence must follow (Unix ms).
        made: occurrences already made (counted against ``limit``).

    Returns:
        The occurrence's time in Unix ms, or ``None``.
    """
    if rule.limit is not None and made >= rule.limit:
        return None
    if rule.start_ms is not None and after_ms < rule.start_ms:
        after_ms = rule.start_ms - 1
    every = rule.every_ms
    if every is not None:
        anchor = rule.anchor_ms
        at = anchor if after_ms < anchor else anchor + ((after_ms - anchor) // every + 1) * every
    else:
        assert rule.cron is not None
        try:
            at = round(_cron(rule.cron, rule.tz, after_ms).get_next(float) * 1000)
        except CroniterBadDateError:
            return None
        if at <= after_ms:  # croniter works in whole seconds: never answer at or before after
            at = next_run(rule, after_ms + 1000 - after_ms % 1000, made) or 0
            if not at:
                return None
    if rule.end_ms is not None and at > rule.end_ms:
        return None
    return at


@dataclass(slots=True)
class Scheduler:
    """One scheduler as the core holds it and the journal stores it (``schedules`` table).

    Invariant (exactly one job per occurrence): when ``next_at`` is set, the job of that
    occurrence, ``job_id(key, next_at)``, was created in the same change set that set it; the
    next occurrence is made only once ``next_at`` has passed.
    """

    queue: str
    key: str
    rule: Rule
    template: JobSpec
    created_at: int
    count: int = 0
    """Occurrences made (jobs created or skipped for a full queue), against ``rule.limit``."""
    next_at: int | None = None
    """The latest occurrence made: its job waits (delayed) for it. ``None``: no more."""

    def info(self) -> SchedulerInfo:
        rule = self.rule
        return SchedulerInfo(self.queue, self.key, self.template, rule.every_ms, rule.cron,
                             rule.tz, rule.start_ms, rule.end_ms, rule.limit, self.count,
                             self.next_at, self.created_at)

    def same_definition(self, rule: Rule, template: JobSpec) -> bool:
        """``rule`` (whatever its anchor) and ``template`` are what this scheduler has."""
        return rule._replace(anchor_ms=self.rule.anchor_ms) == self.rule and (
            template == self.template)


def job_id(key: str, at: int) -> str:
    """The id of the job of ``key``'s occurrence at ``at``: the same after any replay."""
    return f"repeat:{key}:{at}"


SchedulerKey = tuple[str, str]
"""``(queue, key)``."""


class ScheduleBook:
    """The core's schedulers (``broker/core_schedules``), their timer heap of
    ``(next_at, queue, key)`` and their changes since the last ``take_changes``."""

    __slots__ = ("by_key", "changed", "heap")

    def __init__(self) -> None:
        self.by_key: dict[SchedulerKey, Scheduler] = {}
        self.heap: list[tuple[int, str, str]] = []
        self.changed: dict[SchedulerKey, Scheduler | None] = {}

    def take_changes(self) -> dict[SchedulerKey, Scheduler | None]:
        changed, self.changed = self.changed, {}
        return changed
