"""Unit tests of broker/core: every operation and error path, with a fake clock (plain ints)."""

from __future__ import annotations

import random
from typing import Any

import pytest

from broker.config import Settings
from broker.core import Changes, Core, CoreConfig, CoreError, QueueMeta, Snapshot
from broker.core_config import core_config
from broker.jobs import TRANSITIONS
from protocol.errors import ErrorCode
from protocol.model import (
    AckItem,
    Backoff,
    BackoffKind,
    ExtendItem,
    FailItem,
    JobSpec,
    JobState,
    ReleaseItem,
    Retention,
)
from protocol.replies import ReservedJob

T0 = 1_700_000_000_000
NO_BACKOFF = Backoff(BackoffKind.FIXED, 0, None)
KEEP_ALL = Retention(None, None)


def make(**config: Any) -> Core:
    return Core(CoreConfig(**config), rng=random.Random(1), token_base=1 << 40)


def spec(name: str = "task", payload: bytes = b"p", job_id: str | None = None,
         **fields: Any) -> JobSpec:
    return JobSpec(job_id, name, payload, **fields)


def put(core: Core, queue: str = "q", count: int = 1, now: int = T0, **fields: Any) -> list[str]:
    return list(core.enqueue(queue, [spec(**fields) for _ in range(count)], now).ids)


def take(core: Core, queues: tuple[str, ...] = ("q",), n: int = 1, now: int = T0,
         owner: int = 1, lease_ms: int | None = None) -> list[ReservedJob]:
    return core.reserve(queues, n, lease_ms, owner, now)


def state(core: Core, job_id: str) -> JobState | None:
    info = core.get(job_id)
    return None if info is None else info.state


def check_counts(core: Core, now: int = T0) -> None:
    """The incremental counters agree with a full scan of the live jobs."""
    by_queue: dict[str, dict[JobState, int]] = {}
    for job in core.iter_jobs():
        counts = by_queue.setdefault(job.queue, dict.fromkeys(JobState, 0))
        counts[job.state] += 1
    for name, stats in core.stats(None, now).items():
        counts = by_queue.get(name, dict.fromkeys(JobState, 0))
        assert (stats.waiting, stats.delayed, stats.active, stats.completed, stats.failed) == (
            counts[JobState.WAITING], counts[JobState.DELAYED], counts[JobState.ACTIVE],
            counts[JobState.COMPLETED], counts[JobState.FAILED],
        ), name


# --------------------------------------------------------------------------- enqueue


def test_enqueue_assigns_sequential_ids_and_waits() -> None:
    core = make()
    result = core.enqueue("q", [spec(), spec()], T0)
    assert result.ids == ("1", "2") and result.duplicates == ()
    info = core.get("1")
    assert info is not None
    assert (info.state, info.queue, info.name) == (JobState.WAITING, "q", "task")
    assert info.payload == b"p"
    assert (info.attempts, info.max_attempts, info.priority) == (0, 3, 0)
    assert info.created_at == info.run_at == T0
    assert core.take_ready() == {"q"}
    assert core.take_ready() == set()


def test_enqueue_duplicate_id_reports_index_and_creates_nothing() -> None:
    core = make()
    core.enqueue("q", [spec(job_id="a", payload=b"first")], T0)
    core.take_changes()
    result = core.enqueue("q", [spec(), spec(job_id="a", payload=b"second"),
                                spec(job_id="b"), spec(job_id="b")], T0)
    assert result.ids == ("2", "a", "b", "b")
    assert result.duplicates == (1, 3)
    info = core.get("a")
    assert info is not None and info.payload == b"first"
    assert core.stats("q", T0)["q"].waiting == 3
    assert set(core.take_changes().jobs) == {"2", "b"}


def test_duplicate_even_when_completed_until_pruned() -> None:
    core = make(keep_completed=Retention(1, None))
    core.enqueue("q", [spec(job_id="a")], T0)
    job = take(core)[0]
    core.ack([AckItem("a", job.token)], T0)
    assert core.enqueue("q", [spec(job_id="a")], T0).duplicates == (0,)
    core.enqueue("q", [spec(job_id="b")], T0)
    b = take(core)[0]
    core.ack([AckItem("b", b.token)], T0)  # keeps 1 completed: "a" is pruned
    assert core.get("a") is None
    assert core.enqueue("q", [spec(job_id="a")], T0).duplicates == ()
    assert state(core, "a") is JobState.WAITING


def test_enqueue_delay_and_run_at() -> None:
    core = make()
    ids = list(core.enqueue("q", [
        spec(delay_ms=500), spec(run_at_ms=T0 + 100, delay_ms=10_000), spec(run_at_ms=T0 - 5),
    ], T0).ids)
    assert [state(core, i) for i in ids] == [JobState.DELAYED, JobState.DELAYED, JobState.WAITING]
    info = core.get(ids[1])
    assert info is not None and info.run_at == T0 + 100  # run_at_ms wins over delay_ms
    assert core.next_deadline() == T0 + 100
    core.tick(T0 + 100)
    assert state(core, ids[1]) is JobState.WAITING
    assert state(core, ids[0]) is JobState.DELAYED
    core.tick(T0 + 500)
    assert state(core, ids[0]) is JobState.WAITING


def test_enqueue_payload_too_large_creates_nothing() -> None:
    core = make(max_payload=10)
    with pytest.raises(CoreError) as caught:
        core.enqueue("q", [spec(payload=b"x" * 10), spec(payload=b"x" * 11)], T0)
    assert caught.value.code is ErrorCode.PAYLOAD_TOO_LARGE
    assert core.get("1") is None
    assert core.stats("q", T0)["q"].waiting == 0
    assert not core.take_changes()


def test_queue_full_per_queue_counts_unfinished_only() -> None:
    core = make(max_queue_jobs=3)
    put(core, count=2)
    with pytest.raises(CoreError) as caught:
        put(core, count=2)
    assert caught.value.code is ErrorCode.QUEUE_FULL
    assert core.stats("q", T0)["q"].waiting == 2
    put(core, "other", count=3)  # another queue has its own room
    job = take(core)[0]
    core.ack([AckItem(job.job_id, job.token)], T0)  # completed jobs do not count
    put(core, count=2)
    assert core.stats("q", T0)["q"].waiting == 3


def test_queue_full_total_and_duplicates_do_not_count() -> None:
    core = make(max_total_jobs=2)
    core.enqueue("a", [spec(job_id="x")], T0)
    core.enqueue("b", [spec(job_id="x"), spec()], T0)  # the duplicate takes no room
    with pytest.raises(CoreError) as caught:
        core.enqueue("c", [spec()], T0)
    assert caught.value.code is ErrorCode.QUEUE_FULL


# --------------------------------------------------------------------------- reserve


def test_reserve_priority_then_fifo() -> None:
    core = make()
    core.enqueue("q", [spec(job_id="low1", priority=5), spec(job_id="hi1", priority=-1),
                       spec(job_id="mid", priority=0), spec(job_id="hi2", priority=-1),
                       spec(job_id="low2", priority=5)], T0)
    got = [job.job_id for job in take(core, n=10)]
    assert got == ["hi1", "hi2", "mid", "low1", "low2"]


def test_reserve_fields_and_lease() -> None:
    core = make(default_lease_ms=1_000)
    core.enqueue("q", [spec(job_id="a", payload=b"data", max_attempts=7)], T0)
    job = take(core, now=T0 + 5)[0]
    assert (job.job_id, job.queue, job.name, job.payload) == ("a", "q", "task", b"data")
    assert (job.attempt, job.max_attempts, job.lease_ms) == (1, 7, 1_000)
    assert job.lease_deadline_ms == T0 + 1_005 and job.created_at_ms == T0
    info = core.get("a")
    assert info is not None and info.state is JobState.ACTIVE
    assert info.started_at == T0 + 5 and info.lease_deadline == T0 + 1_005
    assert core.next_deadline() == T0 + 1_005


def test_lease_length_job_option_wins_over_request_and_default() -> None:
    core = make(default_lease_ms=1_000)
    core.enqueue("q", [spec(job_id="own", lease_ms=300), spec(job_id="plain")], T0)
    jobs = take(core, n=2, lease_ms=5_000)
    assert [job.lease_ms for job in jobs] == [300, 5_000]


def test_reserve_tokens_are_unique_and_based() -> None:
    core = Core(CoreConfig(), rng=random.Random(0), token_base=1_000)
    put(core, count=3)
    tokens = [job.token for job in take(core, n=3)]
    assert len(set(tokens)) == 3 and min(tokens) > 1_000


def test_reserve_queue_order_and_max() -> None:
    core = make()
    put(core, "a", count=2)
    put(core, "b", count=2)
    got = take(core, ("b", "a", "missing"), n=3)
    assert [job.queue for job in got] == ["b", "b", "a"]
    assert take(core, ("b",)) == []


def test_paused_queue_gives_nothing_and_resume_wakes() -> None:
    core = make()
    core.pause("q", T0)
    put(core, count=2)
    assert core.take_ready() == set()
    assert take(core) == []
    assert core.stats("q", T0)["q"].paused
    core.resume("q", T0)
    assert core.take_ready() == {"q"}
    assert len(take(core, n=5)) == 2
    changes = core.take_changes()
    assert changes.queues["q"] == QueueMeta("q", paused=False)


# --------------------------------------------------------------------------- ack / fail / extend


def test_ack_completes_and_records_result() -> None:
    core = make()
    put(core)
    job = take(core)[0]
    core.take_finished()
    out = core.ack([AckItem(job.job_id, job.token, b"result")], T0 + 10)
    assert [(o.code, o.value) for o in out] == [("OK", "completed")]
    info = core.get(job.job_id)
    assert info is not None
    assert (info.state, info.result, info.finished_at, info.lease_deadline) == (
        JobState.COMPLETED, b"result", T0 + 10, None)
    assert core.take_finished() == {job.job_id}
    stats = core.stats("q", T0)["q"]
    assert (stats.active, stats.completed, stats.total_completed) == (0, 1, 1)


def test_ack_errors_change_nothing() -> None:
    core = make(max_payload=4)
    put(core, count=2)
    a, b = take(core, n=2)
    core.take_changes()
    out = core.ack([
        AckItem("nope", 1), AckItem(a.job_id, a.token + 1000), AckItem(b.job_id, b.token, b"12345"),
    ], T0)
    assert [o.code for o in out] == ["NOT_FOUND", "STALE_LEASE", "PAYLOAD_TOO_LARGE"]
    assert not out[0].ok
    assert state(core, a.job_id) is JobState.ACTIVE and state(core, b.job_id) is JobState.ACTIVE
    assert not core.take_changes()


def test_ack_twice_is_stale() -> None:
    core = make()
    put(core)
    job = take(core)[0]
    core.ack([AckItem(job.job_id, job.token)], T0)
    assert core.ack([AckItem(job.job_id, job.token)], T0)[0].code == "STALE_LEASE"


def test_fail_retries_with_exponential_backoff_then_fails() -> None:
    core = make(default_backoff=Backoff(BackoffKind.EXPONENTIAL, 100, None))
    put(core, max_attempts=3)
    now = T0
    for attempt, wait in ((1, 100), (2, 200)):
        job = take(core, now=now)[0]
        assert job.attempt == attempt
        out = core.fail([FailItem(job.job_id, job.token, f"boom {attempt}")], now)
        assert out[0].value == "delayed"
        info = core.get(job.job_id)
        assert info is not None and info.run_at == now + wait and info.error == f"boom {attempt}"
        assert take(core, now=now + wait - 1) == []
        now += wait
    job = take(core, now=now)[0]
    assert job.attempt == 3
    assert core.fail([FailItem(job.job_id, job.token, "last")], now)[0].value == "failed"
    info = core.get(job.job_id)
    assert info is not None and info.state is JobState.FAILED and info.finished_at == now
    assert core.stats("q", now)["q"].total_failed == 1
    assert job.job_id in core.take_finished()


def test_fail_fixed_backoff_and_per_job_override() -> None:
    core = make()
    put(core, job_id="j", backoff=Backoff(BackoffKind.FIXED, 250, None), max_attempts=5)
    for i in range(3):
        now = T0 + i * 250
        job = take(core, now=now)[0]
        core.fail([FailItem("j", job.token, "x")], now)
        info = core.get("j")
        assert info is not None and info.run_at == now + 250


def test_fail_without_retry_and_with_explicit_delay() -> None:
    core = make()
    put(core, count=3, max_attempts=10)
    a, b, c = take(core, n=3)
    out = core.fail([
        FailItem(a.job_id, a.token, "fatal", retry=False),
        FailItem(b.job_id, b.token, "later", delay_ms=42),
        FailItem(c.job_id, c.token, "now", delay_ms=0),
    ], T0)
    assert [o.value for o in out] == ["failed", "delayed", "waiting"]
    info = core.get(b.job_id)
    assert info is not None and info.run_at == T0 + 42
    assert core.take_ready() == {"q"}
    assert take(core)[0].job_id == c.job_id


def test_fail_errors() -> None:
    core = make()
    put(core)
    job = take(core)[0]
    out = core.fail([FailItem("x", 1, "e"), FailItem(job.job_id, 5, "e")], T0)
    assert [o.code for o in out] == ["NOT_FOUND", "STALE_LEASE"]
    assert state(core, job.job_id) is JobState.ACTIVE


def test_extend_moves_deadline_and_keeps_lease_alive() -> None:
    core = make(default_lease_ms=1_000)
    put(core)
    job = take(core)[0]
    out = core.extend([ExtendItem(job.job_id, job.token, 5_000)], T0 + 900)
    assert out[0].ok and out[0].value == T0 + 5_900
    core.tick(T0 + 1_000)
    assert state(core, job.job_id) is JobState.ACTIVE
    out = core.extend([ExtendItem(job.job_id, job.token)], T0 + 2_000)  # default length
    assert out[0].value == T0 + 3_000
    core.tick(T0 + 5_900)  # the first extension's time no longer applies
    info = core.get(job.job_id)
    assert info is not None and info.state is JobState.DELAYED and info.error == "lease expired"


def test_extend_shorter_lease_expires_at_the_new_deadline() -> None:
    core = make(default_lease_ms=10_000)
    put(core)
    job = take(core)[0]
    core.extend([ExtendItem(job.job_id, job.token, 100)], T0)
    assert core.next_deadline() == T0 + 100
    core.tick(T0 + 100)
    assert state(core, job.job_id) is JobState.DELAYED


def test_extend_errors() -> None:
    core = make()
    put(core)
    job = take(core)[0]
    core.ack([AckItem(job.job_id, job.token)], T0)
    out = core.extend([ExtendItem("x", 1), ExtendItem(job.job_id, job.token)], T0)
    assert [o.code for o in out] == ["NOT_FOUND", "STALE_LEASE"]


def test_release_hands_back_without_counting_the_attempt() -> None:
    core = make()
    put(core, job_id="last", max_attempts=1)
    put(core, job_id="other")
    job = take(core, owner=7)[0]
    core.progress("last", job.token, {"pct": 30}, T0)
    core.take_ready()
    core.take_changes()
    out = core.release([ReleaseItem("last", job.token)], T0 + 5)
    assert out == [("OK", "waiting")]
    info = core.get("last")
    assert info is not None
    assert (info.state, info.attempts, info.progress, info.error) == (
        JobState.WAITING, 0, {"pct": 30}, None)
    assert (info.run_at, info.started_at, info.lease_deadline) == (T0 + 5, T0, None)
    assert core.take_ready() == {"q"}
    assert "last" in core.take_changes().jobs
    assert core.ack([AckItem("last", job.token)], T0 + 5)[0].code == "STALE_LEASE"
    assert core.release_owner(7, T0 + 5) == 0  # the connection no longer holds it
    check_counts(core, T0 + 5)
    # It went to the back of its priority, and runs again as attempt 1 of 1.
    assert [j.job_id for j in take(core, n=2, now=T0 + 6)] == ["other", "last"]
    again = core.get("last")
    assert again is not None and again.attempts == 1
    check_counts(core, T0 + 6)


def test_release_with_a_delay_and_errors() -> None:
    core = make()
    put(core, count=2)
    a, b = take(core, n=2)
    out = core.release([
        ReleaseItem(a.job_id, a.token, 500),
        ReleaseItem("nope", 1),
        ReleaseItem(b.job_id, b.token + 1, 0),
    ], T0)
    assert out[0] == ("OK", "delayed")
    assert [o.code for o in out[1:]] == ["NOT_FOUND", "STALE_LEASE"]
    info = core.get(a.job_id)
    assert info is not None and (info.state, info.attempts, info.run_at) == (
        JobState.DELAYED, 0, T0 + 500)
    assert state(core, b.job_id) is JobState.ACTIVE
    assert core.release([ReleaseItem(a.job_id, a.token)], T0)[0].code == "STALE_LEASE"
    assert core.next_deadline() == T0 + 500
    assert take(core, now=T0 + 499) == []
    assert take(core, now=T0 + 500)[0].job_id == a.job_id
    check_counts(core, T0 + 500)


def test_progress_records_value_and_checks_lease_and_size() -> None:
    core = make(max_payload=64)
    put(core)
    job = take(core)[0]
    core.progress(job.job_id, job.token, {"done": 3, "of": [1, 2]}, T0)
    info = core.get(job.job_id)
    assert info is not None and info.progress == {"done": 3, "of": [1, 2]}
    cases: tuple[tuple[str, int, Any, ErrorCode], ...] = (
        ("nope", 1, 1, ErrorCode.NOT_FOUND),
        (job.job_id, job.token + 1, 1, ErrorCode.STALE_LEASE),
        (job.job_id, job.token, "x" * 100, ErrorCode.PAYLOAD_TOO_LARGE),
    )
    for job_id, token, value, code in cases:
        with pytest.raises(CoreError) as caught:
            core.progress(job_id, token, value, T0)
        assert caught.value.code is code
    info = core.get(job.job_id)
    assert info is not None and info.progress == {"done": 3, "of": [1, 2]}


def test_progress_is_delivered_on_redelivery() -> None:
    core = make(default_backoff=NO_BACKOFF)
    put(core)
    job = take(core)[0]
    core.progress(job.job_id, job.token, 50, T0)
    core.fail([FailItem(job.job_id, job.token, "x")], T0)
    assert take(core)[0].progress == 50


# --------------------------------------------------------------------------- leases and owners


def test_lease_expiry_counts_an_attempt_and_old_token_is_stale() -> None:
    core = make(default_lease_ms=1_000, default_backoff=NO_BACKOFF)
    put(core, max_attempts=2)
    first = take(core, owner=1)[0]
    core.tick(T0 + 999)
    assert state(core, first.job_id) is JobState.ACTIVE
    core.tick(T0 + 1_000)
    assert state(core, first.job_id) is JobState.WAITING
    assert core.take_ready() == {"q"}
    second = take(core, owner=2, now=T0 + 1_000)[0]
    assert second.attempt == 2
    assert core.ack([AckItem(first.job_id, first.token)], T0)[0].code == "STALE_LEASE"
    core.tick(T0 + 2_000)
    info = core.get(first.job_id)
    assert info is not None and info.state is JobState.FAILED and info.error == "lease expired"


def test_release_owner_fails_only_that_connections_jobs() -> None:
    core = make(default_backoff=Backoff(BackoffKind.FIXED, 500, None))
    put(core, count=3)
    mine = take(core, n=2, owner=7)
    theirs = take(core, owner=8)
    assert core.release_owner(7, T0 + 1) == 2
    assert core.release_owner(7, T0 + 1) == 0
    for job in mine:
        info = core.get(job.job_id)
        assert info is not None and info.state is JobState.DELAYED
        assert info.error == "worker connection lost" and info.run_at == T0 + 501
    assert state(core, theirs[0].job_id) is JobState.ACTIVE
    assert core.ack([AckItem(mine[0].job_id, mine[0].token)], T0)[0].code == "STALE_LEASE"
    core.ack([AckItem(theirs[0].job_id, theirs[0].token)], T0)
    assert core.release_owner(8, T0) == 0


# --------------------------------------------------------------------------- cancel


@pytest.mark.parametrize("target", ["waiting", "delayed", "active", "completed", "failed"])
def test_cancel_in_every_state(target: str) -> None:
    core = make()
    if target == "delayed":
        (job_id,) = put(core, delay_ms=1_000)
    else:
        (job_id,) = put(core)
    if target in ("active", "completed", "failed"):
        job = take(core)[0]
        if target == "completed":
            core.ack([AckItem(job_id, job.token)], T0)
        elif target == "failed":
            core.fail([FailItem(job_id, job.token, "x", retry=False)], T0)
    core.take_finished()
    core.take_changes()
    assert core.cancel(job_id, T0) == JobState(target)
    assert core.get(job_id) is None
    assert core.take_finished() == {job_id}
    assert core.take_changes().jobs == {job_id: None}
    check_counts(core)
    assert take(core) == []
    core.tick(T0 + 10**9)
    check_counts(core)


def test_cancel_active_revokes_lease() -> None:
    core = make()
    put(core)
    job = take(core)[0]
    core.cancel(job.job_id, T0)
    assert core.ack([AckItem(job.job_id, job.token)], T0)[0].code == "NOT_FOUND"
    assert core.release_owner(1, T0) == 0


def test_cancel_missing() -> None:
    with pytest.raises(CoreError) as caught:
        make().cancel("nope", T0)
    assert caught.value.code is ErrorCode.NOT_FOUND


def test_cancelled_waiting_jobs_are_skipped_and_compacted() -> None:
    core = make()
    ids = put(core, count=3000)
    for job_id in ids[:2500]:
        core.cancel(job_id, T0)
    got = take(core, n=1000)
    assert [job.job_id for job in got] == ids[2500:]


# --------------------------------------------------------------------------- retention


def test_retention_by_count_prunes_oldest() -> None:
    core = make(keep_completed=Retention(2, None))
    ids = put(core, count=4)
    for job in take(core, n=4):
        core.ack([AckItem(job.job_id, job.token)], T0)
    assert [core.get(i) is not None for i in ids] == [False, False, True, True]
    assert core.stats("q", T0)["q"].completed == 2
    assert core.stats("q", T0)["q"].total_completed == 4


def test_retention_by_age_in_tick() -> None:
    core = make(keep_failed=Retention(None, 1_000))
    put(core, count=2)
    a, b = take(core, n=2)
    core.fail([FailItem(a.job_id, a.token, "x", retry=False)], T0)
    core.fail([FailItem(b.job_id, b.token, "x", retry=False)], T0 + 500)
    assert core.next_deadline() == T0 + 1_000
    core.tick(T0 + 999)
    assert core.get(a.job_id) is not None
    core.take_finished()
    core.tick(T0 + 1_000)
    assert core.get(a.job_id) is None and core.get(b.job_id) is not None
    assert core.take_finished() == {a.job_id}
    core.tick(T0 + 1_500)
    assert core.get(b.job_id) is None
    assert core.next_deadline() is None


def test_remove_at_once_and_per_job_override() -> None:
    core = make(keep_completed=Retention(0, None))
    put(core, job_id="gone")
    put(core, job_id="kept", keep_completed=KEEP_ALL)
    for job in take(core, n=2):
        core.ack([AckItem(job.job_id, job.token)], T0)
    assert core.get("gone") is None
    assert state(core, "kept") is JobState.COMPLETED
    stats = core.stats("q", T0)["q"]
    assert (stats.completed, stats.total_completed) == (1, 2)


def test_per_job_count_override_applies_from_the_oldest_end() -> None:
    core = make(keep_completed=KEEP_ALL)
    put(core, count=3)
    put(core, job_id="tight", keep_completed=Retention(1, None))
    for job in take(core, n=4):
        core.ack([AckItem(job.job_id, job.token)], T0)
    # The older jobs keep everything (their own retention), so "tight" is not pruned yet.
    assert core.stats("q", T0)["q"].completed == 4
    check_counts(core)


# --------------------------------------------------------------------------- admin


def failed_jobs(core: Core, count: int, queue: str = "q") -> list[str]:
    ids = put(core, queue, count=count)
    for job in take(core, (queue,), n=count):
        core.fail([FailItem(job.job_id, job.token, "bad", retry=False)], T0)
    return ids


def test_list_failed_newest_first_with_paging() -> None:
    core = make()
    ids = failed_jobs(core, 5)
    jobs, total = core.list_failed("q", 2, 1)
    assert total == 5
    assert [job.id for job in jobs] == [ids[3], ids[2]]
    assert jobs[0].error == "bad" and jobs[0].state is JobState.FAILED
    assert core.list_failed("nope", 10, 0) == ([], 0)


def test_retry_failed_all_with_limit() -> None:
    core = make()
    ids = failed_jobs(core, 3)
    core.take_ready()
    assert core.retry_failed("q", None, 2, T0 + 5) == (2, [])
    assert core.take_ready() == {"q"}
    info = core.get(ids[0])
    assert info is not None
    assert (info.state, info.attempts, info.run_at, info.finished_at) == (
        JobState.WAITING, 0, T0 + 5, None)
    assert state(core, ids[2]) is JobState.FAILED
    got = take(core, n=5)
    assert [job.job_id for job in got] == ids[:2] and got[0].attempt == 1
    check_counts(core)


def test_retry_failed_by_ids_reports_the_others() -> None:
    core = make()
    ids = failed_jobs(core, 2)
    put(core, job_id="w")
    other = failed_jobs(core, 1, "other")
    retried, not_failed = core.retry_failed("q", [ids[1], "w", "missing", other[0], ids[1]], None,
                                            T0)
    assert retried == 1
    assert not_failed == ["w", "missing", other[0]]
    assert core.list_failed("q", 10, 0)[1] == 1
    # fails again: listed once
    job = take(core, n=5)
    target = next(j for j in job if j.job_id == ids[1])
    core.fail([FailItem(ids[1], target.token, "again", retry=False)], T0)
    listed, total = core.list_failed("q", 10, 0)
    assert [j.id for j in listed] == [ids[1], ids[0]] and total == 2


def test_clean_finished_by_age_and_limit() -> None:
    core = make()
    ids = put(core, count=4)
    for i, job in enumerate(take(core, n=4)):
        core.ack([AckItem(job.job_id, job.token)], T0 + i * 100)
    assert core.clean("q", JobState.COMPLETED, 150, None, T0 + 300) == 2  # finished <= T0+150
    assert [core.get(i) is not None for i in ids] == [False, False, True, True]
    assert core.clean("q", JobState.COMPLETED, 0, 1, T0 + 300) == 1
    assert core.stats("q", T0)["q"].completed == 1
    check_counts(core)


def test_clean_waiting_and_delayed() -> None:
    core = make()
    old = put(core, count=3, now=T0)
    later = put(core, count=2, now=T0, delay_ms=10_000)
    new = put(core, count=2, now=T0 + 1_000)
    assert core.clean("q", JobState.WAITING, 500, 2, T0 + 1_000) == 2
    assert [core.get(i) is None for i in old] == [True, True, False]
    assert core.clean("q", JobState.DELAYED, 0, None, T0 + 1_000) == 2
    assert all(core.get(i) is None for i in later)
    assert [job.job_id for job in take(core, n=10, now=T0 + 1_000)] == [old[2], *new]
    check_counts(core)


def test_clean_waiting_takes_creation_order_across_priorities_and_retries() -> None:
    core = make(default_backoff=NO_BACKOFF)
    first = put(core)[0]
    later = put(core, count=2, now=T0 + 1, priority=-1)
    job = take(core, n=1, now=T0 + 2)[0]  # the lowest priority first: later[0]
    assert job.job_id == later[0]
    core.fail([FailItem(job.job_id, job.token, "again", True, 0)], T0 + 3)  # waiting again, last
    delayed = put(core, now=T0 + 4, delay_ms=1)[0]
    core.tick(T0 + 10)  # `delayed` becomes waiting: late, through the same path as a retry
    assert core.clean("q", JobState.WAITING, 0, 2, T0 + 10) == 2
    assert state(core, first) is None and state(core, later[0]) is None
    assert state(core, later[1]) is JobState.WAITING and state(core, delayed) is JobState.WAITING
    check_counts(core, T0 + 10)


def test_clean_rejects_active_and_unknown_queue() -> None:
    core = make()
    with pytest.raises(CoreError) as caught:
        core.clean("q", JobState.ACTIVE, 0, None, T0)
    assert caught.value.code is ErrorCode.BAD_ARGUMENT
    assert core.clean("nope", JobState.WAITING, 0, None, T0) == 0


def test_stats_counts_and_oldest_waiting() -> None:
    core = make()
    put(core, count=2, now=T0)
    put(core, count=1, now=T0 + 50, priority=-3)
    put(core, now=T0, delay_ms=100)
    take(core, now=T0 + 100)  # takes the priority -3 job; promotes the delayed one
    stats = core.stats("q", T0 + 200)["q"]
    assert (stats.waiting, stats.delayed, stats.active) == (3, 0, 1)
    assert stats.oldest_waiting_ms == 200
    assert core.stats("none", T0)["none"].waiting == 0
    assert set(core.stats(None, T0)) == {"q"}
    assert make().stats(None, T0) == {}


# --------------------------------------------------------------------------- changes, restore


def test_take_changes_tracks_jobs_and_queues() -> None:
    core = make()
    assert not core.take_changes()
    (job_id,) = put(core)
    changes = core.take_changes()
    assert isinstance(changes, Changes)
    assert set(changes.jobs) == {job_id} and set(changes.queues) == {"q"}
    assert changes.next_seq == 2
    assert not core.take_changes()


def snapshot_of(core: Core, next_seq: int = 0) -> Snapshot:
    metas = [QueueMeta(s_name, s.paused, s.total_completed, s.total_failed)
             for s_name, s in core.stats(None, T0).items()]
    return Snapshot([job.clone() for job in core.iter_jobs()], metas, next_seq)


def test_restore_rebuilds_and_fails_active_attempts() -> None:
    core = make(default_backoff=Backoff(BackoffKind.FIXED, 1_000, None))
    put(core, job_id="w1", priority=1)
    put(core, job_id="w0", priority=0, now=T0 + 1)
    put(core, job_id="d", delay_ms=5_000)
    put(core, job_id="a")
    put(core, job_id="last", max_attempts=1)
    active = take(core, n=2, now=T0 + 2)
    assert [j.job_id for j in active] == ["w0", "a"]
    core.pause("q", T0)
    put(core, "other", job_id="done")
    done = take(core, ("other",))[0]
    core.ack([AckItem("done", done.token, b"r")], T0)
    snapshot = snapshot_of(core, next_seq=100)
    restored = Core.restore(core.config, snapshot, T0 + 10, rng=random.Random(0), token_base=7)
    info = restored.get("w0")
    assert info is not None and info.state is JobState.DELAYED
    assert info.error == "broker restarted during the attempt" and info.run_at == T0 + 1_010
    assert state(restored, "done") is JobState.COMPLETED
    assert restored.stats("other", T0)["other"].total_completed == 1
    assert restored.stats("q", T0)["q"].paused
    check_counts(restored)
    changes = restored.take_changes()
    assert {"w0", "a"} <= set(changes.jobs)
    assert restored.enqueue("q", [spec()], T0 + 10).ids == ("100",)
    restored.resume("q", T0 + 10)
    got = restored.reserve(["q"], 10, None, 1, T0 + 10)
    assert [j.job_id for j in got] == ["last", "100", "w1"]
    assert restored.ack([AckItem("a", active[1].token)], T0)[0].code == "STALE_LEASE"


def test_restore_active_with_no_attempts_left_fails() -> None:
    core = make()
    put(core, job_id="x", max_attempts=1)
    take(core)
    restored = Core.restore(core.config, snapshot_of(core), T0, rng=random.Random(0),
                            token_base=0)
    assert state(restored, "x") is JobState.FAILED
    assert restored.stats("q", T0)["q"].total_failed == 1


def test_restore_applies_retention_and_next_seq_floor() -> None:
    core = make(keep_completed=Retention(5, None))
    put(core, count=5)
    for job in take(core, n=5):
        core.ack([AckItem(job.job_id, job.token)], T0)
    config = CoreConfig(keep_completed=Retention(2, None))
    restored = Core.restore(config, snapshot_of(core), T0, rng=random.Random(0), token_base=0)
    assert restored.stats("q", T0)["q"].completed == 2
    assert sum(1 for v in restored.take_changes().jobs.values() if v is None) == 3
    assert restored.enqueue("q", [spec()], T0).ids == ("6",)


# --------------------------------------------------------------------------- invariants


def test_job_transitions_table_covers_core_moves() -> None:
    """Every state change the core makes, hot paths included (they assign ``state`` directly
    instead of calling ``Job.move_to``), is one ``TRANSITIONS`` allows."""
    core = make(default_backoff=Backoff(BackoffKind.FIXED, 10, None))
    seen: set[tuple[JobState, JobState]] = set()
    before: dict[str, JobState] = {}

    def step() -> None:
        for job in core.iter_jobs():
            old = before.get(job.id)
            if old is not None and old is not job.state:
                # reserve promotes a due delayed job and leases it in one call (via WAITING)
                via = TRANSITIONS[JobState.WAITING] if old is JobState.DELAYED else frozenset()
                assert job.state in TRANSITIONS[old] | via, (job.id, old, job.state)
                seen.add((old, job.state))
            before[job.id] = job.state

    done, retried, last = put(core, count=3, max_attempts=2)
    [due] = put(core, queue="later", delay_ms=10)
    step()
    jobs = {j.job_id: j for j in take(core, n=3)}  # waiting -> active
    step()
    core.ack([AckItem(done, jobs[done].token)], T0)  # active -> completed
    core.fail([FailItem(retried, jobs[retried].token, "x")], T0)  # active -> delayed
    core.fail([FailItem(last, jobs[last].token, "x")], T0)
    step()
    again = {j.job_id: j for j in take(core, n=2, now=T0 + 10)}  # delayed -> active when due
    step()
    core.ack([AckItem(retried, again[retried].token)], T0 + 10)
    core.fail([FailItem(last, again[last].token, "x")], T0 + 10)  # last attempt: -> failed
    step()
    assert take(core, ("later",), now=T0 + 10)[0].job_id == due  # delayed -> active
    step()
    assert {(JobState.WAITING, JobState.ACTIVE), (JobState.ACTIVE, JobState.COMPLETED),
            (JobState.ACTIVE, JobState.DELAYED), (JobState.DELAYED, JobState.ACTIVE),
            (JobState.ACTIVE, JobState.FAILED)} <= seen, seen


def test_lease_heap_stays_bounded_under_churn() -> None:
    core = make()
    for round_ in range(50):
        put(core, count=100, now=T0 + round_)
        jobs = take(core, n=100, now=T0 + round_)
        core.ack([AckItem(j.job_id, j.token) for j in jobs], T0 + round_)
    assert len(core._state.leases) <= 2 * 1024 + 100


def test_next_deadline_none_when_idle() -> None:
    core = make(keep_completed=Retention(10, None))
    assert core.next_deadline() is None
    put(core)
    assert core.next_deadline() is None


def test_same_calls_same_results_with_jitter() -> None:
    """Determinism: two cores fed the same calls (and seeds) agree on every output."""

    def run() -> list[Any]:
        core = Core(CoreConfig(default_backoff=Backoff(BackoffKind.EXPONENTIAL, 100, None, 0.5),
                               default_lease_ms=500),
                    rng=random.Random(99), token_base=5)
        script = random.Random(7)
        log: list[Any] = []
        now = T0
        for _ in range(300):
            now += script.choice((0, 10, 200, 700))
            op = script.randrange(5)
            if op == 0:
                log.append(core.enqueue(script.choice("ab"), [
                    spec(priority=script.randrange(3)) for _ in range(script.randrange(1, 4))
                ], now))
            elif op == 1:
                log.append(core.reserve(["a", "b"], script.randrange(1, 4), None,
                                        script.randrange(3), now))
            elif op == 2:
                held = [j for j in core.iter_jobs() if j.state is JobState.ACTIVE]
                held.sort(key=lambda j: j.seq)
                log.append(core.fail([FailItem(j.id, j.lease_token or 0, "x") for j in held[:2]],
                                     now))
            elif op == 3:
                core.tick(now)
                log.append(core.next_deadline())
            else:
                log.append(core.release_owner(script.randrange(3), now))
            changes = core.take_changes()
            log.append((list(changes.jobs), sorted(core.take_ready()),
                        sorted(core.take_finished())))
        log.append([core.get(j.id) for j in sorted(core.iter_jobs(), key=lambda j: j.seq)])
        return log

    assert run() == run()


def test_duplicates_only_pass_even_over_the_limit() -> None:
    core = make()
    core.enqueue("q", [spec(job_id="a"), spec(job_id="b")], T0)
    lower = CoreConfig(max_queue_jobs=1)  # restarted with a lower limit than it holds
    restored = Core.restore(lower, snapshot_of(core), T0, rng=random.Random(0), token_base=0)
    assert restored.enqueue("q", [spec(job_id="a")], T0).duplicates == (0,)
    with pytest.raises(CoreError) as caught:
        restored.enqueue("q", [spec(job_id="c")], T0)
    assert caught.value.code is ErrorCode.QUEUE_FULL


def test_core_config_defaults_are_the_broker_settings_defaults() -> None:
    # One source of default values: a core built with CoreConfig() acts like a broker with no flags.
    assert CoreConfig() == core_config(Settings())
    assert CoreConfig().default_lease_ms == round(Settings().default_lease * 1000)
