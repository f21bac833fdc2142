"""The synchronous producer (``SyncClient``) against real brokers; it runs in worker threads
here because the in-process broker shares the test's event loop."""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Callable
from typing import Any, TypeVar

import pytest

from client import (
    ConnectionClosedError,
    ConnectionLostError,
    JobFailed,
    JobState,
    NotFoundError,
    SyncClient,
    WaitTimeoutError,
)
from client.errors import AuthenticationError
from protocol.model import AckItem, FailItem
from protocol.operations import Ack, Fail, Reserve
from protocol.replies import parse_reserved
from tests.conftest import BrokerProcess, RunningBroker

T = TypeVar("T")


def url_of(broker: RunningBroker | BrokerProcess) -> str:
    return f"jobwire://{broker.host}:{broker.port}"


async def in_thread(func: Callable[..., T], *args: Any) -> T:
    return await asyncio.to_thread(func, *args)


async def test_add_get_bulk_stats_without_an_event_loop(broker: RunningBroker) -> None:
    def produce() -> tuple[Any, ...]:
        with SyncClient(url_of(broker)) as jobs:
            q = jobs.queue("sync", attempts=4)
            job = q.add("n", {"k": 1}, priority=2, job_id="sync-1")
            again = q.add("n", {"k": 2}, job_id="sync-1")
            bulk = q.add_bulk([("n", i) for i in range(50)] + [{"name": "d", "delay": 60}])
            fetched = jobs.get_job("sync-1")
            return job, again, bulk, fetched, q.stats(), jobs.ping()

    job, again, bulk, fetched, stats, now = await in_thread(produce)
    assert job.id == "sync-1" and not job.duplicate and again.duplicate
    assert len(bulk) == 51 and bulk[-1].state is JobState.DELAYED
    assert fetched.data == {"k": 1} and fetched.priority == 2 and fetched.max_attempts == 4
    assert (stats.waiting, stats.delayed) == (51, 1) and now > 0


async def test_wait_result_failure_and_timeout(broker: RunningBroker) -> None:
    jobs = SyncClient(url_of(broker))
    try:
        ok = await in_thread(jobs.queue("sw").add, "ok", 1)
        bad = await in_thread(lambda: jobs.queue("sw").add("bad", 2, attempts=1))
        waiting = asyncio.create_task(in_thread(ok.wait, 15))
        from client import Client

        async with Client(url_of(broker)) as client:
            reserved = parse_reserved(
                await client.connection.request(Reserve(("sw",), 2, 2000, None)))
            by_name = {r.name: r for r in reserved}
            await client.connection.request(Ack((AckItem(
                by_name["ok"].job_id, by_name["ok"].token, client.serializer.dumps("done")),)))
            await client.connection.request(Fail((FailItem(
                by_name["bad"].job_id, by_name["bad"].token, "no luck"),)))
        assert await waiting == "done"
        with pytest.raises(JobFailed, match="no luck"):
            await in_thread(bad.wait, 15)
        never = await in_thread(jobs.queue("sw").add, "never")
        with pytest.raises(WaitTimeoutError):
            await in_thread(never.wait, 0.2)
        with pytest.raises(NotFoundError):
            await in_thread(jobs.get_job, "missing")
        assert await in_thread(never.remove) is JobState.WAITING
    finally:
        await in_thread(jobs.close)
    with pytest.raises(ConnectionClosedError):
        await in_thread(jobs.ping)


async def test_admin_calls(broker: RunningBroker) -> None:
    def admin() -> tuple[Any, ...]:
        with SyncClient(url_of(broker)) as jobs:
            q = jobs.queue("adm")
            q.add_bulk([("n", i) for i in range(3)])
            q.pause()
            paused = q.stats().paused
            q.resume()
            removed = q.clean("waiting", limit=2)
            return paused, removed, q.stats().waiting, q.failed(), q.retry_failed()

    assert await in_thread(admin) == (True, 2, 1, [], 0)


async def test_shared_between_threads(broker: RunningBroker) -> None:
    jobs = SyncClient(url_of(broker))
    ids: list[str] = []
    lock = threading.Lock()

    def produce(n: int) -> None:
        for i in range(25):
            job = jobs.queue("threads").add("n", {"thread": n, "i": i})
            with lock:
                ids.append(job.id)

    def run_threads() -> None:
        threads = [threading.Thread(target=produce, args=(n,)) for n in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()

    await in_thread(run_threads)
    await in_thread(jobs.close)
    assert len(set(ids)) == 100


def test_reconnects_on_the_next_call_after_a_broker_restart(
    broker_process: BrokerProcess,
) -> None:
    jobs = SyncClient(url_of(broker_process))
    job = jobs.queue("sr").add("n", "kept")
    broker_process.kill()
    with pytest.raises(ConnectionLostError):
        jobs.ping()
    broker_process.start()
    assert jobs.get_job(job.id).data == "kept"  # a fresh connection, the job survived
    if hasattr(os, "fork"):
        pid = os.fork()
        if pid == 0:  # the child must not reuse the parent's socket
            code = 0 if jobs.ping() > 0 else 1
            os._exit(code)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
    assert jobs.ping() > 0
    jobs.close()


async def test_wrong_token(start_broker: Callable[..., Any]) -> None:
    broker = await start_broker(token="right")
    jobs = SyncClient(f"jobwire://wrong@{broker.host}:{broker.port}")
    with pytest.raises(AuthenticationError):
        await in_thread(jobs.ping)
    ok = SyncClient(url_of(broker), token="right")
    assert await in_thread(ok.ping) > 0
    await in_thread(ok.close)
