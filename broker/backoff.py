"""Redelivery delay policy: a pure function of the attempt number, the policy and a random source.

``exponential``: ``base_ms * 2 ** (attempt - 1)``, capped at ``cap_ms`` (no cap when ``None``; the
result never exceeds ``MAX_DELAY_MS`` either way). ``fixed``: ``base_ms`` every time.

Jitter ``j`` (0..1) shortens the delay by a random fraction of itself:
``delay - floor(delay * j * rng.random())``, so the result lies in ``(delay * (1 - j), delay]``.
Jitter only ever shortens, so the cap stays a true upper bound.
"""

from __future__ import annotations

import random
from typing import Final

from protocol.checks import MAX_DELAY_MS
from protocol.model import Backoff, BackoffKind

_MAX_SHIFT: Final = 62
"""Past this many doublings the delay is above any cap we accept, so stop doubling."""


def delay(attempt: int, backoff: Backoff, rng: random.Random) -> int:
    """The delay in milliseconds before redelivering a job after its ``attempt``-th attempt failed.

    Args:
        attempt: the number of the attempt that just failed, 1 for the first delivery.
        backoff: the policy (kind, base, cap, jitter).
        rng: the random source for jitter; not consulted when ``backoff.jitter`` is 0.

    Returns:
        A delay in milliseconds, ``0 <= delay <= min(cap_ms, MAX_DELAY_MS)``.

    Raises:
        ValueError: ``attempt`` is below 1.
    """
    if attempt < 1:
        raise ValueError(f"attempt must be >= 1, got {attempt}")
    base = backoff.base_ms
    if backoff.kind is BackoffKind.FIXED:
        value = base
    else:
        shift = attempt - 1
        value = MAX_DELAY_MS if shift > _MAX_SHIFT else base << shift
    cap = backoff.cap_ms
    if cap is not None and value > cap:
        value = cap
    if value > MAX_DELAY_MS:
        value = MAX_DELAY_MS
    if backoff.jitter > 0.0 and value > 0:
        value -= int(value * backoff.jitter * rng.random())
    return value
