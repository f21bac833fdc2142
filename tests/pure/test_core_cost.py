"""Cost bounds of the core's admin reads: a small request touches few jobs, however many the
queue holds (issue 10, finding 4).

Costs are counted, never timed: the core's job index is swapped for a ``dict`` that counts its
``get`` calls, and every operation checks each job it visits against the index with ``get``
(lazy deletion), so the count is the number of entries the operation touched.
"""

from __future__ import annotations

import random
from typing import Any

from broker.core import Core, CoreConfig
from broker.jobs import Job
from protocol.model import FailItem, JobSpec, JobState

T0 = 1_700_000_000_000
MANY = 5_000


class CountingIndex(dict[str, Job]):
    """The core's job index, counting lookups."""

    def __init__(self, jobs: dict[str, Job]) -> None:
        super().__init__(jobs)
        self.lookups = 0

    def get(self, key: str, default: Any = None) -> Any:
        self.lookups += 1
        return super().get(key, default)


def counted(core: Core) -> CountingIndex:
    """Swap ``core``'s job index for a counting copy (the test reaches into the core's state on
    purpose: lookups are the cost being bounded)."""
    index = CountingIndex(core._state.jobs)
    core._state.jobs = index
    return index


def make() -> Core:
    return Core(CoreConfig(), rng=random.Random(1), token_base=1 << 40)


def fail_many(core: Core, count: int) -> list[str]:
    """``count`` failed jobs in queue ``q``, in the order they failed."""
    ids = core.enqueue("q", [JobSpec(None, "t", b"", max_attempts=1)] * count, T0).ids
    reserved = core.reserve(["q"], count, None, 1, T0)
    core.fail([FailItem(job.job_id, job.token, "boom", False, None) for job in reserved], T0 + 1)
    return list(ids)


def test_list_failed_touches_offset_plus_limit_jobs() -> None:
    core = make()
    ids = fail_many(core, MANY)
    index = counted(core)
    page, total = core.list_failed("q", 1, 0)
    assert [info.id for info in page] == [ids[-1]] and total == MANY
    assert index.lookups <= 2
    index.lookups = 0
    page, total = core.list_failed("q", 10, 100)
    assert [info.id for info in page] == ids[::-1][100:110]
    assert index.lookups <= 100 + 10 + 1


def test_list_failed_stays_cheap_after_many_cancels() -> None:
    core = make()
    ids = fail_many(core, MANY)
    for job_id in ids[MANY // 2:]:  # the newest half: their entries go stale
        core.cancel(job_id, T0 + 2)
    index = counted(core)
    page, total = core.list_failed("q", 1, 0)
    assert [info.id for info in page] == [ids[MANY // 2 - 1]] and total == MANY // 2
    assert index.lookups <= MANY // 2 + 2  # the stale entries at the newest end, dropped once
    index.lookups = 0
    core.list_failed("q", 1, 0)
    assert index.lookups <= 2


def test_clean_failed_with_a_limit_touches_few_jobs() -> None:
    core = make()
    ids = fail_many(core, MANY)
    index = counted(core)
    for _ in range(100):  # each call drops the entries the call before it deleted, once
        assert core.clean("q", JobState.FAILED, 0, 1, T0 + 5) == 1
    assert core.get(ids[99]) is None and core.get(ids[100]) is not None
    assert index.lookups <= 100 * 4 + 2


def test_clean_waiting_with_a_limit_touches_few_jobs() -> None:
    core = make()
    ids = core.enqueue("q", [JobSpec(None, "t", b"")] * MANY, T0).ids
    index = counted(core)
    assert core.clean("q", JobState.WAITING, 0, 1, T0 + 5) == 1
    assert core.get(ids[0]) is None and core.get(ids[1]) is not None
    assert index.lookups <= 2 + 2  # the lookups of the two get calls included
    index.lookups = 0
    assert core.clean("q", JobState.WAITING, 0, 10, T0 + 5) == 10
    assert index.lookups <= 2 * 10 + 3
    index.lookups = 0
    for _ in range(100):  # each call drops the fronts the calls before it deleted, once
        assert core.clean("q", JobState.WAITING, 0, 1, T0 + 5) == 1
    assert index.lookups <= 100 * 3 + 10


def test_clean_waiting_stops_at_the_first_job_too_young() -> None:
    core = make()
    core.enqueue("q", [JobSpec(None, "t", b"")] * MANY, T0)
    index = counted(core)
    assert core.clean("q", JobState.WAITING, 1_000, None, T0 + 5) == 0
    assert index.lookups <= 2


def test_stats_is_constant_in_the_priorities_in_use() -> None:
    core = make()
    core.enqueue("q", [JobSpec(None, "t", b"", priority=p) for p in range(MANY)], T0)
    index = counted(core)
    assert core.stats("q", T0 + 7)["q"].oldest_waiting_ms == 7
    assert index.lookups <= 1
    core.reserve(["q"], 3, None, 1, T0 + 8)  # empties the three lowest priorities
    index.lookups = 0
    assert core.stats("q", T0 + 9)["q"].waiting == MANY - 3
    assert index.lookups <= 4
