"""``list_jobs`` and the paged ``stats`` over TCP: bad input, the client's ``Queue.jobs``, and the
``jobwire stats`` / ``jobs`` / ``failed`` commands run in-process (in a thread: they run their
own event loop) against a broker on port 0."""

from __future__ import annotations

import asyncio
import io
import json
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from client import Client, JobPage, SyncClient
from client.cli import main as cli_main
from tests.conftest import RunningBroker
from tests.tools.wire import WireClient

Wire = Callable[..., Awaitable[WireClient]]


async def _cli(broker: RunningBroker, *argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    url = f"jobwire://{broker.host}:{broker.port}"
    code = await asyncio.to_thread(cli_main, [*argv, "--url", url], stdout=out, stderr=err)
    return code, out.getvalue(), err.getvalue()


@pytest.mark.parametrize(("args", "field"), [
    ({"queue": "q", "states": ["waiting", "sleeping"]}, "states[1]"),
    ({"queue": "q", "states": ["waiting", "waiting"]}, "states"),
    ({"queue": "q", "states": []}, "states"),
    ({"queue": "q"}, "states"),
    ({"queue": "q", "states": "waiting", "offset": -1}, "offset"),
    ({"queue": "q", "states": "waiting", "limit": 1001}, "limit"),
    ({"queue": "q", "states": "waiting", "limit": 0}, "limit"),
])
async def test_list_jobs_refuses_bad_input_naming_the_field(
    broker: RunningBroker, wire: Wire, args: dict[str, Any], field: str
) -> None:
    client = await wire(broker)
    error = await client.error("list_jobs", args)
    assert error.code == "BAD_ARGUMENT"
    assert error.message.startswith(field)


@pytest.mark.parametrize(("args", "field"), [
    ({"offset": -1}, "offset"), ({"limit": 1001}, "limit"), ({"limit": 0}, "limit"),
])
async def test_stats_refuses_bad_paging(
    broker: RunningBroker, wire: Wire, args: dict[str, Any], field: str
) -> None:
    client = await wire(broker)
    error = await client.error("stats", args)
    assert error.code == "BAD_ARGUMENT"
    assert error.message.startswith(field)


async def test_queue_jobs_pages_every_state_with_the_holder(broker: RunningBroker) -> None:
    async with Client(f"jobwire://{broker.host}:{broker.port}") as client:
        queue = client.queue("q")
        jobs = [await queue.add("t", i, priority=i % 2) for i in range(6)]
        await queue.add("later", None, delay=60)
        page = await queue.jobs("waiting", offset=1, limit=2)
        assert page.total == 6
        # priority 0 first (jobs 0, 2, 4), FIFO within it: positions 1 and 2 are jobs 2 and 4
        assert [info.id for info in page.jobs] == [jobs[2].id, jobs[4].id]
        both = await queue.jobs(["delayed", "waiting"], limit=3)
        assert both.total == 7 and both.jobs[0].name == "later"
        assert (await client.queue("none").jobs("failed")).total == 0


async def test_active_jobs_list_their_connection(broker: RunningBroker, wire: Wire) -> None:
    worker = await wire(broker)
    await worker.ok("enqueue", {"queue": "q", "jobs": [[None, "t", b"1"], [None, "t", b"2"]]})
    await worker.ok("reserve", {"queues": ["q"], "max": 2, "lease_ms": 60_000})
    async with Client(f"jobwire://{broker.host}:{broker.port}") as client:
        page = await client.queue("q").jobs("active")
    assert page.total == 2 and len(page.jobs) == 2
    assert len(set(page.holders.values())) == 1  # both held by the worker's connection
    assert set(page.holders) == {info.id for info in page.jobs}


async def test_stats_of_10001_queues_lists_them_all(broker: RunningBroker, wire: Wire) -> None:
    client = await wire(broker)
    names = [f"q{i:05d}" for i in range(10_001)]
    for start in range(0, len(names), 500):
        await asyncio.gather(*(client.ok("pause", {"queue": n}) for n in names[start:start + 500]))
    first = await client.ok("stats", {})
    assert first["total"] == 10_001 and len(first["queues"]) == 1_000
    assert list(first["queues"]) == names[:1_000]  # creation order
    code, out, err = await _cli(broker, "stats", "--json")
    assert (code, err) == (0, "")
    assert sorted(json.loads(out)) == names
    async with Client(f"jobwire://{broker.host}:{broker.port}") as python_client:
        assert list(await python_client.stats()) == names


async def test_cli_jobs_and_failed_page(broker: RunningBroker, wire: Wire) -> None:
    client = await wire(broker)
    await client.ok("enqueue", {"queue": "q", "jobs": [[None, "t", b"x" * 10]] * 30})
    code, out, err = await _cli(broker, "jobs", "q", "--state", "waiting", "--limit", "5",
                                "--offset", "2", "--json")
    assert (code, err) == (0, "")
    listed = json.loads(out)
    assert listed["total"] == 30 and [job["id"] for job in listed["jobs"]] == [
        str(i) for i in range(3, 8)]
    code, out, _ = await _cli(broker, "jobs", "q", "--limit", "3")
    assert code == 0 and "(1..3 of 30)" in out
    code, _, err = await _cli(broker, "jobs", "q", "--limit", "5000")
    assert code == 1 and "limit" in err
    # 1,500 failed jobs with long errors: a frame holds fewer than 1,000, so --limit pages
    big = "e" * 20_000
    for _ in range(6):
        await client.ok("enqueue", {"queue": "f", "jobs": [[None, "t", b""]] * 250})
        taken = (await client.ok("reserve", {"queues": ["f"], "max": 250}))["jobs"]
        await client.ok("fail", {"items": [[job[0], job[6], big, False] for job in taken]})
    code, out, err = await _cli(broker, "failed", "f", "--limit", "1000", "--json")
    assert (code, err) == (0, "")
    failed = json.loads(out)
    assert failed["total"] == 1_500 and len(failed["jobs"]) == 1_000


async def test_a_stats_page_stays_within_a_small_frame(
    start_broker: Callable[..., Awaitable[RunningBroker]], wire: Wire
) -> None:
    broker = await start_broker(max_payload=1024, max_frame=64 * 1024)
    client = await wire(broker)
    names = [f"{i:04d}" + "n" * 196 for i in range(300)]  # 200 characters each
    await asyncio.gather(*(client.ok("pause", {"queue": name}) for name in names))
    first = await client.ok("stats", {})
    assert first["total"] == 300 and 0 < len(first["queues"]) < 300  # cut to the frame
    async with Client(f"jobwire://{broker.host}:{broker.port}") as python_client:
        assert list(await python_client.stats()) == names  # pages on with offset


async def test_sync_queue_jobs_and_stats(broker: RunningBroker) -> None:
    def run() -> tuple[JobPage, list[str]]:
        with SyncClient(f"jobwire://{broker.host}:{broker.port}") as client:
            queue = client.queue("s")
            for i in range(4):
                queue.add("t", i)
            client.queue("t").pause()
            return queue.jobs("waiting", offset=2, limit=5), list(client.stats())

    page, names = await asyncio.to_thread(run)
    assert page.total == 4
    assert [info.id for info in page.jobs] == ["3", "4"]
    assert names == ["s", "t"]
