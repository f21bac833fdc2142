"""Automatic batching of concurrent ``Queue.add()`` calls (``client/batcher.py``) against a real
broker on 127.0.0.1: one request for many callers, each with its own job and its own error."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from client import Client, JobState
from client.errors import (
    BadArgumentError,
    BrokerError,
    PayloadTooLargeError,
    QueueFullError,
)
from protocol.checks import MAX_NAME_LEN
from tests.conftest import RunningBroker

StartBroker = Callable[..., Awaitable[RunningBroker]]


def url(broker: RunningBroker) -> str:
    return f"jobwire://{broker.host}:{broker.port}"


async def test_concurrent_adds_share_one_request_and_keep_their_order(
    broker: RunningBroker,
) -> None:
    async with Client(url(broker)) as client:
        q = client.queue("batched")
        before = client.statistics().requests_sent
        jobs = await asyncio.gather(*(q.add("task", {"n": i}) for i in range(100)))
        sent = client.statistics().requests_sent - before
        assert sent == 1  # all 100 adds were made in one loop iteration
        ids = [job.id for job in jobs]
        assert len(set(ids)) == 100
        assert [int(job_id) for job_id in ids] == sorted(int(job_id) for job_id in ids)
        assert all(job.state is JobState.WAITING and not job.duplicate for job in jobs)
        assert [job.data for job in jobs] == [{"n": i} for i in range(100)]
        for i in (0, 57, 99):
            assert (await client.get_job(ids[i])).data == {"n": i}
        assert (await q.stats()).waiting == 100


async def test_the_switch_sends_one_request_per_add(broker: RunningBroker) -> None:
    async with Client(url(broker), batch_adds=False) as client:
        assert client.batcher is None
        q = client.queue("unbatched")
        before = client.statistics().requests_sent
        jobs = await asyncio.gather(*(q.add("task", i) for i in range(20)))
        assert client.statistics().requests_sent - before == 20
        assert len({job.id for job in jobs}) == 20


async def test_adds_of_different_queues_travel_separately(broker: RunningBroker) -> None:
    async with Client(url(broker)) as client:
        a, b = client.queue("a"), client.queue("b")
        before = client.statistics().requests_sent
        jobs = await asyncio.gather(*(q.add("t", i) for i in range(10) for q in (a, b)))
        assert client.statistics().requests_sent - before == 2
        assert [job.queue for job in jobs] == ["a", "b"] * 10
        assert (await a.stats()).waiting == (await b.stats()).waiting == 10


async def test_a_too_large_payload_fails_only_its_caller(start_broker: StartBroker) -> None:
    broker = await start_broker(max_payload=1000)
    async with Client(url(broker), serializer="raw") as client:
        q = client.queue("sizes")
        payloads = [b"x" * 10] * 10
        payloads[4] = b"y" * 2000
        results = await asyncio.gather(
            *(q.add("t", payload) for payload in payloads), return_exceptions=True
        )
        assert isinstance(results[4], PayloadTooLargeError)
        created = [r for i, r in enumerate(results) if i != 4]
        assert all(not isinstance(r, BaseException) for r in created)
        assert (await q.stats()).waiting == 9


async def test_a_job_the_broker_refuses_fails_only_its_caller(broker: RunningBroker) -> None:
    """A batch refused for one job's shape is resent one job per request."""
    async with Client(url(broker)) as client:
        q = client.queue("shapes")
        names = ["ok"] * 8
        names[3] = "n" * (MAX_NAME_LEN + 1)  # the client does not check name lengths
        results = await asyncio.gather(*(q.add(name, i) for i, name in enumerate(names)),
                                       return_exceptions=True)
        assert isinstance(results[3], BadArgumentError)
        assert "jobs[0]" in str(results[3])  # the error of the job sent alone
        good = [r for i, r in enumerate(results) if i != 3]
        assert all(not isinstance(r, BaseException) for r in good)
        assert (await q.stats()).waiting == 7


async def test_a_refused_batch_fails_every_caller_with_its_own_error(
    start_broker: StartBroker,
) -> None:
    broker = await start_broker(max_queue_jobs=3)
    async with Client(url(broker)) as client:
        q = client.queue("full")
        results: list[Any] = await asyncio.gather(
            *(q.add("t", i) for i in range(5)), return_exceptions=True
        )
        assert all(isinstance(r, QueueFullError) for r in results)
        assert len({id(r) for r in results}) == 5  # one instance per caller
        assert (await q.stats()).waiting == 0  # the request is all-or-nothing
        assert len(await asyncio.gather(*(q.add("t", i) for i in range(3)))) == 3


async def test_a_repeated_job_id_in_one_batch_is_a_duplicate(broker: RunningBroker) -> None:
    async with Client(url(broker)) as client:
        q = client.queue("ids")
        before = client.statistics().requests_sent
        first, other, second = await asyncio.gather(
            q.add("t", 1, job_id="order-7"), q.add("t", 2), q.add("t", 3, job_id="order-7")
        )
        # one enqueue for the three, then one get: a duplicate add returns the stored job
        assert client.statistics().requests_sent - before == 2
        assert (first.id, first.duplicate) == ("order-7", False)
        assert (second.id, second.duplicate) == ("order-7", True)
        assert second.data == 1 and not other.duplicate  # the stored job's data, not the request's
        assert (await client.get_job("order-7")).data == 1  # the first one's data
        assert (await q.stats()).waiting == 2


async def test_adds_made_while_the_pipe_is_full_wait_and_share(
    broker: RunningBroker,
) -> None:
    async with Client(url(broker)) as client:
        assert client.batcher is not None and client.batcher.max_in_flight == 4
        client.batcher.max_in_flight = 2
        q = client.queue("flight")
        before = client.statistics().requests_sent
        first = [asyncio.ensure_future(q.add("t", -1)), asyncio.ensure_future(q.add("t", -2))]
        for _ in range(3):  # one batch, sent two loop iterations after the adds
            await asyncio.sleep(0)
        second = asyncio.ensure_future(q.add("t", -3))
        for _ in range(3):  # one in flight, so this one leaves at once too
            await asyncio.sleep(0)
        assert client.statistics().requests_sent - before == 2
        assert not any(add.done() for add in [*first, second])  # their commits are running
        # Two enqueues in flight: these wait for one of them, then travel together.
        rest = await asyncio.gather(*(q.add("t", i) for i in range(50)))
        await asyncio.gather(*first, second)
        assert client.statistics().requests_sent - before == 3
        assert [job.data for job in rest] == list(range(50))


async def test_adds_are_not_held_while_fewer_than_four_enqueues_are_in_flight(
    broker: RunningBroker,
) -> None:
    async with Client(url(broker)) as client:
        q = client.queue("pipe")
        before = client.statistics().requests_sent
        sent = []
        for i in range(3):  # three batches in a row, each sent without waiting for the last
            sent.append(asyncio.ensure_future(q.add("t", i)))
            for _ in range(3):
                await asyncio.sleep(0)
        assert client.statistics().requests_sent - before == 3
        jobs = await asyncio.gather(*sent)
        assert [job.data for job in jobs] == [0, 1, 2]


async def test_a_cancelled_add_leaves_its_neighbours_alone(broker: RunningBroker) -> None:
    async with Client(url(broker)) as client:
        q = client.queue("cancel")
        tasks = [asyncio.ensure_future(q.add("t", i)) for i in range(5)]
        await asyncio.sleep(0)  # every add has joined the open batch, none is sent yet
        tasks[2].cancel()
        results = await asyncio.gather(*tasks, return_exceptions=True)
        assert isinstance(results[2], asyncio.CancelledError)
        assert [r.data for i, r in enumerate(results) if i != 2] == [0, 1, 3, 4]
        assert (await q.stats()).waiting == 4


async def test_a_lost_connection_fails_every_caller(start_broker: StartBroker) -> None:
    broker = await start_broker()
    async with Client(url(broker), reconnect=False) as client:
        q = client.queue("lost")
        await q.add("t", 0)
        await broker.stop()
        results = await asyncio.gather(*(q.add("t", i) for i in range(5)),
                                       return_exceptions=True)
        assert all(isinstance(r, Exception) and not isinstance(r, BrokerError)
                   for r in results)
        assert len({id(r) for r in results}) == 5


@pytest.mark.parametrize("count", [1, 2500])
async def test_batches_are_capped(broker: RunningBroker, count: int) -> None:
    async with Client(url(broker)) as client:
        assert client.batcher is not None
        q = client.queue("capped")
        before = client.statistics().requests_sent
        jobs = await asyncio.gather(*(q.add("t", i) for i in range(count)))
        assert client.statistics().requests_sent - before == -(-count // client.batcher.max_jobs)
        assert [job.data for job in jobs] == list(range(count))
