"""The core's job events, pure tier: replaying the events of any sequence of operations gives
every job's state in the core (so no transition goes unreported and none is invented), in
``seq`` order; the queue metrics count what happened; and with no recorder nothing is built."""

from __future__ import annotations

import contextlib
import random
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from broker.core import Core, CoreConfig, CoreError
from broker.events import Event, PendingEvents
from protocol.model import (
    AckItem,
    Backoff,
    BackoffKind,
    FailItem,
    JobSpec,
    JobState,
    ReleaseItem,
    Retention,
)
from protocol.observing import EventKind

T0 = 1_700_000_000_000
QUEUES = ("a", "b")

operations = st.lists(
    st.one_of(
        st.tuples(st.just("enqueue"), st.sampled_from(QUEUES), st.integers(1, 3),
                  st.sampled_from([None, 0, 50, 500])),
        st.tuples(st.just("reserve"), st.sampled_from(QUEUES), st.integers(1, 3)),
        st.tuples(st.just("ack"), st.integers(0, 20)),
        st.tuples(st.just("fail"), st.integers(0, 20), st.booleans(),
                  st.sampled_from([None, 0, 100])),
        st.tuples(st.just("release"), st.integers(0, 20), st.sampled_from([None, 100])),
        st.tuples(st.just("progress"), st.integers(0, 20)),
        st.tuples(st.just("cancel"), st.integers(0, 30)),
        st.tuples(st.just("retry_failed"), st.sampled_from(QUEUES)),
        st.tuples(st.just("pause"), st.sampled_from(QUEUES)),
        st.tuples(st.just("resume"), st.sampled_from(QUEUES)),
        st.tuples(st.just("clean"), st.sampled_from(QUEUES),
                  st.sampled_from([JobState.WAITING, JobState.DELAYED, JobState.COMPLETED])),
        st.tuples(st.just("drop_owner")),
        st.tuples(st.just("wait"), st.sampled_from([10, 200, 1_500])),
    ),
    max_size=60,
)


def replay(events: list[Event], states: dict[str, JobState | None]) -> None:
    """Apply events to a job id -> state map (``None``: removed)."""
    for event in events:
        kind, job_id, fields = event.kind, event.job_id, event.extra
        if job_id is None:
            continue
        if kind is EventKind.ADDED:
            states[job_id] = JobState(fields[0])
        elif kind is EventKind.WAITING:
            states[job_id] = JobState.WAITING
        elif kind is EventKind.ACTIVE:
            states[job_id] = JobState.ACTIVE
        elif kind is EventKind.COMPLETED:
            states[job_id] = JobState.COMPLETED
        elif kind in (EventKind.FAILED, EventKind.LEASE_EXPIRED):
            will_retry = fields[2]
            states[job_id] = JobState.WAITING if will_retry else JobState.FAILED
        elif kind is EventKind.RELEASED:
            states[job_id] = JobState.WAITING
        elif kind is EventKind.DELAYED:
            states[job_id] = JobState.DELAYED
        elif kind is EventKind.REMOVED:
            states[job_id] = None


@settings(max_examples=300, deadline=None)
@given(operations)
def test_replaying_the_events_gives_every_jobs_state(program: list[tuple[Any, ...]]) -> None:
    core = Core(CoreConfig(default_backoff=Backoff(BackoffKind.FIXED, 300, None),
                           default_lease_ms=1_000, keep_completed=Retention(None, None),
                           keep_failed=Retention(None, None)),
                rng=random.Random(0), token_base=1 << 40)
    pending = PendingEvents()
    core.record_events(pending)
    now = T0
    held: list[tuple[str, int]] = []  # (job id, token) as reserved
    ids: list[str] = []
    states: dict[str, JobState | None] = {}
    seqs: list[int] = []
    for op, *args in program:
        if op == "enqueue":
            queue, count, delay = args
            specs = [JobSpec(None, "t", b"p", delay_ms=delay) for _ in range(count)]
            ids += core.enqueue(queue, specs, now).ids
        elif op == "reserve":
            held += [(j.job_id, j.token) for j in core.reserve((args[0],), args[1], None, 7, now)]
        elif op in ("ack", "fail", "release", "progress") and held:
            index = args[0] % len(held)
            job_id, token = held[index]
            if op == "progress":
                with contextlib.suppress(CoreError):  # a lease that expired meanwhile
                    core.progress(job_id, token, {"n": 1}, now)
            else:
                del held[index]
                if op == "ack":
                    core.ack([AckItem(job_id, token, b"r")], now)
                elif op == "fail":
                    core.fail([FailItem(job_id, token, "boom", args[1], args[2])], now)
                else:
                    core.release([ReleaseItem(job_id, token, args[1])], now)
        elif op == "cancel" and ids:
            job_id = ids[args[0] % len(ids)]
            if core.get(job_id) is not None:
                core.cancel(job_id, now)
        elif op == "retry_failed":
            core.retry_failed(args[0], None, None, now)
        elif op in ("pause", "resume"):
            (core.pause if op == "pause" else core.resume)(args[0], now)
        elif op == "clean":
            core.clean(args[0], args[1], 0, None, now)
        elif op == "drop_owner":
            core.release_owner(7, now)
            held.clear()
        elif op == "wait":
            now += args[0]
            core.tick(now)
        pending.begin_batch()
        published = pending.commit_succeeded().events
        seqs += [event.seq for event in published]
        replay(published, states)
        for job_id in ids:
            info = core.get(job_id)
            assert states.get(job_id) == (None if info is None else info.state), job_id
    assert seqs == list(range(1, len(seqs) + 1))  # nothing dropped, nothing twice, in order


def test_seq_order_queue_events_and_drained() -> None:
    core = Core(CoreConfig(), rng=random.Random(0), token_base=1 << 40)
    pending = PendingEvents()
    core.record_events(pending)
    core.enqueue("q", [JobSpec(None, "t", b"p")] * 2, T0)
    core.pause("q", T0)
    core.pause("q", T0)  # already paused: no event
    core.resume("q", T0)
    core.reserve(("q",), 2, None, 1, T0)
    pending.begin_batch()
    events = pending.commit_succeeded().events
    assert [e.kind for e in events] == [
        EventKind.ADDED, EventKind.ADDED, EventKind.PAUSED, EventKind.RESUMED,
        EventKind.ACTIVE, EventKind.ACTIVE, EventKind.DRAINED]
    assert [e.seq for e in events] == list(range(1, 8))
    assert (events[2].job_id, events[2].queue) == (None, "q")


def test_no_recorder_no_events_and_metrics_count_anyway() -> None:
    core = Core(CoreConfig(), rng=random.Random(0), token_base=1 << 40)
    ids = core.enqueue("q", [JobSpec(None, "t", b"p")] * 3, T0).ids
    jobs = core.reserve(("q",), 3, None, 1, T0 + 40)
    core.ack([AckItem(jobs[0].job_id, jobs[0].token, None)], T0 + 100)
    core.fail([FailItem(jobs[1].job_id, jobs[1].token, "x", True, None)], T0 + 100)
    core.fail([FailItem(jobs[2].job_id, jobs[2].token, "x", False, None)], T0 + 100)
    metrics = core.queue_metrics()["q"]
    assert (metrics.added.total, metrics.completed.total, metrics.retried.total,
            metrics.failed.total) == (3, 1, 1, 1)
    assert (metrics.wait_ms.count, metrics.wait_ms.min, metrics.processing_ms.max) == (3, 40, 60)
    assert core.held_by(1) == 0 and len(ids) == 3


def test_failed_events_carry_max_attempts_so_a_final_failure_is_known() -> None:
    core = Core(CoreConfig(), rng=random.Random(0), token_base=1 << 40)
    pending = PendingEvents()
    core.record_events(pending)
    core.enqueue("q", [JobSpec("a", "t", b"p", max_attempts=2)], T0)
    for attempt in (1, 2):
        (job,) = core.reserve(("q",), 1, None, 1, T0 + attempt)
        core.fail([FailItem(job.job_id, job.token, "boom", True, 0)], T0 + attempt)
    core.enqueue("q", [JobSpec("b", "t", b"p")], T0 + 3)
    (other,) = core.reserve(("q",), 1, None, 1, T0 + 3)
    core.fail([FailItem(other.job_id, other.token, "fatal", False, None)], T0 + 3)
    pending.begin_batch()
    failed = [e.to_wire() for e in pending.commit_succeeded().events
              if e.kind is EventKind.FAILED]
    assert [(e["job_id"], e["attempt"], e["max_attempts"], e["will_retry"]) for e in failed] == [
        ("a", 1, 2, True), ("a", 2, 2, False), ("b", 1, 3, False)]  # "b": final, not exhausted
