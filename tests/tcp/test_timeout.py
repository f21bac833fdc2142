"""Job timeouts end to end (broker/timeouts.py, client/handlers.run_limited): a handler past its
job's timeout is cancelled and the attempt fails and is retried; a worker that does not report
is failed by the broker while its lease is still valid; a thread handler is reported at the
limit; bad values are refused naming the field. Waits only bound how long a test may hang."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from client import Client, JobContext, JobFailed, JobState, Worker, fixed
from client.errors import BadArgumentError
from protocol.errors import ErrorCode
from tests.conftest import RunningBroker
from tests.tools.clienttools import running
from tests.tools.wire import R_TOKEN, WireClient, job_spec

NO_WAIT = fixed(0)


def make_worker(url: str, queue: str, handler: Any) -> Worker:
    return Worker(url, queue, handler, handle_signals=False, poll_wait=0.5)


async def test_a_handler_past_its_timeout_is_cancelled_and_the_retry_runs(
    url: str, client: Client
) -> None:
    cancelled = asyncio.Event()
    failures: list[BaseException] = []

    async def slow_once(job: JobContext) -> str:
        assert job.timeout == 0.3
        if job.attempt == 1:
            try:
                await asyncio.sleep(3600)
            except asyncio.CancelledError:
                cancelled.set()
                raise
        return "done"

    job = await client.queue("slow").add("s", timeout=0.3, attempts=2, backoff=NO_WAIT)
    worker = make_worker(url, "slow", slow_once)
    worker.on_failed(lambda ctx, exc: failures.append(exc))
    async with running(worker):
        assert await job.wait(timeout=15) == "done"
    assert cancelled.is_set()
    assert job.attempts == 2  # the timed-out attempt counted
    # The worker's own report was the one recorded (the broker waits a grace period for it),
    # so on_failed fired, and the job keeps the last error.
    assert [type(exc) for exc in failures] == [TimeoutError]
    assert job.error is not None
    assert job.error.startswith("TimeoutError: job timed out after 0.3s (the job's timeout)")


async def test_the_broker_fails_an_attempt_nobody_reports_while_the_lease_is_valid(
    broker: RunningBroker, wire: Callable[..., Awaitable[WireClient]], client: Client
) -> None:
    raw = await wire(broker)
    [job_id] = (await raw.enqueue("silent", job_spec(max_attempts=1, timeout_ms=200)))["ids"]
    [job] = await raw.reserve("silent", lease_ms=60_000)
    assert job[11] == 200  # the reserve reply carries the timeout
    token = job[R_TOKEN]
    extended = await raw.ok("extend", {"items": [[job_id, token, 60_000]]})
    assert extended["results"][0][0] == "OK"  # extending the lease does not move the timeout
    handle = await client.get_job(job_id)
    with pytest.raises(JobFailed, match="timed out after 200 ms"):
        await handle.wait(timeout=15)
    info = await raw.get(job_id)
    assert info["state"] == "failed" and info["attempts"] == 1
    assert info["finished_at"] < extended["results"][0][1]  # the lease was still valid
    # The silent worker's late outcome is refused, as for an expired lease.
    [(code, _)] = await raw.ack([job_id, token])
    assert code == ErrorCode.STALE_LEASE.value


async def test_a_thread_handler_is_reported_at_its_timeout_while_the_thread_runs_on(
    url: str, client: Client
) -> None:
    release = threading.Event()
    saw_timed_out = threading.Event()

    def blocking(job: JobContext) -> None:
        release.wait(30)
        if job.timed_out:
            saw_timed_out.set()

    job = await client.queue("threads").add("b", timeout=0.2, attempts=1)
    try:
        async with running(make_worker(url, "threads", blocking)):
            with pytest.raises(JobFailed, match="timed out"):
                await job.wait(timeout=15)
            assert not release.is_set()  # failed while the thread still ran
            release.set()
            await asyncio.to_thread(saw_timed_out.wait, 15)
    finally:
        release.set()
    assert saw_timed_out.is_set()
    assert job.state is JobState.FAILED


@pytest.mark.parametrize("seconds", [0, 0.0004, 8 * 86_400])
async def test_bad_timeouts_are_refused_naming_the_field(client: Client, seconds: float) -> None:
    with pytest.raises(BadArgumentError, match=r"jobs\[0\]\.timeout_ms"):
        await client.queue("bad").add("x", timeout=seconds)


async def test_a_negative_timeout_is_refused_by_the_client(client: Client) -> None:
    with pytest.raises(ValueError, match="timeout"):
        await client.queue("bad").add("x", timeout=-1)


async def test_the_timeout_survives_a_restart(
    start_broker: Callable[..., Awaitable[RunningBroker]],
    wire: Callable[..., Awaitable[WireClient]],
) -> None:
    first = await start_broker()
    raw = await wire(first)
    await raw.enqueue("kept", job_spec(timeout_ms=1_234))
    data_dir = first.data_dir
    await first.stop()
    second = await start_broker(data_dir=data_dir)
    raw = await wire(second)
    [job] = await raw.reserve("kept")
    assert job[11] == 1_234
