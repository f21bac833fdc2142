"""The batch fast paths (issue 17, round 2): ``parse_jobs`` gives ``PlainJobs`` for a batch of
plain jobs, the core enqueues it as a whole (``new_waiting``, ``seq_ids``), and the result is the
same as the general path's, job by job and field by field; ``parse_ack_items`` gives an
``AckBatch``, which acks as its ``AckItem`` s do."""

from __future__ import annotations

import random
from typing import Any

import pytest

from broker.core import Core, CoreConfig, CoreError
from broker.jobs import NO_OPTIONS, Job, new_waiting, seq_ids
from protocol.batches import BULK, AckBatch, PlainJobs, parse_ack_items, parse_jobs
from protocol.errors import ErrorCode, ProtocolError
from protocol.model import PLAIN_TAIL, AckItem, JobSpec, JobState

T0 = 1_700_000_000_000


def wire(*jobs: tuple[Any, ...]) -> tuple[tuple[Any, ...], ...]:
    return tuple(jobs)


def test_a_batch_of_plain_jobs_parses_as_plain_jobs_equal_to_its_job_specs() -> None:
    raws = wire((None, "a", b"1"), (None, "b", b""), (None, "", b"3" * 10), (None, "a", b"4"))
    jobs = parse_jobs(raws, "jobs")
    expected = tuple(JobSpec(None, name, payload) for _, name, payload in raws)
    assert type(jobs) is PlainJobs
    assert jobs.names == ("a", "b", "", "a") and jobs.payloads == (b"1", b"", b"3" * 10, b"4")
    assert jobs == expected and expected == jobs
    assert hash(jobs) == hash(expected)
    assert len(jobs) == 4 and list(jobs) == list(expected)
    assert jobs[1] == expected[1] and type(jobs[1]) is JobSpec and jobs[-1] == expected[-1]
    assert jobs[1:] == expected[1:] and type(jobs[1:]) is tuple
    assert jobs.index(expected[2]) == 2 and expected[0] in jobs
    assert repr(jobs) == repr(expected)
    assert jobs == parse_jobs(raws, "jobs") and jobs != expected[:2]


def test_a_small_batch_parses_as_a_tuple() -> None:
    raws = wire(*[(None, "a", b"1")] * (BULK - 1))
    jobs = parse_jobs(raws, "jobs")
    assert type(jobs) is tuple and jobs == (JobSpec(None, "a", b"1"),) * (BULK - 1)


PLAIN = (None, "a", b"1")


@pytest.mark.parametrize("raws", [
    wire(*[PLAIN] * BULK, ("id-1", "a", b"1")),  # an id
    wire(*[PLAIN] * BULK, (None, "a", b"1", 2)),  # a priority
    wire(*[(None, "a", b"1", 0)] * BULK),  # an explicit default: not the fast form
])
def test_a_batch_with_an_id_or_an_option_parses_as_a_tuple(raws: tuple[Any, ...]) -> None:
    jobs = parse_jobs(raws, "jobs")
    assert type(jobs) is tuple
    assert [job.job_id for job in jobs] == [raw[0] for raw in raws]


@pytest.mark.parametrize("raws, field", [
    (wire(*[PLAIN] * BULK, [None, "a", b"1"]), f"jobs[{BULK}]"),
    (wire(*[PLAIN] * BULK, (None, "a")), f"jobs[{BULK}]"),
    (wire(*[PLAIN] * BULK, (None, 5, b"1")), f"jobs[{BULK}].name"),
    (wire((None, "a", "1"), *[PLAIN] * BULK), "jobs[0].payload"),
    (wire(*[PLAIN] * BULK, (None, "x" * 201, b"1")), f"jobs[{BULK}].name"),
    (wire(*[PLAIN] * BULK, (b"id", "a", b"1")), f"jobs[{BULK}].id"),
])
def test_the_fast_path_leaves_every_error_to_the_per_job_checks(
    raws: tuple[Any, ...], field: str
) -> None:
    with pytest.raises(ProtocolError) as caught:
        parse_jobs(raws, "jobs")
    assert caught.value.code is ErrorCode.BAD_ARGUMENT and field in caught.value.message


SLOTS = Job.__slots__


def fields(job: Job) -> dict[str, Any]:
    return {name: getattr(job, name) for name in SLOTS}


def test_new_waiting_sets_every_field_as_the_constructor_does() -> None:
    made = new_waiting(7, ("7", "8"), "q", iter(("a", "b")), (b"x", b"y"), T0, 3)
    for job, (seq, job_id, name, payload) in zip(made, [(7, "7", "a", b"x"), (8, "8", "b", b"y")],
                                                  strict=True):
        expected = Job(seq, job_id, "q", name, payload, priority=0, run_at=T0, max_attempts=3,
                       options=NO_OPTIONS, state=JobState.WAITING, created_at=T0)
        assert type(job) is Job and fields(job) == fields(expected)


@pytest.mark.parametrize("start, end", [
    (1, 1), (1, 2), (1, 1001), (999, 1001), (998, 3003), (123_456, 124_999),
    (10**12 - 3, 10**12 + 2_500),
])
def test_seq_ids_are_the_decimal_seqs(start: int, end: int) -> None:
    assert seq_ids(start, end) == tuple(map(str, range(start, end)))


def test_seq_ids_random_ranges() -> None:
    rng = random.Random(17)
    for _ in range(300):
        start = rng.randrange(10**9)
        end = start + rng.randrange(2_500)
        assert seq_ids(start, end) == tuple(map(str, range(start, end)))


def core(**config: Any) -> Core:
    return Core(CoreConfig(**config), rng=random.Random(1), token_base=1 << 40)


def state(made: Core) -> list[dict[str, Any]]:
    """Every live job's fields, and the changes, in order (the core's own view)."""
    jobs = [fields(job) for job in made._state.jobs.values()]
    changes = made.take_changes()
    return [*jobs, {"changed": [(seq, fields(job) if job else None)
                                for seq, job in changes.jobs.items()],
                    "ready": sorted(made.take_ready())}]


@pytest.mark.parametrize("names", [("a",) * 5, ("a", "b", "a", "c", "b"), ("a", "b")])
def test_plain_jobs_enqueue_as_their_job_specs_do(names: tuple[str, ...]) -> None:
    """Batches of ``BULK`` jobs or more take the whole-batch path, smaller ones the other."""
    raws = tuple((None, name, bytes([i]) * i) for i, name in enumerate(names))
    fast, slow = core(), core()
    for made in (fast, slow):  # one job first: the batch's seqs do not start at 1
        made.enqueue("q", (JobSpec(None, "first", b""),), T0 - 1)
    plain = parse_jobs(raws, "jobs")
    assert (type(plain) is PlainJobs) is (len(names) >= BULK)
    specs = tuple(JobSpec(*raw, *PLAIN_TAIL) for raw in raws)
    got = fast.enqueue("q", plain, T0)
    assert got == slow.enqueue("q", specs, T0)
    assert got.ids == tuple(str(seq) for seq in range(2, 2 + len(names)))
    assert got.duplicates == ()
    assert state(fast) == state(slow)
    reserved = fast.reserve(("q",), 10, None, 1, T0)
    assert [job.job_id for job in reserved] == ["1", *got.ids]
    assert [job.name for job in reserved] == ["first", *names]
    interned = {id(job.name) for job in fast._state.jobs.values() if job.name == "a"}
    assert len(interned) == 1  # one string object per name


def test_plain_jobs_payload_too_large_names_the_first_and_creates_nothing() -> None:
    made = core(max_payload=4)
    plain = parse_jobs(wire((None, "a", b"1"), (None, "a", b"12345"), (None, "a", b"123456"),
                            *[PLAIN] * BULK), "jobs")
    assert type(plain) is PlainJobs
    with pytest.raises(CoreError) as caught:
        made.enqueue("q", plain, T0)
    assert caught.value.code is ErrorCode.PAYLOAD_TOO_LARGE
    assert caught.value.message == "jobs[1].payload: 5 bytes, limit 4"
    assert not made._state.jobs and not made.take_changes()


def test_plain_jobs_respect_the_queue_limit() -> None:
    made = core(max_queue_jobs=BULK - 1)
    plain = parse_jobs(wire(*[(None, "a", b"")] * BULK), "jobs")
    assert type(plain) is PlainJobs
    with pytest.raises(CoreError) as caught:
        made.enqueue("q", plain, T0)
    assert caught.value.code is ErrorCode.QUEUE_FULL and not made._state.jobs


@pytest.mark.parametrize("with_results", [False, True])
def test_an_ack_batch_equals_its_ack_items(with_results: bool) -> None:
    raws = tuple((str(i), 1 << 40 | i, *((b"r" if i % 2 else None,) if with_results else ()))
                 for i in range(1, BULK + 2))
    items = parse_ack_items(raws, "items")
    expected = tuple(AckItem(*raw) for raw in raws)
    assert type(items) is AckBatch and items == expected and hash(items) == hash(expected)
    assert list(items) == list(expected) and type(items[0]) is AckItem
    assert items[-1] == expected[-1] and items[1:3] == expected[1:3] and len(items) == BULK + 1
    assert list(items.columns()) == [tuple(item) for item in expected]


@pytest.mark.parametrize("bad, field", [
    (("1", -1), "items[2].token"),
    (("1", True), "items[2].token"),
    (("", 1), "items[2].id"),
    (("x" * 201, 1), "items[2].id"),
    ((5, 1), "items[2].id"),
    (("1", 1, "text"), "items[2].result"),
    (("1",), "items[2]"),
])
def test_an_ack_batch_leaves_every_error_to_the_per_item_checks(
    bad: tuple[Any, ...], field: str
) -> None:
    raws = (("a", 1), ("b", 2), bad, *[("c", 3)] * BULK)
    with pytest.raises(ProtocolError) as caught:
        parse_ack_items(raws, "items")
    assert caught.value.code is ErrorCode.BAD_ARGUMENT and field in caught.value.message


def test_mixed_lengths_and_small_batches_parse_as_tuples() -> None:
    mixed = parse_ack_items((("a", 1), ("b", 2, b"r"), *[("c", 3)] * BULK), "items")
    assert type(mixed) is tuple and mixed[1] == AckItem("b", 2, b"r")
    small = parse_ack_items((("a", 1),) * (BULK - 1), "items")
    assert type(small) is tuple and small == (AckItem("a", 1),) * (BULK - 1)


def test_an_ack_batch_acks_as_its_items_do() -> None:
    outcomes = []
    for parsed in (True, False):
        made = core()
        made.enqueue("q", (JobSpec(None, "a", b""),) * 6, T0)
        reserved = made.reserve(("q",), 5, None, 1, T0)
        raws = (*[(job.job_id, job.token, b"r") for job in reserved], ("nope", 1, None),
                (reserved[0].job_id, reserved[0].token, None))  # acked twice: stale
        items = parse_ack_items(raws, "items") if parsed else tuple(AckItem(*raw) for raw in raws)
        assert (type(items) is AckBatch) is parsed
        outcomes.append((made.ack(items, T0 + 1), state(made)))
    assert outcomes[0] == outcomes[1]
    assert [outcome.code for outcome in outcomes[0][0]] == ["OK"] * 5 + ["NOT_FOUND",
                                                                         "STALE_LEASE"]
