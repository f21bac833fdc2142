"""The calendar of repeatable jobs (``broker/schedule``), a pure function of the clock: periods
aligned to their anchor, cron patterns in named time zones across DST changes, bounds, limits and
the checks that name the field at fault."""

from __future__ import annotations

from datetime import UTC, datetime
from itertools import pairwise
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from broker.schedule import Rule, ScheduleError, next_run, validate

T0 = 1_767_225_600_000  # 2026-01-01 00:00:00 UTC


def every(period_ms: int, anchor: int = T0, **bounds: int | None) -> Rule:
    return Rule(period_ms, None, None, bounds.get("start"), bounds.get("end"),
                bounds.get("limit"), anchor)


def cron(pattern: str, tz: str | None = None, **bounds: int | None) -> Rule:
    return Rule(None, pattern, tz, bounds.get("start"), bounds.get("end"), bounds.get("limit"),
                0)


def ms(year: int, month: int, day: int, hour: int, minute: int = 0, tz: str = "UTC") -> int:
    zone = UTC if tz == "UTC" else ZoneInfo(tz)
    return round(datetime(year, month, day, hour, minute, tzinfo=zone).timestamp() * 1000)


def test_every_is_aligned_to_its_anchor() -> None:
    rule = every(1_000, anchor=T0 + 250)
    assert next_run(rule, T0) == T0 + 250
    assert next_run(rule, T0 + 250) == T0 + 1_250
    assert next_run(rule, T0 + 1_249) == T0 + 1_250
    assert next_run(rule, T0 + 10_000) == T0 + 10_250


def test_start_end_and_limit_bound_the_runs() -> None:
    rule = every(1_000, anchor=T0, start=T0, end=T0 + 3_000, limit=10)
    assert next_run(rule, T0 - 50_000) == T0
    assert next_run(rule, T0 + 2_500) == T0 + 3_000  # end is inclusive
    assert next_run(rule, T0 + 3_000) is None
    assert next_run(rule, T0, made=9) == T0 + 1_000
    assert next_run(rule, T0, made=10) is None
    later = cron("0 * * * *", start=T0 + 5 * 3_600_000)
    assert next_run(later, T0) == T0 + 5 * 3_600_000


def test_cron_in_a_named_zone_across_the_spring_dst_change() -> None:
    """09:00 New York is 14:00 UTC in winter and 13:00 UTC from 8 March 2026 (EDT)."""
    rule = cron("0 9 * * *", "America/New_York")
    before = next_run(rule, ms(2026, 3, 6, 15))
    assert before == ms(2026, 3, 7, 14)
    across = next_run(rule, before)
    assert across == ms(2026, 3, 8, 13)
    assert across - before == 23 * 3_600_000  # the day the clocks went forward is 23 h long
    assert next_run(rule, across) == ms(2026, 3, 9, 13)


def test_cron_across_the_autumn_dst_change_runs_once_per_wall_clock_time() -> None:
    """Berlin goes back from 03:00 CEST to 02:00 CET on 25 October 2026: 02:30 exists twice."""
    rule = cron("30 2 * * *", "Europe/Berlin")
    saturday = next_run(rule, ms(2026, 10, 23, 12))
    assert saturday == ms(2026, 10, 24, 0, 30)  # 02:30 CEST
    sunday = next_run(rule, saturday)
    assert sunday == ms(2026, 10, 25, 0, 30)  # the first 02:30 (CEST), once
    assert next_run(rule, sunday) == ms(2026, 10, 26, 1, 30)  # 02:30 CET


def test_a_time_skipped_by_spring_forward_runs_right_after_the_gap() -> None:
    rule = cron("30 2 * * *", "Europe/Berlin")
    assert next_run(rule, ms(2026, 3, 28, 12)) == ms(2026, 3, 29, 1)  # 03:00 CEST
    assert next_run(rule, ms(2026, 3, 29, 1)) == ms(2026, 3, 30, 0, 30)


def test_hourly_cron_through_the_repeated_hour_keeps_one_hour_steps() -> None:
    rule = cron("0 * * * *", "Europe/Berlin")
    at = ms(2026, 10, 24, 22, 30)
    runs = []
    for _ in range(5):
        at = next_run(rule, at) or 0
        runs.append(at)
    assert [b - a for a, b in pairwise(runs)] == [3_600_000] * 4


def test_six_fields_have_seconds_first_and_aliases_expand() -> None:
    assert next_run(cron("*/15 * * * * *"), T0) == T0 + 15_000
    assert next_run(cron("@hourly"), T0) == T0 + 3_600_000
    assert next_run(cron("@daily", "Asia/Tokyo"), T0) == ms(2026, 1, 1, 15)


def test_cron_answers_strictly_after_within_a_second() -> None:
    rule = cron("* * * * * *")
    assert next_run(rule, T0) == T0 + 1_000
    assert next_run(rule, T0 + 999) == T0 + 1_000
    assert next_run(rule, T0 - 1) == T0


@given(st.integers(1, 10**7), st.integers(0, 10**9), st.integers(-(10**9), 10**9))
def test_every_is_strictly_after_and_on_the_grid(period: int, anchor: int, offset: int) -> None:
    rule = every(period, anchor=T0 + anchor)
    after = T0 + offset
    at = next_run(rule, after)
    assert at is not None and at > after and (at - rule.anchor_ms) % period == 0
    assert at >= rule.anchor_ms and (at - period <= after or at == rule.anchor_ms)


@pytest.mark.parametrize(("rule", "field"), [
    (every(0), "every_ms"),
    (every(367 * 86_400_000), "every_ms"),
    (Rule(None, None, None, None, None, None, 0), "every_ms"),
    (Rule(1_000, "* * * * *", None, None, None, None, 0), "every_ms"),
    (Rule(1_000, None, "Europe/Berlin", None, None, None, 0), "tz"),
    (cron("61 * * * *"), "cron"),
    (cron("* * *"), "cron"),
    (cron("0 0 30 2 *"), "cron"),
    (cron("H * * * *"), "cron"),
    (cron("@fortnightly"), "cron"),
    (cron("x" * 300), "cron"),
    (cron("0 9 * * *", "Mars/Olympus"), "tz"),
    (cron("0 9 * * *", "../../etc/passwd"), "tz"),
    (every(1_000, start=T0, end=T0 - 1), "end_ms"),
])
def test_bad_rules_name_the_field(rule: Rule, field: str) -> None:
    with pytest.raises(ScheduleError) as caught:
        validate(rule, T0)
    assert caught.value.field == field
    assert str(caught.value).startswith(f"{field}: ")
