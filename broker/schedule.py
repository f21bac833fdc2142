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
* ``cron``: the calendar arithmetic is cronsim's (``cronsim`` on PyPI, the evaluator written
  for and run by Healthchecks, a cron-monitoring service, so DST transitions are its daily
  business). Chosen over croniter, the better-known one, because croniter runs the ``file``
  command in a subprocess when it is imported (a 32-bit check through
  ``platform.architecture``): a broker must not fork on import, and a minimal machine may have
  no ``file``. cronsim has no dependencies, ships type hints, matches Debian cron's rules
  (day-of-month OR day-of-week unless one starts with ``*``; ``L``, ``LW``, ``#``) and reads
  six fields with seconds first, as BullMQ's ``cron-parser`` does.
  The pattern is evaluated on wall-clock time in ``tz`` (``zoneinfo``; the ``tzdata`` package
  supplies the database where the system has none): ``0 9 * * *`` in ``Europe/Berlin`` is 09:00
  Berlin time in winter and in summer. As Debian cron does, a fixed time that does not exist on
  the day the clocks go forward runs once, right after the gap; one that exists twice when they
  go back runs once, the first time. The aliases ``@yearly``, ``@monthly``, ``@weekly``,
  ``@daily``, ``@hourly`` (and ``@annually``, ``@midnight``) stand for their 5-field patterns.

Invariants: ``next_run`` is deterministic (the same rule and arguments give the same answer) and
strictly increasing in ``after_ms`` steps: ``next_run(rule, t) > t``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache
from typing import Final, NamedTuple
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cronsim import CronSim, CronSimError

from protocol.checks import MAX_EVERY_MS, MIN_EVERY_MS
from protocol.model import JobSpec
from protocol.scheduling import SchedulerInfo

MAX_CRON_LEN: Final = 200
ALIASES: Final = {
    "@yearly": "0 0 1 1 *", "@annually": "0 0 1 1 *", "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0", "@daily": "0 0 * * *", "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}


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


def _cron(pattern: str, tz: str | None, after_ms: int) -> CronSim:
    """An iterator of the pattern's times strictly after ``after_ms`` (whole seconds)."""
    start = datetime.fromtimestamp(after_ms / 1000, zone(tz) or UTC)
    return CronSim(ALIASES.get(pattern.strip().lower(), pattern), start)


def validate(rule: Rule, now: int) -> None:
    """Check that ``rule`` can run: one of ``every``/``cron``, a period in range, a pattern
    cronsim reads and that matches some time, a known time zone, ``start <= end``.

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
    if len(pattern) > MAX_CRON_LEN:
        raise ScheduleError("cron", f"a pattern of at most {MAX_CRON_LEN} characters")
    try:
        next(_cron(pattern, rule.tz, now))
    except (CronSimError, ValueError, KeyError, IndexError, OverflowError) as exc:
        raise ScheduleError("cron", f"a cron pattern of 5 fields (or 6, seconds first), not "
                            f"{pattern!r} ({exc})") from None


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
            at = round(next(_cron(rule.cron, rule.tz, after_ms)).timestamp() * 1000)
        except (CronSimError, OverflowError, StopIteration):
            return None  # past the calendar's end (year 9999)
        if at <= after_ms:  # cronsim counts whole seconds: never answer at or before after
            return next_run(rule, after_ms - after_ms % 1000 + 999, made)
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
