"""Flow control in the core (broker/core_flow.py): rate and concurrency limits checked by
``reserve``, "not now" releases, the wakes folded into ``next_deadline``, and restore."""

from __future__ import annotations

import dataclasses
import random

from broker.core import Changes, Core, CoreConfig, QueueMeta, Snapshot
from broker.jobs import Job
from protocol.model import AckItem, JobSpec, JobState, ReleaseItem

T0 = 1_700_000_000_000


def make() -> Core:
    return Core(CoreConfig(), rng=random.Random(1), token_base=1 << 40)


def put(core: Core, queue: str = "q", count: int = 1, now: int = T0) -> None:
    core.enqueue(queue, [JobSpec(None, "task", b"p")] * count, now)


def test_rate_limit_hands_out_at_most_max_per_window_and_wakes_when_it_allows() -> None:
    core = make()
    put(core, count=25)
    core.limit("q", (10, 1_000), None, T0)
    assert len(core.reserve(["q"], 100, None, 1, T0)) == 10
    assert core.reserve(["q"], 100, None, 2, T0 + 500) == []
    core.take_ready()
    assert core.next_deadline() == T0 + 1_000  # the first start leaves the window then
    core.tick(T0 + 999)
    assert core.take_ready() == set()
    core.tick(T0 + 1_000)
    assert core.take_ready() == {"q"}
    assert len(core.reserve(["q"], 100, None, 1, T0 + 1_000)) == 10
    assert len(core.reserve(["q"], 100, None, 1, T0 + 2_000)) == 5


def test_a_limited_queue_is_skipped_not_waited_for() -> None:
    core = make()
    put(core, "slow", 5)
    put(core, "fast", 5)
    core.limit("slow", (1, 60_000), None, T0)
    got = core.reserve(["slow", "fast"], 4, None, 1, T0)
    assert [job.queue for job in got] == ["slow", "fast", "fast", "fast"]
    got = core.reserve(["slow", "fast"], 4, None, 1, T0 + 1)
    assert [job.queue for job in got] == ["fast", "fast"]


def test_concurrency_limit_and_the_wake_when_a_job_ends() -> None:
    core = make()
    put(core, count=5)
    assert core.limit("q", None, 2, T0).concurrency == 2
    first = core.reserve(["q"], 10, None, 1, T0)
    assert len(first) == 2
    assert core.reserve(["q"], 10, None, 2, T0) == []
    core.take_ready()
    core.ack([AckItem(first[0].job_id, first[0].token)], T0 + 1)
    assert core.take_ready() == {"q"}
    assert len(core.reserve(["q"], 10, None, 2, T0 + 1)) == 1
    core.limit("q", None, False, T0 + 2)  # cleared: the rest may go
    assert core.take_ready() == {"q"}
    assert len(core.reserve(["q"], 10, None, 2, T0 + 2)) == 2


def test_release_not_now_keeps_attempts_and_pauses_only_its_queue() -> None:
    core = make()
    put(core, "q", 3)
    put(core, "other", 1)
    job = core.reserve(["q"], 1, None, 1, T0)[0]
    out = core.release([ReleaseItem(job.job_id, job.token, 5_000, True)], T0 + 10)
    assert out[0].value == "delayed"
    info = core.get(job.job_id)
    assert info is not None and info.attempts == 0 and info.state is JobState.DELAYED
    assert core.limit("q", None, None, T0 + 10).paused_until == T0 + 5_010
    assert [j.queue for j in core.reserve(["q", "other"], 5, None, 1, T0 + 20)] == ["other"]
    assert core.next_deadline() == T0 + 5_010
    core.take_ready()
    core.tick(T0 + 5_010)
    assert core.take_ready() == {"q"}
    assert core.limit("q", None, None, T0 + 5_010).paused_until is None
    assert len(core.reserve(["q"], 5, None, 1, T0 + 5_010)) == 3


def test_resume_lifts_a_not_now_pause() -> None:
    core = make()
    put(core, count=2)
    job = core.reserve(["q"], 1, None, 1, T0)[0]
    core.release([ReleaseItem(job.job_id, job.token, 60_000, True)], T0)
    assert core.reserve(["q"], 1, None, 1, T0) == []
    core.resume("q", T0 + 1)
    assert len(core.reserve(["q"], 1, None, 1, T0 + 1)) == 1


def _snapshot(core: Core) -> Snapshot:
    changes: Changes = core.take_changes()
    jobs: list[Job] = [job.clone() for job in core.iter_jobs()]
    queues = [dataclasses.replace(meta) for meta in changes.queues.values()]
    return Snapshot(jobs, queues, changes.next_seq)


def test_limits_pause_and_the_rate_window_survive_a_restore() -> None:
    core = make()
    put(core, "q", 10)
    put(core, "p", 2)
    core.limit("q", (3, 1_000), 4, T0)
    core.reserve(["q"], 10, None, 1, T0)
    held = core.reserve(["p"], 1, None, 1, T0)[0]
    core.release([ReleaseItem(held.job_id, held.token, 30_000, True)], T0)
    restored = Core.restore(CoreConfig(), _snapshot(core), T0 + 200, rng=random.Random(1),
                            token_base=2 << 40)
    assert restored.limit("q", None, None, T0 + 200) == (3, 1_000, 4, None, T0 + 1_000)
    assert restored.limit("p", None, None, T0 + 200).paused_until == T0 + 30_000
    # The three starts at T0 (their jobs were failed by the restart) still fill the window.
    assert restored.reserve(["q", "p"], 10, None, 1, T0 + 200) == []
    assert len(restored.reserve(["q"], 10, None, 1, T0 + 1_000)) == 3


def test_a_limit_meta_change_is_journaled() -> None:
    core = make()
    core.take_changes()
    core.limit("q", (5, 100), None, T0)
    meta = core.take_changes().queues["q"]
    assert meta == QueueMeta("q", rate_max=5, rate_period_ms=100)
    core.limit("q", None, None, T0)
    assert not core.take_changes()  # a read changes nothing
    core.limit("q", False, False, T0)
    assert core.take_changes().queues["q"] == QueueMeta("q")


def test_pause_for_ms_is_a_not_now_pause_without_a_job_in_hand() -> None:
    core = make()
    put(core, "q", 2)
    put(core, "other", 1)
    core.take_changes()
    core.pause("q", T0, 5_000)
    assert core.take_changes().queues["q"].paused_until == T0 + 5_000  # journaled
    limits = core.limit("q", None, None, T0 + 1)
    assert limits.paused_until == T0 + 5_000
    assert core.stats("q", T0 + 1)["q"].paused is False  # not the pause until resume
    assert [j.queue for j in core.reserve(["q", "other"], 5, None, 1, T0 + 1)] == ["other"]
    core.pause("q", T0 + 2, 1_000)  # a shorter one keeps the longer pause running
    assert core.limit("q", None, None, T0 + 2).paused_until == T0 + 5_000
    assert core.next_deadline() == T0 + 5_000
    core.take_ready()
    core.tick(T0 + 5_000)
    assert core.take_ready() == {"q"}
    assert len(core.reserve(["q"], 5, None, 1, T0 + 5_000)) == 2


def test_pause_for_ms_survives_a_restore_and_resume_lifts_it() -> None:
    core = make()
    put(core, "q", 1)
    core.pause("q", T0, 60_000)
    restored = Core.restore(CoreConfig(), _snapshot(core), T0 + 100, rng=random.Random(1),
                            token_base=2 << 40)
    assert restored.limit("q", None, None, T0 + 100).paused_until == T0 + 60_000
    assert restored.reserve(["q"], 1, None, 1, T0 + 100) == []
    restored.resume("q", T0 + 200)
    assert restored.limit("q", None, None, T0 + 200).paused_until is None
    assert len(restored.reserve(["q"], 1, None, 1, T0 + 200)) == 1


def test_limit_reports_when_a_full_rate_window_next_has_room() -> None:
    core = make()
    put(core, count=5)
    assert core.limit("q", (2, 1_000), None, T0).rate_free_at is None  # room now
    core.reserve(["q"], 1, None, 1, T0)
    core.reserve(["q"], 1, None, 1, T0 + 300)
    assert core.limit("q", None, None, T0 + 400).rate_free_at == T0 + 1_000
    core.pause("q", T0 + 400, 5_000)  # the pause is reported apart
    limits = core.limit("q", None, None, T0 + 500)
    assert (limits.paused_until, limits.rate_free_at) == (T0 + 5_400, T0 + 1_000)
    assert core.limit("q", None, None, T0 + 1_000).rate_free_at is None
    assert core.limit("other", None, None, T0).rate_free_at is None  # no rate limit
