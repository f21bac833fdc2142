"""Repeatable jobs (job schedulers) against a real broker (in-process, port 0): upsert is
idempotent by key, each occurrence is one delayed job ``repeat:<key>:<ms>``, remove deletes the
pending run, schedulers survive a restart with one catch-up run and no burst, and bad input
names its field.

Assertions are on the broker's records (job ids, run times, counts), never on speed.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta
from itertools import pairwise
from typing import Any

import pytest

from client import Client, JobState, SyncClient
from client.errors import BadArgumentError
from tests.tools.clienttools import until


async def repeat_jobs(client: Client, queue: str, key: str) -> list[Any]:
    page = await client.queue(queue).jobs(list(JobState), limit=1000)
    return sorted((job for job in page.jobs if job.id.startswith(f"repeat:{key}:")),
                  key=lambda job: job.id)


async def test_upsert_is_idempotent_and_makes_one_job_per_occurrence(client: Client) -> None:
    queue = client.queue("ticks")
    first = await queue.upsert_scheduler("tick", every=0.2, data={"n": 1})
    assert first.created and first.changed and first.count == 1
    again = [await queue.upsert_scheduler("tick", every=0.2, data={"n": 1}) for _ in range(4)]
    assert all(not s.created and not s.changed for s in again)
    listed = await queue.schedulers()
    assert [(s.key, s.every, s.data) for s in listed] == [("tick", 0.2, {"n": 1})]
    assert listed[0].next_run is not None

    async def made_five() -> bool:
        return len(await repeat_jobs(client, "ticks", "tick")) >= 5

    await until(made_five, limit=20)
    jobs = await repeat_jobs(client, "ticks", "tick")
    times = sorted(int(job.id.rsplit(":", 1)[1]) for job in jobs)
    assert len(set(times)) == len(times)
    assert all(b - a == 200 for a, b in pairwise(times))  # one period apart
    assert sum(1 for job in jobs if job.state is JobState.DELAYED) <= 1  # only the next run


async def test_changed_definition_replaces_the_pending_run(client: Client) -> None:
    queue = client.queue("reports")
    made = await queue.upsert_scheduler("daily", cron="0 9 * * *", tz="Europe/Berlin",
                                        name="report", attempts=3)
    pending = await repeat_jobs(client, "reports", "daily")
    assert [job.state for job in pending] == [JobState.DELAYED]
    assert made.next_run is not None and pending[0].id.endswith(str(round(made.next_run * 1000)))
    changed = await queue.upsert_scheduler("daily", cron="0 10 * * *", tz="Europe/Berlin",
                                           name="report", attempts=3)
    assert changed.changed and not changed.created and changed.count == 1
    assert changed.next_run == made.next_run + 3600
    now_pending = await repeat_jobs(client, "reports", "daily")
    assert [job.id for job in now_pending] == [f"repeat:daily:{round(changed.next_run * 1000)}"]
    assert await queue.remove_scheduler("daily") is True
    assert await queue.remove_scheduler("daily") is False
    assert await repeat_jobs(client, "reports", "daily") == []
    assert await queue.schedulers() == []


async def test_limit_and_template_options(client: Client) -> None:
    queue = client.queue("limited", attempts=4)
    await queue.upsert_scheduler("three", every=timedelta(milliseconds=50), limit=3,
                                 name="job", data=[1, 2], priority=5)

    async def done() -> bool:
        listed = await queue.schedulers()
        return listed[0].next_run is None

    await until(done, limit=20)
    jobs = await repeat_jobs(client, "limited", "three")
    assert len(jobs) == 3
    assert {(job.name, job.priority) for job in jobs} == {("job", 5)}
    info = (await queue.schedulers())[0]
    assert info.count == 3 and info.limit == 3


async def test_schedulers_survive_a_restart_with_one_catch_up_run(start_broker: Any) -> None:
    broker = await start_broker()
    async with Client(f"jobwire://{broker.host}:{broker.port}") as client:
        made = await client.queue("q").upsert_scheduler("slow", every=0.5)
    assert made.next_run is not None
    data_dir = broker.data_dir
    await broker.stop()
    await asyncio.sleep(1.6)  # about three periods missed while down
    again = await start_broker(data_dir=data_dir)
    async with Client(f"jobwire://{again.host}:{again.port}") as client:
        listed = await client.queue("q").schedulers()
        assert [s.key for s in listed] == ["slow"]
        jobs = await repeat_jobs(client, "q", "slow")
        times = [int(job.id.rsplit(":", 1)[1]) for job in jobs]
        # Before: the first run (due at once) and the next; after: the next after the restart.
        # The missed occurrences in between were not made (no burst).
        assert len(jobs) <= 3, times
        assert times[-1] > round(made.next_run * 1000) + 1000, times
        assert listed[0].next_run is not None and listed[0].next_run * 1000 == times[-1]


@pytest.mark.parametrize(("kwargs", "field"), [
    ({"every": 0.0001}, "every_ms"),
    ({"every": 400 * 86_400}, "every_ms"),
    ({"cron": "61 * * * *"}, "cron"),
    ({"cron": "not a pattern"}, "cron"),
    ({"cron": "0 0 30 2 *"}, "cron"),
    ({"cron": "R * * * *"}, "cron"),
    ({"cron": "0 9 * * *", "tz": "Mars/Olympus"}, "tz"),
    ({"every": 1, "tz": "Europe/Berlin"}, "tz"),
    ({"every": 1, "start": 100, "end": 50}, "end_ms"),
    ({"every": 1, "limit": 0}, "limit"),
    ({"every": 1, "data": b"x" * 2_000_000}, "job.payload"),
])
async def test_bad_schedulers_name_the_field(
    client: Client, kwargs: dict[str, Any], field: str
) -> None:
    with pytest.raises(BadArgumentError) as caught:
        await client.queue("q").upsert_scheduler("bad", **kwargs)
    assert str(caught.value).split(": ")[1] == field, str(caught.value)
    assert await client.queue("q").schedulers() == []


async def test_sync_client_twin(url: str) -> None:
    def run() -> tuple[Any, Any, bool]:
        with SyncClient(url) as sync:
            queue = sync.queue("sync")
            made = queue.upsert_scheduler("hourly", cron="0 * * * *", data="x")
            listed = queue.schedulers()
            return made, listed, queue.remove_scheduler("hourly")

    made, listed, removed = await asyncio.to_thread(run)
    assert made.created and [s.key for s in listed] == ["hourly"] and removed
