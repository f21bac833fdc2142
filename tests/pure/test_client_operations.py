"""The producer operations shared by the async and sync clients, without I/O: each builds its
request and parses a reply body into the public result types (no socket, no thread)."""

from __future__ import annotations

from typing import Any

import pytest

from client.call import Call
from client.endpoint import ServerInfo
from client.errors import ConflictError, NotFoundError, WaitTimeoutError
from client.job import Job, JobHandle
from client.operations import EMPTY_QUEUE_STATS, QueueOperations, get_job_call, stats_call
from client.serializers import MSGPACK
from client.sync import SyncJob
from protocol.model import JobState
from protocol.operations import Cancel, Enqueue, Get, ListFailed, RetryFailed, Stats, Wait
from protocol.replies import JobInfo, QueueStats

SENDER: Any = object()
"""Stands in for the connection or sync client a handle is bound to: no call is sent here."""


def queue(job_type: type[JobHandle[Any]] = Job, **defaults: Any) -> QueueOperations[Any]:
    return QueueOperations(job_type, SENDER, "emails", MSGPACK, defaults)


def info(job_id: str = "7", state: JobState = JobState.COMPLETED, **fields: Any) -> JobInfo:
    base = dict(id=job_id, queue="emails", name="send", state=state, priority=0, attempts=1,
                max_attempts=3, payload=MSGPACK.dumps({"to": "ada"}), progress=None,
                result=MSGPACK.dumps("sent"), error=None, created_at=1_000, run_at=1_000,
                started_at=2_000, finished_at=3_000, lease_deadline=None)
    base.update(fields)
    return JobInfo(**base)


@pytest.mark.parametrize("job_type", [Job, SyncJob])
def test_add_builds_one_enqueue_and_makes_a_handle_of_the_callers_type(
    job_type: type[JobHandle[Any]],
) -> None:
    emails = queue(job_type, attempts=4)
    request = emails.add_request("send", {"to": "ada"}, {"priority": 2})
    assert isinstance(request, Enqueue) and request.queue == "emails"
    (spec,) = request.jobs
    assert (spec.name, spec.priority, spec.max_attempts) == ("send", 2, 4)
    job = emails.added(request, {"to": "ada"}, {"ids": ("42",), "duplicates": ()})
    assert type(job) is job_type
    assert (job.id, job.state, job.priority, job.max_attempts) == ("42", JobState.WAITING, 2, 4)
    assert job.data == {"to": "ada"} and not job.duplicate
    later = queue(job_type)
    delayed = later.added(later.add_request("send", None, {"delay": 5}), None,
                          {"ids": ("43",), "duplicates": (0,)})
    assert delayed.duplicate and delayed.state is None  # a duplicate says nothing of its state


def test_add_refuses_an_unknown_option_before_sending() -> None:
    with pytest.raises(TypeError, match="prio"):
        queue().add_request("send", None, {"prio": 1})


def test_add_bulk_splits_at_the_brokers_batch_limit_and_pairs_ids_in_order() -> None:
    server = ServerInfo(1, "jobwire/test", 0, 8 << 20, 1 << 20, max_batch=2, max_inflight=10)
    call = queue().add_bulk_call([("a", 1), ("b", 2), {"name": "c", "data": 3}], server)
    assert [len(request.jobs) for request in call.requests] == [2, 1]
    jobs = call.parse([{"ids": ("1", "2"), "duplicates": (1,)}, {"ids": ("3",), "duplicates": ()}])
    assert [(job.id, job.name, job.data, job.duplicate) for job in jobs] == [
        ("1", "a", 1, False), ("2", "b", 2, True), ("3", "c", 3, False)]
    assert queue().add_bulk_call([], None).requests == []
    with pytest.raises(TypeError, match="add_bulk items"):
        queue().add_bulk_call([42], None)


def test_get_job_parses_the_description_or_raises_not_found() -> None:
    call = get_job_call(Job, SENDER, "7", MSGPACK)
    assert call.request == Get("7")
    job = call.parse({"job": info().to_wire()})
    assert (job.id, job.state, job.result) == ("7", JobState.COMPLETED, "sent")
    assert job.finished_at == 3.0  # broker milliseconds become seconds
    with pytest.raises(NotFoundError):
        call.parse({"job": None})


def test_queue_stats_of_an_unused_queue_are_zero() -> None:
    stats = QueueStats(1, 2, 3, 4, 5, False, None, 6, 7)
    assert stats_call("emails").request == Stats("emails")
    call = queue().stats_call()
    assert call.parse({"queues": {"emails": stats.to_wire()}}) == stats
    assert call.parse({"queues": {}}) == EMPTY_QUEUE_STATS


def test_failed_page_and_retry_failed() -> None:
    page = queue().failed_page_call(5_000, 10)
    assert isinstance(page.request, ListFailed) and page.request.offset == 10
    jobs, total = page.parse({"jobs": (info(state=JobState.FAILED).to_wire(),), "total": 9})
    assert [job.id for job in jobs] == ["7"] and total == 9
    retry = queue().retry_failed_call(["7"], None)
    assert retry.request == RetryFailed("emails", ("7",), None)
    assert retry.parse({"retried": 1}) == 1
    with pytest.raises(ConflictError):
        retry.parse({"retried": 0, "not_failed": ("7",)})
    assert queue().retry_failed_call(None, 10).parse({"retried": 0, "missing": ("7",)}) == 0


def test_job_calls_refresh_remove_and_retry() -> None:
    job = Job.from_info(SENDER, info(state=JobState.ACTIVE), MSGPACK)
    refresh = job.refresh_call()
    assert refresh.request == Get("7")
    refresh.parse(info(state=JobState.FAILED, error="boom").to_wire())
    assert job.state is JobState.FAILED and job.error == "boom"
    remove = job.remove_call()
    assert remove.request == Cancel("7") and remove.parse({"state": "failed"}) is JobState.FAILED
    with pytest.raises(ConflictError):
        job.retry_call().parse({"retried": 0, "skipped": ("7",)})


def test_wait_polls_until_the_job_finishes() -> None:
    job = Job.from_info(SENDER, info(state=JobState.ACTIVE), MSGPACK)
    polls = job.wait_calls(None, request_timeout=10.0)
    first: Call[None] = next(polls)
    assert first.request == Wait("7", 30_000) and first.timeout == 40.0
    first.parse({"job": info(state=JobState.ACTIVE).to_wire()})
    second = next(polls)  # not finished yet: asks again
    second.parse({"job": info().to_wire()})
    assert list(polls) == [] and job.finished


def test_wait_gives_up_after_its_timeout() -> None:
    job = Job.from_info(SENDER, info(state=JobState.WAITING), MSGPACK)
    with pytest.raises(WaitTimeoutError):
        next(job.wait_calls(0.0, request_timeout=10.0))
    first = next(job.wait_calls(0.25, request_timeout=10.0))
    assert isinstance(first.request, Wait) and 0 < first.request.timeout_ms <= 250
    assert first.timeout is not None and first.timeout <= 10.25
