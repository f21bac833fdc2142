"""Job timeouts in the core (broker/timeouts.py): the attempt deadline, independent of the
lease, folded into the lease heap and ``next_deadline``; the wire field and its checks; the
stored options (older rows without the field); a late outcome after a timeout."""

from __future__ import annotations

import random

import pytest

from broker.core import Core, CoreConfig
from broker.events import PendingEvents
from broker.jobs import JobOptions
from broker.schema import decode_options, encode_options
from broker.timeouts import TIMEOUT_GRACE_MS
from protocol.checks import MAX_TIMEOUT_MS
from protocol.errors import ErrorCode, ProtocolError
from protocol.model import (
    AckItem,
    Backoff,
    BackoffKind,
    ExtendItem,
    JobSpec,
    JobState,
    job_to_wire,
    parse_job,
)
from protocol.observing import EventKind
from protocol.replies import parse_reserved

T0 = 1_700_000_000_000
NO_BACKOFF = Backoff(BackoffKind.FIXED, 0)


def make() -> Core:
    return Core(CoreConfig(), rng=random.Random(1), token_base=1 << 40)


def put(core: Core, timeout_ms: int | None, *, attempts: int = 3, lease_ms: int | None = None,
        backoff: Backoff | None = NO_BACKOFF, now: int = T0) -> str:
    spec = JobSpec(None, "task", b"p", max_attempts=attempts, backoff=backoff,
                   lease_ms=lease_ms, timeout_ms=timeout_ms)
    return core.enqueue("q", [spec], now).ids[0]


def test_the_broker_fails_an_attempt_at_its_timeout_plus_grace_while_the_lease_is_valid() -> None:
    core = make()
    job_id = put(core, 2_000, lease_ms=60_000)
    [job] = core.reserve(["q"], 1, None, 1, T0)
    assert job.timeout_ms == 2_000 and job.lease_deadline_ms == T0 + 60_000
    due = T0 + 2_000 + TIMEOUT_GRACE_MS
    assert core.next_deadline() == due  # the one server timer wakes for it
    core.tick(due - 1)
    assert core.get(job_id).state is JobState.ACTIVE  # type: ignore[union-attr]
    core.tick(due)
    info = core.get(job_id)
    assert info is not None and info.state is JobState.WAITING and info.attempts == 1
    assert info.error == "timed out after 2000 ms (job timeout; the worker did not report)"
    # The worker's late ack is refused as for an expired lease, and changes nothing.
    [late] = core.ack([AckItem(job_id, job.token, b"r")], due + 5)
    assert late.code == ErrorCode.STALE_LEASE.value
    [again] = core.reserve(["q"], 1, None, 1, due + 5)
    assert again.attempt == 2 and again.timeout_ms == 2_000


def test_extending_the_lease_does_not_extend_the_timeout() -> None:
    core = make()
    job_id = put(core, 5_000, lease_ms=1_000)
    [job] = core.reserve(["q"], 1, None, 1, T0)
    assert core.next_deadline() == T0 + 1_000  # the lease comes first
    now = T0
    while now < T0 + 5_000:  # a worker extending every 500 ms keeps the lease alive
        now += 500
        core.tick(now)
        [outcome] = core.extend([ExtendItem(job_id, job.token, 1_000)], now)
        assert outcome.ok, now
    core.tick(T0 + 5_000 + TIMEOUT_GRACE_MS - 1)
    assert core.get(job_id).state is JobState.ACTIVE  # type: ignore[union-attr]
    core.tick(T0 + 5_000 + TIMEOUT_GRACE_MS)
    info = core.get(job_id)
    assert info is not None and info.error is not None and info.error.startswith("timed out")


def test_a_lease_that_runs_out_before_the_timeout_is_a_lease_expiry() -> None:
    core = make()
    job_id = put(core, 10_000, lease_ms=1_000)
    core.reserve(["q"], 1, None, 1, T0)
    core.tick(T0 + 20_000)  # a late tick: both deadlines passed, the lease's first
    info = core.get(job_id)
    assert info is not None and info.error == "lease expired"


def test_a_timeout_on_the_last_attempt_fails_the_job_with_a_failed_event() -> None:
    core = make()
    events = PendingEvents()
    core.record_events(events)
    job_id = put(core, 100, attempts=1)
    core.reserve(["q"], 1, None, 1, T0)
    core.tick(T0 + 100 + TIMEOUT_GRACE_MS)
    info = core.get(job_id)
    assert info is not None and info.state is JobState.FAILED and info.attempts == 1
    assert core.list_failed("q", 10, 0)[0][0].id == job_id
    kinds = [event.kind for event in events.pending()]
    assert EventKind.FAILED in kinds and EventKind.LEASE_EXPIRED not in kinds


def test_an_acked_job_leaves_no_timer_and_jobs_without_a_timeout_are_untouched() -> None:
    core = make()
    with_timeout = put(core, 1_000)
    plain = put(core, None)
    got = core.reserve(["q"], 2, 30_000, 1, T0)
    assert [job.timeout_ms for job in got] == [1_000, None]
    core.ack([AckItem(with_timeout, got[0].token)], T0 + 10)
    assert core.next_deadline() == T0 + 30_000  # only the plain job's lease is left
    core.tick(T0 + 29_999)
    assert core.get(plain).state is JobState.ACTIVE  # type: ignore[union-attr]


def test_next_deadline_orders_timeouts_among_leases() -> None:
    core = make()
    put(core, None)
    put(core, 500)
    core.reserve(["q"], 2, 2_000, 1, T0)
    assert core.next_deadline() == T0 + 500 + TIMEOUT_GRACE_MS
    core.tick(T0 + 500 + TIMEOUT_GRACE_MS)
    assert core.next_deadline() == T0 + 2_000


@pytest.mark.parametrize("value", [0, -1, MAX_TIMEOUT_MS + 1, 1.5, "1000", True])
def test_bad_timeouts_are_refused_naming_the_field(value: object) -> None:
    with pytest.raises(ProtocolError) as caught:
        parse_job((None, "n", b"p", None, None, None, None, None, None, None, None, value), 3)
    assert caught.value.code is ErrorCode.BAD_ARGUMENT
    assert "jobs[3].timeout_ms" in str(caught.value)


def test_the_wire_forms() -> None:
    spec = JobSpec(None, "n", b"p", timeout_ms=1_500)
    wire = job_to_wire(spec)
    assert len(wire) == 12 and wire[11] == 1_500
    assert parse_job(tuple(wire), 0) == spec
    assert len(job_to_wire(JobSpec(None, "n", b"p", lease_ms=100))) == 9  # no timeout: as before
    # A reserve reply from a broker without the item reads as "no timeout".
    old = ("1", "q", "n", b"p", 1, 3, 7, 1_000, T0, T0, None)
    assert parse_reserved({"jobs": (old,)})[0].timeout_ms is None
    assert parse_reserved({"jobs": ((*old, 250, "later"),)})[0].timeout_ms == 250


def test_stored_options_keep_the_timeout_and_read_older_rows_as_none() -> None:
    options = JobOptions(lease_ms=5_000, timeout_ms=1_234)
    stored = encode_options(options)
    assert stored is not None and decode_options(stored) == options
    older = encode_options(JobOptions(lease_ms=5_000))  # the 4-item form of before
    assert older is not None and decode_options(older).timeout_ms is None
    assert encode_options(JobOptions(timeout_ms=None)) is None
