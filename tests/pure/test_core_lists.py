"""``Core.list_jobs`` and ``Core.stats_page``: the orders, the paging, and the waiting index kept
up to date by every move in and out of waiting (enqueue, reserve, fail, release, cancel, clean,
retry, promotion)."""

from __future__ import annotations

import random

from broker.core import Core, CoreConfig
from broker.core_lists import INDEX_IDLE_MS
from protocol.model import AckItem, FailItem, JobSpec, JobState, ReleaseItem

T0 = 1_700_000_000_000
WAITING, DELAYED, ACTIVE = JobState.WAITING, JobState.DELAYED, JobState.ACTIVE
COMPLETED, FAILED = JobState.COMPLETED, JobState.FAILED


def make() -> Core:
    return Core(CoreConfig(), rng=random.Random(1), token_base=1 << 40)


def ids(core: Core, states: tuple[JobState, ...], offset: int = 0, limit: int = 1000,
        now: int = T0) -> list[str]:
    return [job.id for job in core.list_jobs("q", states, offset, limit, now)[0]]


def drain_order(core: Core, now: int) -> list[str]:
    """The order reserve hands the waiting jobs out (then puts them back)."""
    taken = core.reserve(("q",), 10_000, None, 99, now)
    core.release([ReleaseItem(job.job_id, job.token, 0) for job in taken], now)
    return [job.job_id for job in taken]


def test_waiting_pages_follow_reserve_order_through_every_move() -> None:
    core = make()
    rng = random.Random(7)
    now = T0
    core.list_jobs("q", (WAITING,), 0, 1, now)  # build the index before anything happens
    specs = [JobSpec(None, "t", b"p", priority=rng.choice((0, 0, 1, 5))) for _ in range(300)]
    core.enqueue("q", specs, now)
    core.enqueue("q", [JobSpec(None, "t", b"p") for _ in range(50)], now)  # the plain path
    core.enqueue("q", [JobSpec(None, "t", b"p", delay_ms=5) for _ in range(20)], now)
    held = core.reserve(("q",), 40, None, 1, now)
    core.fail([FailItem(j.job_id, j.token, "boom", True, 0) for j in held[:10]], now)
    core.fail([FailItem(j.job_id, j.token, "boom", False, None) for j in held[10:20]], now)
    core.ack([AckItem(j.job_id, j.token, None) for j in held[20:30]], now)
    core.release([ReleaseItem(j.job_id, j.token, 0) for j in held[30:]], now)
    waiting = ids(core, (WAITING,))
    for job_id in waiting[5:40:3]:
        core.cancel(job_id, now)
    core.clean("q", WAITING, 0, 7, now)
    core.retry_failed("q", None, 4, now)
    now += 10
    core.tick(now)  # the delayed jobs become waiting
    expected = drain_order(core, now)
    assert ids(core, (WAITING,), now=now) == expected
    assert core.list_jobs("q", (WAITING,), 0, 1, now)[1] == len(expected)
    pages = [ids(core, (WAITING,), offset, 17, now) for offset in range(0, len(expected), 17)]
    assert [job_id for page in pages for job_id in page] == expected


def test_an_index_built_late_matches_the_ready_queue() -> None:
    core = make()
    core.enqueue("q", [JobSpec(None, "t", b"p", priority=i % 3) for i in range(30)], T0)
    core.cancel("4", T0)
    held = core.reserve(("q",), 2, None, 1, T0)
    assert ids(core, (WAITING,)) == drain_order(core, T0)
    assert held


def test_other_states_and_their_orders() -> None:
    core = make()
    core.enqueue("q", [JobSpec(None, "t", b"p", delay_ms=d) for d in (30, 10, 20)], T0)
    core.enqueue("q", [JobSpec(None, "t", b"p") for _ in range(6)], T0)
    first = core.reserve(("q",), 2, 5_000, 1, T0)
    second = core.reserve(("q",), 2, 1_000, 2, T0)
    core.ack([AckItem(first[0].job_id, first[0].token, None)], T0 + 1)
    core.ack([AckItem(second[0].job_id, second[0].token, None)], T0 + 2)
    assert ids(core, (DELAYED,)) == ["2", "3", "1"]  # by run_at
    active = core.list_jobs("q", (ACTIVE,), 0, 10, T0)[0]
    assert [job.id for job in active] == [second[1].job_id, first[1].job_id]  # by deadline
    assert [job.owner for job in active] == [2, 1]
    assert ids(core, (COMPLETED,)) == [second[0].job_id, first[0].job_id]  # newest first
    both = ids(core, (ACTIVE, DELAYED))
    assert both == [second[1].job_id, first[1].job_id, "2", "3", "1"]
    assert ids(core, (ACTIVE, DELAYED), offset=1, limit=2) == both[1:3]
    assert core.list_jobs("q", tuple(JobState), 0, 1, T0)[1] == 9
    assert core.list_jobs("nope", (WAITING,), 0, 10, T0) == ([], 0)


def test_an_idle_or_empty_index_is_dropped_and_rebuilt_right() -> None:
    core = make()
    core.enqueue("q", [JobSpec(None, "t", b"p", priority=i % 2) for i in range(10)], T0)
    assert len(ids(core, (WAITING,))) == 10
    later = T0 + INDEX_IDLE_MS + 1
    core.enqueue("q", [JobSpec(None, "t", b"p")], later)  # idle: dropped, this job not indexed
    core.cancel("3", later)
    assert ids(core, (WAITING,), now=later) == drain_order(core, later)  # rebuilt from the queue
    taken = core.reserve(("q",), 100, None, 1, later)
    core.enqueue("q", [JobSpec(None, "t", b"p")], later)  # the index was empty: dropped
    assert ids(core, (WAITING,), now=later) == [str(len(taken) + 2)]
    assert ids(core, (ACTIVE,), now=later) == [job.job_id for job in taken]


def test_stats_pages_in_creation_order() -> None:
    core = make()
    for name in ("c", "a", "b", "d"):
        core.pause(name, T0)
    page, total = core.stats_page(1, 2, T0)
    assert list(page) == ["a", "b"] and total == 4
    assert core.stats_page(4, 2, T0) == ({}, 4)
