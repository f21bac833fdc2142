"""The worker runtime against a real broker (in-process on port 0): handlers, outcomes, leases,
callbacks, batching, shutdown. Waits only bound how long a test may hang; nothing asserts speed.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from client import (
    Client,
    JobContext,
    JobState,
    NotFoundError,
    Retry,
    UnrecoverableError,
    Worker,
    fixed,
)
from tests.conftest import RunningBroker
from tests.tools.clienttools import running, until

NO_WAIT = fixed(0)


def make_worker(url: str, queue: str, handler: Any, **kwargs: Any) -> Worker:
    kwargs.setdefault("handle_signals", False)
    kwargs.setdefault("poll_wait", 0.5)
    return Worker(url, queue, handler, **kwargs)


async def test_async_handlers_by_name_get_a_context_and_store_results(
    url: str, client: Client
) -> None:
    seen: list[tuple[str, str, Any, int, int]] = []

    async def resize(job: JobContext) -> dict[str, int]:
        seen.append((job.id, job.name, job.data, job.attempt, job.max_attempts))
        return {"width": job.data["w"] // 2}

    async def other(job: JobContext) -> str:
        return "other"

    q = client.queue("images", attempts=4)
    a = await q.add("resize", {"w": 640})
    b = await q.add("other")
    async with running(make_worker(url, "images", {"resize": resize, "other": other})):
        assert await a.wait(timeout=15) == {"width": 320}
        assert await b.wait(timeout=15) == "other"
    assert seen == [(a.id, "resize", {"w": 640}, 1, 4)]


async def test_sync_handler_runs_in_a_thread_and_reports_progress(
    url: str, client: Client
) -> None:
    threads: list[str] = []

    def crunch(job: JobContext) -> int:
        threads.append(threading.current_thread().name)
        job.progress_sync({"percent": 50})
        job.extend_sync(30)
        return int(job.data) * 2

    job = await client.queue("cpu").add("crunch", 21)
    async with running(make_worker(url, "cpu", crunch)):
        assert await job.wait(timeout=15) == 42
    assert threads and threads[0] != threading.main_thread().name
    assert job.progress == {"percent": 50}


async def test_progress_is_visible_while_the_handler_runs(url: str, client: Client) -> None:
    release = asyncio.Event()

    async def slow(job: JobContext) -> None:
        await job.progress(0.25)
        await release.wait()

    job = await client.queue("prog").add("slow")
    async with running(make_worker(url, "prog", slow)):
        await until(lambda: _state_progress(job, JobState.ACTIVE, 0.25))
        release.set()
        await job.wait(timeout=15)


async def _state_progress(job: Any, state: JobState, progress: Any) -> bool:
    await job.refresh()
    return bool(job.state is state and job.progress == progress)


async def test_exception_fails_the_attempt_with_traceback_then_retries(
    url: str, client: Client
) -> None:
    failures: list[tuple[str, BaseException]] = []

    async def flaky(job: JobContext) -> str:
        if job.attempt == 1:
            raise ConnectionRefusedError("smtp down")
        return "sent"

    worker = make_worker(url, "flaky", flaky)
    worker.on_failed(lambda job, exc: failures.append((job.id, exc)))
    job = await client.queue("flaky").add("send", attempts=3, backoff=NO_WAIT)
    async with running(worker):
        assert await job.wait(timeout=15) == "sent"
    assert job.attempts == 2
    assert job.error is not None and job.error.startswith("ConnectionRefusedError: smtp down")
    assert "Traceback" in job.error
    assert len(failures) == 1 and isinstance(failures[0][1], ConnectionRefusedError)
    assert worker.statistics().retried == 1 and worker.statistics().completed == 1


async def test_retry_asks_for_a_delay(url: str, client: Client) -> None:
    async def later(job: JobContext) -> None:
        raise Retry(delay=3600, reason="rate limited")

    job = await client.queue("later").add("call", attempts=3)
    async with running(make_worker(url, "later", later)):
        await until(lambda: _state(job, JobState.DELAYED))
    assert job.error == "Retry: rate limited"
    assert job.run_at is not None and job.finished_at is None
    assert job.run_at - (job.started_at or 0) > 3000


async def _state(job: Any, state: JobState) -> bool:
    await job.refresh()
    return bool(job.state is state)


async def test_unrecoverable_error_fails_without_retry(url: str, client: Client) -> None:
    async def doomed(job: JobContext) -> None:
        raise UnrecoverableError("card declined")

    job = await client.queue("doomed").add("charge", attempts=10, backoff=NO_WAIT)
    worker = make_worker(url, "doomed", doomed)
    async with running(worker):
        with pytest.raises(Exception, match="card declined"):
            await job.wait(timeout=15)
    assert job.state is JobState.FAILED and job.attempts == 1
    assert worker.statistics().failed == 1


async def test_job_timeout_cancels_the_handler(url: str, client: Client) -> None:
    cancelled = asyncio.Event()

    async def hangs(job: JobContext) -> None:
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    job = await client.queue("hang").add("h", attempts=1)
    async with running(make_worker(url, "hang", hangs, job_timeout=0.2)):
        with pytest.raises(Exception, match="timed out"):
            await job.wait(timeout=15)
    assert cancelled.is_set()
    assert job.error is not None and job.error.startswith("TimeoutError: job timed out after")


async def test_unknown_job_name_fails_the_attempt(url: str, client: Client) -> None:
    async def known(job: JobContext) -> None:
        return None

    job = await client.queue("names").add("unknown", attempts=1)
    async with running(make_worker(url, "names", {"known": known})):
        with pytest.raises(Exception, match="no handler for job name 'unknown'"):
            await job.wait(timeout=15)


async def test_leases_are_extended_while_the_handler_runs(url: str, client: Client) -> None:
    async def slow(job: JobContext) -> str:
        await asyncio.sleep(1.5)  # far longer than the 0.6 s lease
        return "done"

    job = await client.queue("lease").add("slow", lease=0.6, attempts=1)
    worker = make_worker(url, "lease", slow)
    async with running(worker):
        assert await job.wait(timeout=15) == "done"
    assert job.attempts == 1
    assert worker.statistics().extended >= 1


async def test_callbacks_fire_only_after_the_broker_recorded_the_outcome(
    url: str, client: Client
) -> None:
    states: list[tuple[str, JobState | None]] = []

    async def ok(job: JobContext) -> int:
        if job.name == "bad":
            raise ValueError("nope")
        return 1

    worker = make_worker(url, "cb", ok)

    @worker.on_completed
    async def completed(job: JobContext, result: Any) -> None:
        states.append(("completed", (await client.get_job(job.id)).state))

    @worker.on_failed
    async def failed(job: JobContext, exc: BaseException) -> None:
        states.append(("failed", (await client.get_job(job.id)).state))

    q = client.queue("cb")
    await q.add("good")
    await q.add("bad", attempts=1)
    async with running(worker):
        await until(lambda: len(states) == 2)
    assert sorted(states) == [("completed", JobState.COMPLETED), ("failed", JobState.FAILED)]


async def test_stale_lease_is_refused_and_counted(url: str, client: Client) -> None:
    started, release = asyncio.Event(), asyncio.Event()
    completions: list[str] = []

    async def held(job: JobContext) -> None:
        started.set()
        await release.wait()

    job = await client.queue("stale").add("h")
    worker = make_worker(url, "stale", held)
    worker.on_completed(lambda job, result: completions.append(job.id))
    async with running(worker):
        await asyncio.wait_for(started.wait(), 15)
        await job.remove()  # revokes the lease
        release.set()
        await until(lambda: worker.statistics().refused == 1)
    assert completions == [] and worker.statistics().completed == 0
    with pytest.raises(NotFoundError):
        await job.refresh()


async def test_concurrency_bound_and_batched_requests(url: str, client: Client) -> None:
    active = peak = 0

    async def work(job: JobContext) -> None:
        nonlocal active, peak
        active += 1
        peak = max(peak, active)
        await asyncio.sleep(0.01)
        active -= 1

    q = client.queue("many")
    await q.add_bulk([("w", i) for i in range(100)])
    worker = make_worker(url, "many", work, concurrency=5)
    async with running(worker):
        await until(lambda: worker.statistics().completed == 100, limit=60)
    assert peak == 5

    fast_q = client.queue("fast")
    await fast_q.add_bulk([("w", i) for i in range(400)])

    async def noop(job: JobContext) -> None:
        return None

    fast = make_worker(url, "fast", noop, concurrency=50)
    async with running(fast):
        await until(lambda: fast.statistics().completed == 400, limit=60)
    stats = fast.statistics()
    assert stats.reserve_requests <= 400 // 10
    assert stats.ack_requests <= 400 // 10


async def test_graceful_stop_lets_running_handlers_finish(url: str, client: Client) -> None:
    started = asyncio.Event()

    async def slowish(job: JobContext) -> str:
        started.set()
        await asyncio.sleep(0.3)
        return "finished"

    job = await client.queue("graceful").add("s")
    worker = make_worker(url, "graceful", slowish, grace=10)
    task = asyncio.create_task(worker.run())
    await asyncio.wait_for(started.wait(), 15)
    worker.stop()
    await asyncio.wait_for(task, 15)
    await job.refresh()
    assert job.state is JobState.COMPLETED and job.result == "finished"
    assert worker.statistics().handed_back == 0


async def test_stop_after_grace_hands_a_last_attempt_back_without_failing_it(
    url: str, client: Client
) -> None:
    started = asyncio.Event()
    cancelled = 0

    async def forever(job: JobContext) -> None:
        nonlocal cancelled
        await job.progress("half")
        started.set()
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            cancelled += 1
            raise

    job = await client.queue("handback").add("f", attempts=1)
    worker = make_worker(url, "handback", forever, grace=0.2)
    task = asyncio.create_task(worker.run())
    await asyncio.wait_for(started.wait(), 15)
    worker.stop()
    await asyncio.wait_for(task, 15)
    assert cancelled == 1 and worker.statistics().handed_back == 1
    await job.refresh()
    # Released, not failed: waiting at once, the attempt not counted, progress kept.
    assert (job.state, job.attempts, job.error) == (JobState.WAITING, 0, None)
    assert job.progress == "half"

    attempts: list[tuple[int, int]] = []

    async def finish(job: JobContext) -> str:
        attempts.append((job.attempt, job.max_attempts))
        return "second worker"

    async with running(make_worker(url, "handback", finish)):
        assert await job.wait(timeout=15) == "second worker"
    assert attempts == [(1, 1)]


async def test_worker_statistics_is_a_frozen_snapshot(url: str) -> None:
    async def noop(job: JobContext) -> None:
        return None

    stats = make_worker(url, "x", noop).statistics()
    with pytest.raises(AttributeError):
        stats.completed = 5  # type: ignore[misc]


async def test_worker_arguments_are_checked(url: str) -> None:
    with pytest.raises(TypeError):
        Worker(url, "q")
    with pytest.raises(ValueError):
        Worker(url, "q", lambda job: None, concurrency=0)
    with pytest.raises(ValueError):
        Worker(url, [], lambda job: None)


async def test_a_failing_reserve_backs_off_instead_of_spinning(url: str) -> None:
    async def noop(job: JobContext) -> None:
        return None

    worker = make_worker(url, "x" * 300, noop)  # a queue name the broker refuses
    async with running(worker):
        await asyncio.sleep(0.5)
    assert 1 <= worker.statistics().reserve_requests <= 10


async def test_draining_broker_gets_the_running_jobs_outcome(
    start_broker: Callable[..., Awaitable[RunningBroker]],
) -> None:
    broker = await start_broker(shutdown_grace=10.0)
    url = f"jobwire://{broker.host}:{broker.port}"
    started = asyncio.Event()

    async def slow(job: JobContext) -> str:
        started.set()
        await asyncio.sleep(0.3)
        return "made it"

    async with Client(url) as client:
        job = await client.queue("drain").add("slow")
    worker = make_worker(url, "drain", slow, reconnect_cap=0.1)
    async with running(worker):
        await asyncio.wait_for(started.wait(), 15)
        await broker.stop()  # draining: the worker stops reserving and acks what it holds
        assert worker.statistics().completed == 1
        reserves = worker.statistics().reserve_requests
        restarted = await start_broker(data_dir=broker.data_dir)
        async with Client(f"jobwire://{restarted.host}:{restarted.port}") as client:
            done = await client.get_job(job.id)
        assert done.state is JobState.COMPLETED and done.result == "made it"
        assert worker.statistics().reserve_requests == reserves


async def test_worker_stops_when_its_connection_closes_for_good(
    start_broker: Callable[..., Awaitable[RunningBroker]],
) -> None:
    from client import ConnectionClosedError

    broker = await start_broker()

    async def noop(job: JobContext) -> None:
        return None

    worker = make_worker(f"jobwire://{broker.host}:{broker.port}", "q", noop, reconnect=False)
    task = asyncio.create_task(worker.run())
    await until(lambda: worker.connection.connected)
    await broker.stop()
    with pytest.raises(ConnectionClosedError):
        await asyncio.wait_for(task, 15)


async def test_a_worker_waits_for_the_broker_and_can_be_stopped_meanwhile() -> None:
    from tests.conftest import free_port

    async def noop(job: JobContext) -> None:
        return None

    worker = make_worker(f"jobwire://127.0.0.1:{free_port()}", "q", noop, reconnect_cap=0.05)
    task = asyncio.create_task(worker.run())
    await until(lambda: worker.connection.statistics().connect_failures >= 2)
    assert not task.done()  # still trying: a worker may start before its broker
    worker.stop()
    await asyncio.wait_for(task, 10)


async def test_handlers_that_suspend_all_start_together(url: str, client: Client) -> None:
    # One runner is woken per reserve reply at once, the others one loop iteration later when
    # jobs still wait: every job of a reply must still get its own runner. The first job of
    # each reply returns at once (it never suspends); the others wait until 12 run together.
    together = asyncio.Event()
    running_now = 0

    async def handler(job: JobContext) -> None:
        nonlocal running_now
        if job.data == 0:
            return
        running_now += 1
        if running_now == 12:
            together.set()
        await together.wait()

    await client.queue("together").add_bulk([("w", i) for i in range(13)])
    worker = make_worker(url, "together", handler, concurrency=13)
    async with running(worker):
        await until(lambda: worker.statistics().completed == 13, limit=30)
    assert together.is_set()
