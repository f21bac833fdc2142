"""Flow control against a real broker (in-process, port 0): rate and concurrency limits enforced
across several worker connections, a limited queue that does not hold up another, "not now"
(``RateLimited``) without an attempt, limits that survive a restart, and bad input.

Assertions are on the broker's own records (``started_at``) and on orderings, never on speed.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from client import (
    Client,
    JobContext,
    JobState,
    QueueLimits,
    RateLimited,
    Worker,
)
from client.errors import BadArgumentError
from tests.tools.clienttools import running, until


def make_worker(url: str, queues: Any, handler: Any, **kwargs: Any) -> Worker:
    kwargs.setdefault("handle_signals", False)
    kwargs.setdefault("poll_wait", 0.5)
    return Worker(url, queues, handler, **kwargs)


async def state_is(job: Any, state: JobState) -> bool:
    await job.refresh()
    return bool(job.state is state)


def most_in_any_window(starts_ms: list[int], period_ms: int) -> int:
    """The most starts in any window ``[t, t + period_ms)`` (the worst one begins at a start)."""
    starts_ms = sorted(starts_ms)
    return max(sum(1 for s in starts_ms if t <= s < t + period_ms) for t in starts_ms)


async def test_rate_limit_holds_across_worker_connections_and_skips_to_other_queues(
    url: str, client: Client
) -> None:
    limited, free = client.queue("limited"), client.queue("free")
    assert await limited.set_rate_limit(4, 0.3) == QueueLimits(4, 0.3, None, None)
    finished: list[str] = []

    async def work(job: JobContext) -> None:
        finished.append(job.queue)

    jobs = await limited.add_bulk([("work", i) for i in range(16)])
    await free.add_bulk([("work", i) for i in range(16)])
    workers = [make_worker(url, ["limited", "free"], work, concurrency=8) for _ in range(3)]
    async with running(workers[0]), running(workers[1]), running(workers[2]):
        await until(lambda: len(finished) == 32, 30)
    # The free queue was not held up: its 16 jobs were done while limited ones still waited
    # (16 limited starts need at least three more windows after the first).
    last_free = max(i for i, queue in enumerate(finished) if queue == "free")
    assert finished[:last_free + 1].count("limited") < 16
    starts = []
    for job in jobs:
        await job.refresh()
        assert job.state is JobState.COMPLETED and job.started_at is not None
        starts.append(round(job.started_at * 1000))
    assert most_in_any_window(starts, 300) <= 4


async def test_concurrency_limit_holds_across_worker_connections(
    url: str, client: Client
) -> None:
    queue = client.queue("capped")
    assert (await queue.set_concurrency(2)).concurrency == 2
    running_now = peak = done = 0

    async def work(job: JobContext) -> None:
        nonlocal running_now, peak, done
        running_now += 1
        peak = max(peak, running_now)
        await asyncio.sleep(0.05)
        running_now -= 1
        done += 1

    await queue.add_bulk([("work", i) for i in range(12)])
    workers = [make_worker(url, "capped", work, concurrency=4) for _ in range(3)]
    async with running(workers[0]), running(workers[1]), running(workers[2]):
        await until(lambda: done == 12, 30)
    assert peak == 2
    assert (await queue.clear_concurrency()).concurrency is None


async def test_rate_limited_returns_the_job_to_delayed_without_an_attempt(
    url: str, client: Client
) -> None:
    queue = client.queue("downstream")
    calls: list[str] = []

    async def send(job: JobContext) -> None:
        calls.append(job.id)
        raise RateLimited(60, pause_queue=job.data == "pause")

    plain = await queue.add("send", "plain", attempts=1)
    async with running(make_worker(url, "downstream", send)):
        await until(lambda: len(calls) == 1)
        await until(lambda: state_is(plain, JobState.DELAYED))
    await plain.refresh()
    assert plain.state is JobState.DELAYED and plain.attempts == 0  # attempts=1 not used up
    assert (await queue.limits()).paused_until is None

    paused = await queue.add("send", "pause")
    async with running(make_worker(url, "downstream", send)):
        await until(lambda: len(calls) == 2)
        await until(lambda: state_is(paused, JobState.DELAYED))
        limits = await queue.limits()
        assert limits.paused_until is not None
        other = await queue.add("send", "after")
        # The queue is paused for every worker: the other job is not handed out.
        await asyncio.sleep(0.3)
        await other.refresh()
        assert other.state is JobState.WAITING and len(calls) == 2
        await queue.resume()  # lifts the pause
        await until(lambda: len(calls) == 3)
    assert (await queue.limits()).paused_until is None


async def test_limits_and_pause_survive_a_restart(start_broker: Any) -> None:
    broker = await start_broker()
    url = f"jobwire://{broker.host}:{broker.port}"
    async with Client(url) as client:
        queue = client.queue("kept")
        await queue.set_rate_limit(10, 1)
        await queue.set_concurrency(3)
        job = await queue.add("x")

        async def not_now(ctx: JobContext) -> None:
            raise RateLimited(600, pause_queue=True)

        async with running(make_worker(url, "kept", not_now)):
            await until(lambda: state_is(job, JobState.DELAYED))
        before = await queue.limits()
    data_dir = broker.data_dir
    await broker.stop()
    again = await start_broker(data_dir=data_dir)
    async with Client(f"jobwire://{again.host}:{again.port}") as client:
        after = await client.queue("kept").limits()
    assert after == before
    assert after.rate_max == 10 and after.concurrency == 3 and after.paused_until is not None


@pytest.mark.parametrize(("call", "field"), [
    (lambda q: q.set_rate_limit(0, 1), "rate.max"),
    (lambda q: q.set_rate_limit(-5, 1), "rate.max"),
    (lambda q: q.set_rate_limit(10, 0.0001), "rate.period_ms"),
    (lambda q: q.set_rate_limit(10, 400 * 86_400), "rate.period_ms"),
    (lambda q: q.set_concurrency(0), "concurrency"),
    (lambda q: q.set_concurrency(-1), "concurrency"),
])
async def test_bad_limits_name_the_field(client: Client, call: Any, field: str) -> None:
    with pytest.raises(BadArgumentError) as caught:
        await call(client.queue("q"))
    assert field in caught.value.message
    assert await client.queue("q").limits() == QueueLimits(None, None, None, None, None)
