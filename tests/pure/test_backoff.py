"""The backoff policy: exponential doubling with a cap, fixed delays, jitter bounds."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from broker.backoff import delay
from protocol.checks import MAX_DELAY_MS
from protocol.model import Backoff, BackoffKind

EXP = BackoffKind.EXPONENTIAL
FIXED = BackoffKind.FIXED


def test_exponential_doubles_from_base() -> None:
    policy = Backoff(EXP, 1_000, None)
    rng = random.Random(0)
    assert [delay(n, policy, rng) for n in range(1, 6)] == [1_000, 2_000, 4_000, 8_000, 16_000]


def test_exponential_is_capped() -> None:
    policy = Backoff(EXP, 1_000, 5_000)
    rng = random.Random(0)
    assert [delay(n, policy, rng) for n in range(1, 6)] == [1_000, 2_000, 4_000, 5_000, 5_000]


def test_default_policy_reaches_one_hour_cap() -> None:
    policy = Backoff(EXP, 1_000, 3_600_000)
    assert delay(12, policy, random.Random(0)) == 2_048_000
    assert delay(13, policy, random.Random(0)) == 3_600_000


def test_huge_attempt_numbers_stay_bounded() -> None:
    rng = random.Random(0)
    assert delay(1_000_000, Backoff(EXP, 1_000, None), rng) == MAX_DELAY_MS
    assert delay(1_000_000, Backoff(EXP, 1_000, 60_000), rng) == 60_000


def test_fixed_is_base_every_time() -> None:
    policy = Backoff(FIXED, 750, None)
    rng = random.Random(0)
    assert {delay(n, policy, rng) for n in range(1, 50)} == {750}


def test_zero_base_gives_zero_delay() -> None:
    assert delay(5, Backoff(EXP, 0, None, 0.5), random.Random(0)) == 0


def test_no_jitter_does_not_consume_randomness() -> None:
    rng = random.Random(42)
    delay(3, Backoff(EXP, 100, None, 0.0), rng)
    assert rng.random() == random.Random(42).random()


def test_attempt_below_one_is_a_bug() -> None:
    with pytest.raises(ValueError):
        delay(0, Backoff(FIXED, 10, None), random.Random(0))


@given(
    attempt=st.integers(1, 80),
    kind=st.sampled_from([EXP, FIXED]),
    base=st.integers(0, 10_000_000),
    cap=st.none() | st.integers(0, 100_000_000),
    jitter=st.floats(0.0, 1.0),
    seed=st.integers(0, 2**32),
)
def test_jitter_only_shortens_within_bounds(
    attempt: int, kind: BackoffKind, base: int, cap: int | None, jitter: float, seed: int
) -> None:
    plain = delay(attempt, Backoff(kind, base, cap, 0.0), random.Random(seed))
    jittered = delay(attempt, Backoff(kind, base, cap, jitter), random.Random(seed))
    assert 0 <= plain <= MAX_DELAY_MS
    if cap is not None:
        assert plain <= cap
    assert plain * (1 - jitter) - 1 <= jittered <= plain


def test_jitter_spreads_delays() -> None:
    rng = random.Random(7)
    policy = Backoff(FIXED, 10_000, None, 0.5)
    values = {delay(1, policy, rng) for _ in range(200)}
    assert len(values) > 50
    assert min(values) >= 5_000
    assert max(values) <= 10_000
