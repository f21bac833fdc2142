"""Repeatable jobs in the core (broker/core_schedules.py): idempotent upsert, one delayed job per
occurrence made in the same change set as the scheduler's progress, the tick and the deadline,
one catch-up run after downtime, remove, obliterate, a full queue, and bad input."""

from __future__ import annotations

import dataclasses
import random

import pytest

from broker.core import Core, CoreConfig, CoreError, Snapshot
from broker.schedule import Rule, Scheduler
from protocol.errors import ErrorCode
from protocol.model import JobSpec, JobState

T0 = 1_700_000_000_000
TEMPLATE = JobSpec(None, "tick", b"data", priority=3, max_attempts=2)


def make(**config: int) -> Core:
    return Core(CoreConfig(**config), rng=random.Random(1), token_base=1 << 40)  # type: ignore[arg-type]


def every(period_ms: int, **bounds: int | None) -> Rule:
    return Rule(period_ms, None, None, bounds.get("start"), bounds.get("end"),
                bounds.get("limit"), 0)


def repeat_jobs(core: Core, key: str = "k") -> dict[str, JobState]:
    return {job.id: job.state for job in core.iter_jobs() if job.id.startswith(f"repeat:{key}:")}


def run_until(core: Core, end: int, step: int = 100, start: int = T0) -> None:
    for now in range(start, end + 1, step):
        deadline = core.next_deadline()
        if deadline is not None and deadline <= now:
            core.tick(now)


def test_upsert_makes_the_first_run_now_and_is_idempotent() -> None:
    core = make()
    info, created, changed = core.schedules.upsert("q", "k", TEMPLATE, every(1_000), T0)
    assert (created, changed, info.count, info.next_run_at) == (True, True, 1, T0)
    assert repeat_jobs(core) == {f"repeat:k:{T0}": JobState.WAITING}
    job = core.get(f"repeat:k:{T0}", "q")
    assert job is not None and (job.name, job.payload, job.priority, job.max_attempts) == (
        "tick", b"data", 3, 2)
    core.take_changes()
    for later in (T0 + 10, T0 + 20, T0 + 30, T0 + 40):
        again, created, changed = core.schedules.upsert("q", "k", TEMPLATE, every(1_000), later)
        assert (created, changed) == (False, False) and again == info
    assert not core.take_changes()  # nothing to write
    assert core.schedules.list(None, 0, 10) == ([info], 1)


def test_each_occurrence_is_one_delayed_job_made_with_the_scheduler_change() -> None:
    core = make()
    core.schedules.upsert("q", "k", TEMPLATE, every(1_000), T0)
    assert core.next_deadline() == T0
    core.tick(T0)
    changes = core.take_changes()
    made = [job for job in changes.jobs.values() if job is not None]
    assert [job.id for job in made] == [f"repeat:k:{T0}", f"repeat:k:{T0 + 1_000}"]
    scheduler = changes.schedules[("q", "k")]
    assert scheduler is not None and scheduler.next_at == T0 + 1_000 and scheduler.count == 2
    assert core.get(f"repeat:k:{T0 + 1_000}", "q").state is JobState.DELAYED  # type: ignore[union-attr]
    assert core.next_deadline() == T0 + 1_000
    run_until(core, T0 + 10_000)
    jobs = repeat_jobs(core)
    assert len(jobs) == 12  # 0..10 s, and the next one delayed until 11 s
    assert [state for state in jobs.values()].count(JobState.DELAYED) == 1


def test_a_late_tick_skips_the_missed_occurrences() -> None:
    core = make()
    core.schedules.upsert("q", "k", TEMPLATE, every(1_000), T0)
    core.tick(T0)
    core.tick(T0 + 5_500)  # the timer ran 4.5 periods late
    assert sorted(repeat_jobs(core)) == sorted(
        f"repeat:k:{at}" for at in (T0, T0 + 1_000, T0 + 6_000))


def restart(core: Core, now: int) -> Core:
    """A snapshot of every committed change, as the journal holds it, restored at ``now``."""
    changes = core.take_changes()
    schedulers = [dataclasses.replace(s) for s in changes.schedules.values() if s is not None]
    jobs = [job.clone() for job in core.iter_jobs()]
    queues = [dataclasses.replace(meta) for meta in changes.queues.values() if meta is not None]
    return Core.restore(CoreConfig(), Snapshot(jobs, queues, changes.next_seq, schedulers), now,
                        rng=random.Random(2), token_base=2 << 40)


def test_after_downtime_one_catch_up_run_then_on_from_now() -> None:
    core = make()
    core.schedules.upsert("q", "k", TEMPLATE, every(1_000), T0)
    core.tick(T0)  # the run at T0 and the next, at T0 + 1 s, are journaled
    down_until = T0 + 7_300
    core = restart(core, down_until)
    assert core.next_deadline() == T0 + 1_000  # overdue: the timer fires at once
    core.tick(down_until)
    jobs = repeat_jobs(core)
    assert sorted(jobs) == sorted(f"repeat:k:{at}" for at in (T0, T0 + 1_000, T0 + 8_000))
    assert jobs[f"repeat:k:{T0 + 1_000}"] is JobState.WAITING  # the one catch-up run
    assert jobs[f"repeat:k:{T0 + 8_000}"] is JobState.DELAYED
    info = core.schedules.list("q", 0, 10)[0][0]
    assert (info.next_run_at, info.count) == (T0 + 8_000, 3)


def test_a_restart_replays_nothing_twice() -> None:
    core = make()
    core.schedules.upsert("q", "k", TEMPLATE, every(1_000), T0)
    run_until(core, T0 + 3_000)
    core = restart(core, T0 + 3_000)
    run_until(core, T0 + 6_000, start=T0 + 3_000)
    times = sorted(int(job_id.rsplit(":", 1)[1]) for job_id in repeat_jobs(core))
    assert times == [T0 + k * 1_000 for k in range(8)]


def test_a_changed_definition_replaces_the_pending_run_and_keeps_the_count() -> None:
    core = make()
    core.schedules.upsert("q", "k", TEMPLATE, every(1_000, limit=5), T0)
    core.tick(T0)
    info, created, changed = core.schedules.upsert("q", "k", TEMPLATE, every(300, limit=5),
                                                   T0 + 100)
    assert (created, changed) == (False, True)
    assert info.next_run_at == T0 + 300  # anchored where it was
    assert sorted(repeat_jobs(core)) == [f"repeat:k:{T0}", f"repeat:k:{T0 + 300}"]
    assert info.count == 2  # the dropped run does not count


def test_limit_and_end_stop_the_runs_and_the_scheduler_stays() -> None:
    core = make()
    core.schedules.upsert("q", "k", TEMPLATE, every(1_000, limit=3), T0)
    core.schedules.upsert("q", "e", TEMPLATE, every(1_000, end=T0 + 1_500), T0)
    run_until(core, T0 + 10_000)
    assert len(repeat_jobs(core, "k")) == 3 and len(repeat_jobs(core, "e")) == 2
    listed, total = core.schedules.list("q", 0, 10)
    assert total == 2 and [(s.key, s.next_run_at) for s in listed] == [("e", None), ("k", None)]
    assert core.next_deadline() is None
    _, created, changed = core.schedules.upsert("q", "k", TEMPLATE, every(1_000, limit=3), T0)
    assert not created and not changed  # an app start does not run it again


def test_remove_deletes_the_pending_run_and_obliterate_the_schedulers() -> None:
    core = make()
    core.schedules.upsert("q", "k", TEMPLATE, every(1_000), T0)
    core.tick(T0)
    assert core.schedules.remove("q", "k", T0 + 1) is True
    assert repeat_jobs(core) == {f"repeat:k:{T0}": JobState.WAITING}
    assert core.schedules.remove("q", "k", T0 + 1) is False
    assert core.take_changes().schedules == {("q", "k"): None}
    core.schedules.upsert("other", "k", TEMPLATE, every(1_000), T0)
    core.obliterate("other", True, T0 + 2)
    assert core.schedules.list(None, 0, 10) == ([], 0)
    assert core.take_changes().schedules == {("other", "k"): None}
    core.tick(T0 + 5_000)
    assert core.get(f"repeat:k:{T0 + 1_000}", "other") is None


def test_a_full_queue_skips_the_occurrence() -> None:
    core = make(max_queue_jobs=2)
    core.schedules.upsert("q", "k", TEMPLATE, every(1_000), T0)
    run_until(core, T0 + 4_000)
    assert len(repeat_jobs(core)) == 2
    info = core.schedules.list("q", 0, 1)[0][0]
    assert info.next_run_at == T0 + 5_000 and info.count == 6


def test_bad_input_names_the_field_and_changes_nothing() -> None:
    core = make(max_payload=10)
    with pytest.raises(CoreError) as caught:
        core.schedules.upsert("q", "k", TEMPLATE._replace(payload=b"x" * 11), every(1_000), T0)
    assert caught.value.code is ErrorCode.BAD_ARGUMENT
    assert caught.value.message.startswith("job.payload: ")
    bad_tz = Rule(None, "0 9 * * *", "Nowhere/Land", None, None, None, 0)
    with pytest.raises(CoreError) as caught:
        core.schedules.upsert("q", "k", TEMPLATE._replace(payload=b""), bad_tz, T0)
    assert caught.value.message.startswith("tz: ")
    assert core.schedules.list(None, 0, 10) == ([], 0) and not core.take_changes()


def test_scheduler_record_matches_its_definition() -> None:
    rule = every(1_000)._replace(anchor_ms=T0)
    scheduler = Scheduler("q", "k", rule, TEMPLATE, T0)
    assert scheduler.same_definition(rule._replace(anchor_ms=T0 + 5), TEMPLATE)
    assert not scheduler.same_definition(rule._replace(limit=3), TEMPLATE)
    assert not scheduler.same_definition(rule, TEMPLATE._replace(priority=0))
