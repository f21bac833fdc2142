"""The prefetch allowance (``client/prefetch.py``): sized by the handlers' pace, or fixed."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from client.prefetch import HORIZON, Prefetch


def test_automatic_starts_at_zero_and_fast_handlers_get_the_whole_cap() -> None:
    prefetch = Prefetch(None, 50)
    assert prefetch.allowance == 0 and prefetch.cap == 50 and prefetch.per_job is None
    prefetch.ran(50, 0.0003)  # 6 us a job
    assert prefetch.allowance == 50
    assert prefetch.per_job == pytest.approx(0.0003 / 50)


def test_slow_handlers_get_as_many_as_start_within_the_horizon() -> None:
    prefetch = Prefetch(None, 50)
    prefetch.ran(1, 0.1)  # 100 ms a job: 50 runners start 1 job per 2 ms
    assert prefetch.allowance == int(HORIZON * 50 / 0.1) == 1
    slow = Prefetch(None, 50)
    slow.ran(3, 3.0)  # one second a job: none ahead
    assert slow.allowance == 0


def test_the_average_moves_with_the_pace() -> None:
    prefetch = Prefetch(None, 10)
    prefetch.ran(10, 0.0001)
    assert prefetch.allowance == 10
    for _ in range(40):  # handlers became slow (50 ms a job): the allowance falls to 0
        prefetch.ran(1, 0.05)
    assert prefetch.allowance == 0
    for _ in range(40):  # and fast again: back to the cap
        prefetch.ran(20, 0.0002)
    assert prefetch.allowance == 10


def test_a_fixed_setting_ignores_reports() -> None:
    fixed = Prefetch(7, 50)
    assert fixed.allowance == fixed.cap == 7
    fixed.ran(1, 10.0)
    fixed.ran(100, 0.0)
    assert fixed.allowance == 7 and fixed.per_job is None
    off = Prefetch(0, 50)
    off.ran(100, 0.0001)
    assert off.allowance == 0


def test_a_negative_setting_is_refused() -> None:
    with pytest.raises(ValueError, match="prefetch"):
        Prefetch(-1, 10)


def test_an_instant_run_gets_the_cap() -> None:
    prefetch = Prefetch(None, 4)
    prefetch.ran(10, 0.0)  # the clock did not move
    assert prefetch.allowance == 4


@given(concurrency=st.integers(1, 1000),
       runs=st.lists(st.tuples(st.integers(0, 200), st.floats(0, 100)), max_size=30))
def test_the_allowance_stays_between_zero_and_the_cap(
    concurrency: int, runs: list[tuple[int, float]]
) -> None:
    prefetch = Prefetch(None, concurrency)
    for jobs, seconds in runs:
        prefetch.ran(jobs, seconds)
        assert 0 <= prefetch.allowance <= prefetch.cap == concurrency
