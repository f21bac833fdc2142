"""The producer API against a real broker on 127.0.0.1 (in-process, port 0)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest

from client import (
    Client,
    ConflictError,
    JobFailed,
    JobState,
    NotFoundError,
    Queue,
    WaitTimeoutError,
    exponential,
)
from client.errors import BadArgumentError
from protocol.model import AckItem, FailItem
from protocol.operations import Ack, Fail, Reserve
from protocol.replies import parse_reserved
from tests.conftest import RunningBroker


@pytest.fixture
async def client(broker: RunningBroker) -> AsyncIterator[Client]:
    async with Client(f"jobwire://{broker.host}:{broker.port}") as c:
        yield c


async def take(client: Client, queue: str, count: int = 1) -> list[Any]:
    """Reserve jobs with raw protocol requests (no Worker), so producer tests stand alone."""
    body = await client.connection.request(Reserve((queue,), count, 2000, None))
    return parse_reserved(body)


async def test_add_returns_a_durable_job_with_options(client: Client) -> None:
    emails = client.queue("emails", attempts=5)
    job = await emails.add("send", {"to": "ada@example.com"}, priority=2, lease=60)
    assert job.id and job.name == "send" and job.queue == "emails"
    assert job.state is JobState.WAITING and not job.duplicate
    fetched = await client.get_job(job.id)
    assert fetched.data == {"to": "ada@example.com"}
    assert fetched.state is JobState.WAITING
    assert (fetched.priority, fetched.max_attempts) == (2, 5)
    assert fetched.created_at is not None and abs(fetched.created_at - time.time()) < 60


async def test_delay_and_run_at_make_delayed_jobs(client: Client) -> None:
    q = client.queue("later")
    delayed = await q.add("remind", 1, delay=3600)
    scheduled = await q.add("remind", 2, run_at=time.time() + 7200)
    for job in (delayed, scheduled):
        await job.refresh()
        assert job.state is JobState.DELAYED
    assert scheduled.run_at is not None and scheduled.run_at > time.time() + 3600
    assert (await q.stats()).delayed == 2


async def test_priority_lower_runs_first(client: Client) -> None:
    q = client.queue("prio")
    await q.add("basic", priority=5)
    await q.add("premium", priority=1)
    await q.add("pro", priority=3)
    jobs = await take(client, "prio", 3)
    assert [j.name for j in jobs] == ["premium", "pro", "basic"]


async def test_job_id_is_an_idempotency_key(client: Client) -> None:
    q = client.queue("idem")
    first = await q.add("charge", {"amount": 10}, job_id="order-42")
    again = await q.add("charge", {"amount": 99}, job_id="order-42")
    assert first.id == again.id == "order-42"
    assert not first.duplicate and again.duplicate
    assert (await q.stats()).waiting == 1
    assert (await q.get_job("order-42")).data == {"amount": 10}


async def test_add_bulk_is_one_request_and_keeps_order(client: Client) -> None:
    q = client.queue("bulk")
    sent = client.statistics().requests_sent
    jobs = await q.add_bulk(
        [("n", i) for i in range(500)]
        + [{"name": "dict", "data": "d", "opts": {"priority": 1}}, {"name": "top", "delay": 60}]
    )
    assert client.statistics().requests_sent == sent + 1
    assert len(jobs) == 502 and len({j.id for j in jobs}) == 502
    assert [j.data for j in jobs[:500]] == list(range(500))
    assert jobs[500].priority == 1 and jobs[501].state is JobState.DELAYED
    stats = await q.stats()
    assert (stats.waiting, stats.delayed) == (501, 1)
    assert await q.add_bulk([]) == []


async def test_add_bulk_above_max_batch_is_split(client: Client) -> None:
    q = client.queue("big")
    assert client.connection.server is not None
    count = client.connection.server.max_batch + 5
    sent = client.statistics().requests_sent
    jobs = await q.add_bulk([("n", None)] * count)
    assert client.statistics().requests_sent == sent + 2
    assert len({j.id for j in jobs}) == count
    assert (await q.stats()).waiting == count


async def test_add_bulk_reports_duplicates(client: Client) -> None:
    q = client.queue("bulkdup")
    await q.add("n", job_id="a")
    jobs = await q.add_bulk([("n", 1, {"job_id": "a"}), ("n", 2, {"job_id": "b"})])
    assert [j.duplicate for j in jobs] == [True, False]


async def test_wait_returns_the_result(client: Client) -> None:
    q = client.queue("w")
    job = await q.add("square", 7)
    waiter = asyncio.create_task(job.wait(timeout=10))
    reserved = (await take(client, "w"))[0]
    await client.connection.request(
        Ack((AckItem(reserved.job_id, reserved.token, client.serializer.dumps({"v": 49})),))
    )
    assert await waiter == {"v": 49}
    assert job.state is JobState.COMPLETED and job.result == {"v": 49}
    assert job.finished_at is not None


async def test_wait_raises_job_failed(client: Client) -> None:
    q = client.queue("wf")
    job = await q.add("boom", None, attempts=1)
    reserved = (await take(client, "wf"))[0]
    await client.connection.request(Fail((FailItem(reserved.job_id, reserved.token, "kaput"),)))
    with pytest.raises(JobFailed) as info:
        await job.wait(timeout=10)
    assert info.value.job.error == "kaput" and info.value.job.attempts == 1
    assert "kaput" in str(info.value)


async def test_wait_times_out(client: Client) -> None:
    job = await client.queue("wt").add("never")
    with pytest.raises(WaitTimeoutError):
        await job.wait(timeout=0.2)
    with pytest.raises(TimeoutError):  # also a builtin TimeoutError
        await job.wait(timeout=0.05)


async def test_get_job_and_refresh_unknown(client: Client) -> None:
    with pytest.raises(NotFoundError):
        await client.get_job("no-such-job")
    job = await client.queue("r").add("n")
    assert await job.remove() is JobState.WAITING
    with pytest.raises(NotFoundError):
        await job.refresh()


async def test_pause_and_resume(client: Client) -> None:
    q = client.queue("pausable")
    await q.add("n")
    await q.pause()
    assert (await q.stats()).paused
    body = await client.connection.request(Reserve(("pausable",), 1, 0, None))
    assert parse_reserved(body) == []
    await q.resume()
    assert not (await q.stats()).paused
    assert len(await take(client, "pausable")) == 1


async def test_failed_list_retry_and_clean(client: Client) -> None:
    q = client.queue("dead", attempts=1)
    jobs = await q.add_bulk([("n", i) for i in range(3)])
    for reserved in await take(client, "dead", 3):
        await client.connection.request(
            Fail((FailItem(reserved.job_id, reserved.token, f"bad {reserved.job_id}"),)))
    failed, total = await q.failed_page(limit=2)
    assert total == 3 and len(failed) == 2
    assert all(j.state is JobState.FAILED and j.error for j in failed)
    assert await q.retry_failed([jobs[0].id]) == 1
    with pytest.raises(ConflictError):
        await q.retry_failed([jobs[0].id])  # it is waiting now
    assert (await q.stats()).waiting == 1
    assert await q.retry_failed() == 2
    assert (await q.stats()).waiting == 3
    assert await q.clean("waiting") == 3
    assert (await q.stats()).waiting == 0


async def test_clean_older_than_keeps_young_jobs(client: Client) -> None:
    q = client.queue("young")
    await q.add("n")
    assert await q.clean(JobState.WAITING, older_than=3600) == 0
    assert await q.clean(JobState.WAITING, older_than=0, limit=1) == 1


async def test_remove_and_stats_of_all_queues(client: Client) -> None:
    a = await client.queue("qa").add("n")
    await client.queue("qb").add("n", delay=60)
    stats = await client.stats()
    assert stats["qa"].waiting == 1 and stats["qb"].delayed == 1
    assert await client.queue("qa").remove(a.id) is JobState.WAITING
    assert (await client.queue("qa").stats()).waiting == 0
    assert (await client.queue("never-used").stats()).waiting == 0


async def test_remove_on_complete_deletes_the_job(client: Client) -> None:
    q = client.queue("roc")
    job = await q.add("n", remove_on_complete=True, backoff=exponential(1))
    reserved = (await take(client, "roc"))[0]
    await client.connection.request(Ack((AckItem(reserved.job_id, reserved.token, None),)))
    with pytest.raises(NotFoundError):
        await job.refresh()


async def test_json_and_custom_serializers(client: Client) -> None:
    q = client.queue("json", serializer="json")
    job = await q.add("n", {"k": [1, 2]})
    reserved = (await take(client, "json"))[0]
    assert reserved.payload == b'{"k":[1,2]}'
    assert (await q.get_job(job.id)).data == {"k": [1, 2]}

    class Reverse:
        def dumps(self, value: Any) -> bytes:
            return str(value)[::-1].encode()

        def loads(self, data: bytes) -> Any:
            return data.decode()[::-1]

    custom: Queue = client.queue("custom", serializer=Reverse())
    job = await custom.add("n", "hello")
    assert (await take(client, "custom"))[0].payload == b"olleh"
    assert (await custom.get_job(job.id)).data == "hello"


async def test_bad_options_are_refused_before_sending(client: Client) -> None:
    q = client.queue("bad")
    with pytest.raises(TypeError, match="unknown job option"):
        await q.add("n", prio=1)
    with pytest.raises(TypeError):
        client.queue("bad", colour="red")
    with pytest.raises(BadArgumentError):  # the broker's own validation: ids of digits only
        await q.add("n", job_id="12345")


async def test_remove_on_fail_and_backoff_reach_the_broker(client: Client) -> None:
    q = client.queue("rof")
    gone = await q.add("n", attempts=1, remove_on_fail=True)
    backing_off = await q.add("n", attempts=3, backoff=exponential(3600))
    for reserved in await take(client, "rof", 2):
        await client.connection.request(
            Fail((FailItem(reserved.job_id, reserved.token, "boom"),)))
    with pytest.raises(NotFoundError):
        await gone.refresh()
    await backing_off.refresh()
    assert backing_off.state is JobState.DELAYED
    assert backing_off.run_at is not None and backing_off.run_at > time.time() + 3000
