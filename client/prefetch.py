"""Prefetch: how many jobs past ``concurrency`` a worker reserves ahead, so the next jobs are
already there when a runner frees.

Theory of operation
-------------------
Without prefetch a worker holds at most ``concurrency`` jobs without an outcome, so with fast
handlers it plays ping-pong with the broker: one reserve of ``concurrency`` jobs, run them, ack
them and ask again, each side idle while the other works. Every job reserved ahead makes the
batches larger (fewer requests, replies and wake-ups per job on both sides; measured in
``bench/README.md``, "Prefetch"), but a prefetched job waits in this worker for a runner while an
idle worker elsewhere could have run it: Celery's ``worker_prefetch_multiplier`` (4 by default)
is the known way to get that wrong for long jobs.

So by default (``prefetch=None``) the allowance follows the handlers' measured speed: each runner
reports, when it runs out of jobs, how many it ran and for how long; the mean time per job
(``per_job``, a moving average) gives how many jobs ``concurrency`` runners start within
``HORIZON`` seconds, and that many (at most ``concurrency``) may be reserved ahead. A prefetched
job then waits about ``HORIZON`` at most before it starts: no-op handlers get the whole
allowance, a 1 ms handler at ``concurrency=50`` gets all 50, a 100 ms one gets 1, a one-second
one none. Before the first report the allowance is 0. ``prefetch=N`` fixes it at ``N`` (``0``:
never more than ``concurrency``).

Invariants:
1. ``0 <= allowance <= cap``; with a fixed setting ``allowance == cap`` always.
"""

from __future__ import annotations

from typing import Final

__all__ = ["HORIZON", "Prefetch"]

HORIZON: Final = 0.002
"""Seconds a prefetched job may expect to wait for a runner under the automatic allowance."""
_WEIGHT: Final = 0.25
"""Weight of the newest report in the moving average of the time per job."""


class Prefetch:
    """The number of jobs a worker may reserve past its ``concurrency``.

    Args:
        setting: ``None`` for the automatic allowance (up to ``concurrency``), or a fixed
            number of jobs (``0``: none).
        concurrency: the worker's runners.

    Raises:
        ValueError: ``setting`` is negative.
    """

    __slots__ = ("_concurrency", "_fixed", "allowance", "cap", "per_job")

    def __init__(self, setting: int | None, concurrency: int) -> None:
        if setting is not None and setting < 0:
            raise ValueError("prefetch must be >= 0 (or None for automatic)")
        self._concurrency = concurrency
        self._fixed = setting is not None
        self.cap = concurrency if setting is None else setting
        """The most jobs reserved ahead."""
        self.allowance = self.cap if self._fixed else 0
        """Jobs that may be reserved ahead now."""
        self.per_job: float | None = None
        """Moving average of a job's seconds in a runner (automatic mode, once reported)."""

    def ran(self, jobs: int, seconds: float) -> None:
        """A runner ran ``jobs`` jobs back to back in ``seconds`` and found no more."""
        if self._fixed or jobs <= 0:
            return
        sample = max(seconds, 0.0) / jobs
        per_job = self.per_job
        per_job = sample if per_job is None else per_job + _WEIGHT * (sample - per_job)
        self.per_job = per_job
        starts = HORIZON * self._concurrency / per_job if per_job > 0 else float(self.cap)
        self.allowance = self.cap if starts >= self.cap else int(starts)  # starts may be inf
