"""``add_bulk``'s short path (``client/bulk.py``, ``JobHandle.enqueued``, ``jobs_to_wire`` by
columns) against the general one: the same requests, wire form and handles, the same errors."""

from __future__ import annotations

from typing import Any

import pytest

from client.bulk import plain_items, split_bulk
from client.endpoint import ServerInfo
from client.job import Job, JobHandle, JobRecord
from client.operations import QueueOperations
from client.options import FRAME_BUDGET, spec_size, split_batches
from client.serializers import MSGPACK, RAW, Serializer
from client.sync import SyncJob
from protocol.model import JobSpec, JobState, job_to_wire, jobs_to_wire
from protocol.operations import Enqueue

SENDER: Any = object()


def ops(serializer: Serializer = RAW, **defaults: Any) -> QueueOperations[Any]:
    return QueueOperations(Job, SENDER, "q", serializer, defaults)


def state_of(job: JobRecord) -> dict[str, Any]:
    """Every slot of a handle (``_data`` read through ``data``: a lazy decode may differ)."""
    slots = {name for cls in type(job).__mro__ for name in getattr(cls, "__slots__", ())}
    out = {name: getattr(job, name) for name in sorted(slots) if name != "_data"}
    out["data"] = job.data
    return out


def reply(ids: list[str], duplicates: tuple[int, ...] = ()) -> dict[str, Any]:
    return {"ids": tuple(ids), "duplicates": duplicates}


def bulk(queue: QueueOperations[Any], items: list[Any], server: ServerInfo | None = None,
         duplicates: tuple[int, ...] = ()) -> tuple[list[Enqueue], list[Any]]:
    """The requests of ``add_bulk(items)`` and its handles, the broker numbering jobs 1, 2..."""
    call = queue.add_bulk_call(items, server)
    bodies, seq = [], 1
    for request in call.requests:
        ids = [str(seq + i) for i in range(len(request.jobs))]
        seq += len(ids)
        bodies.append(reply(ids, duplicates if len(bodies) == 0 else ()))
    return list(call.requests), call.parse(bodies)


@pytest.mark.parametrize("job_type", [Job, SyncJob])
def test_enqueued_sets_every_slot_init_sets(job_type: type[JobHandle[Any]]) -> None:
    spec = JobSpec(None, "n", b"p", 3, None, 5_000, 4)
    made = job_type.enqueued(SENDER, "7", "q", RAW, spec, b"p", False)
    by_init = job_type(SENDER, "7", "q", "n", RAW, payload=b"p", data=b"p",
                       state=JobState.DELAYED, priority=3)
    by_init.max_attempts = 4
    assert type(made) is job_type and state_of(made) == state_of(by_init)
    duplicate = job_type.enqueued(SENDER, "7", "q", RAW, JobSpec(None, "n", b"p"), None, True)
    assert duplicate.state is None and duplicate.duplicate and duplicate.data is None
    plain = job_type.enqueued(SENDER, "8", "q", RAW, JobSpec(None, "n", b"p", delay_ms=0), b"",
                              False)
    assert plain.state is JobState.WAITING and plain.max_attempts is None


@pytest.mark.parametrize("serializer", [RAW, MSGPACK])
def test_plain_items_give_what_the_general_path_gives(serializer: Serializer) -> None:
    payloads: list[Any] = [b"a", b"bb", b"", bytes(300)]
    plain = [("n", p) for p in payloads] + [("other", b"c")]
    general = [list(item) for item in plain]  # two-item lists: bulk_item, build_spec per job
    assert plain_items(plain) and not plain_items(general)
    plain_requests, plain_jobs = bulk(ops(serializer), plain)
    general_requests, general_jobs = bulk(ops(serializer), general)
    assert plain_requests == general_requests
    assert jobs_to_wire(plain_requests[0].jobs) == [
        job_to_wire(spec) for spec in general_requests[0].jobs]
    assert [state_of(job) for job in plain_jobs] == [state_of(job) for job in general_jobs]
    assert [job.state for job in plain_jobs] == [JobState.WAITING] * 5


def test_plain_and_optioned_items_in_one_bulk() -> None:
    items: list[Any] = [("a", b"1"), ("b", b"2", {"priority": 3, "delay": 2}),
                        {"name": "c", "data": b"3", "opts": {"attempts": 2}}, ("d", b"4")]
    (request,), jobs = bulk(ops(), items)
    assert [spec.name for spec in request.jobs] == ["a", "b", "c", "d"]
    assert request.jobs[0] == JobSpec(None, "a", b"1") == bulk(ops(), [("a", b"1")])[0][0].jobs[0]
    assert request.jobs[1][3:5] == (3, 2_000) and request.jobs[2].max_attempts == 2
    assert [(j.id, j.state, j.priority, j.max_attempts) for j in jobs] == [
        ("1", JobState.WAITING, 0, None), ("2", JobState.DELAYED, 3, None),
        ("3", JobState.WAITING, 0, 2), ("4", JobState.WAITING, 0, None)]
    wire = jobs_to_wire(request.jobs)
    assert wire == [job_to_wire(spec) for spec in request.jobs] and wire[0] == (None, "a", b"1")


def test_queue_defaults_apply_to_plain_items() -> None:
    (request,), jobs = bulk(ops(attempts=5), [("a", b"1"), ("b", b"2")])
    assert [spec.max_attempts for spec in request.jobs] == [5, 5]
    assert [job.max_attempts for job in jobs] == [5, 5]


def test_bytes_like_payloads_become_bytes() -> None:
    items: list[Any] = [("n", bytearray(b"ab")), ("n", memoryview(b"cd")), ("n", b"ef")]
    (request,), jobs = bulk(ops(), items)
    assert [spec.payload for spec in request.jobs] == [b"ab", b"cd", b"ef"]
    assert {type(spec.payload) for spec in request.jobs} == {bytes}
    assert jobs[0].data == bytearray(b"ab")  # the caller's own object, as add() keeps it
    assert request.jobs[2].payload is items[2][1]  # exact bytes: not copied


def test_a_repeated_job_id_in_one_bulk_is_a_duplicate() -> None:
    items: list[Any] = [("a", b"1", {"job_id": "k"}), ("b", b"2"), ("a", b"3", {"job_id": "k"})]
    call = ops().add_bulk_call(items, None)
    assert [spec.job_id for spec in call.requests[0].jobs] == ["k", None, "k"]
    jobs = call.parse([reply(["k", "9", "k"], (2,))])
    assert [(j.id, j.duplicate, j.state) for j in jobs] == [
        ("k", False, JobState.WAITING), ("9", False, JobState.WAITING), ("k", True, None)]


def test_errors_are_those_of_the_general_path() -> None:
    with pytest.raises(TypeError, match="RawSerializer needs bytes"):
        ops().add_bulk_call([("n", b"ok"), ("n", "text")], None)
    with pytest.raises(TypeError, match="unknown job option"):
        ops().add_bulk_call([("n", b"ok"), ("n", b"", {"prio": 1})], None)
    with pytest.raises(TypeError, match="add_bulk items"):
        ops().add_bulk_call([("n", b"ok"), ("n", b"", {}, 4)], None)
    with pytest.raises(TypeError, match="has no len"):
        ops().add_bulk_call([(7, b"ok")], None)
    assert ops().add_bulk_call([], None).requests == []
    (request,), _ = bulk(ops(), iter([("n", b"x")]))  # type: ignore[arg-type]  # any iterable
    assert request.jobs == (JobSpec(None, "n", b"x"),)


@pytest.mark.parametrize("max_batch, count, payload", [
    (10, 10, 10), (10, 11, 10), (1000, 30, 40_000), (1000, 3, 2_000_000)])
def test_split_bulk_splits_as_split_batches_does(max_batch: int, count: int, payload: int) -> None:
    server = ServerInfo(1, "test", 0, 1 << 20, 1 << 20, max_batch, 10)
    specs = [JobSpec(None, "n", bytes(payload)) for _ in range(count)]
    size = sum(map(spec_size, specs))
    expected = split_batches(specs, max_batch, int(server.max_frame * FRAME_BUDGET))
    assert split_bulk(specs, size, server) == expected
    requests, jobs = bulk(ops(), [("n", bytes(payload))] * count, server)
    assert [len(r.jobs) for r in requests] == [len(batch) for batch in expected]
    assert [job.id for job in jobs] == [str(i) for i in range(1, count + 1)]


def test_split_bulk_at_the_byte_limit() -> None:
    server = ServerInfo(1, "test", 0, 1000, 1 << 20, 100, 10)
    budget = int(1000 * FRAME_BUDGET)
    spec = JobSpec(None, "n", bytes(budget // 2 - spec_size(JobSpec(None, "n", b""))))
    assert split_bulk([spec, spec], budget, server) == [[spec, spec]]  # exactly full: one
    longer = spec._replace(payload=spec.payload + b"x")
    assert split_bulk([spec, longer], budget + 1, server) == [[spec], [longer]]


@pytest.mark.parametrize("jobs", [
    (), (JobSpec(None, "n", b"p"),), (JobSpec("k", "n", b"p"), JobSpec(None, "m", b"")),
    (JobSpec(None, "n", b"p"), JobSpec(None, "n", b"p", priority=1)),
    (JobSpec(None, "n", b"p"), JobSpec(None, "n", b"p", timeout_ms=5)),
    (JobSpec(None, "n", b"p", priority=-2), JobSpec(None, "n", b"p", delay_ms=0)),
    (JobSpec(None, "n", b"p"), JobSpec(None, "n", b"p", lease_ms=9), JobSpec(None, "n", b"p")),
    (JobSpec(None, "n", b"p"), JobSpec(None, "n", b"p", priority=2), JobSpec(None, "m", b"")),
])
def test_jobs_to_wire_by_columns_is_job_to_wire_of_each(jobs: tuple[JobSpec, ...]) -> None:
    assert jobs_to_wire(jobs) == [job_to_wire(job) for job in jobs]
