"""Flow control with real processes: issue 13's Done-when run (``jobwire worker --processes 3``:
three worker processes with a connection each, a queue limited to 10/s, 100 jobs), limits and
pauses across a SIGKILL of the broker, and ``jobwire limit``."""

from __future__ import annotations

import asyncio
import io
import json
import subprocess
import textwrap
from pathlib import Path

from client import Client, JobState, QueueLimits
from client.cli import main
from protocol.model import ReleaseItem
from protocol.operations import Release, Reserve
from protocol.replies import parse_reserved
from tests.conftest import BrokerProcess, jobwire_command
from tests.tools.clienttools import until

HANDLERS = textwrap.dedent("""
    async def send(job):
        return None

    handlers = {"send": send}
""")


def url_of(broker: BrokerProcess) -> str:
    return f"jobwire://{broker.host}:{broker.port}"


def most_in_any_window(starts_ms: list[int], period_ms: int) -> int:
    """The most starts in any window ``[t, t + period_ms)`` (the worst one begins at a start)."""
    starts_ms = sorted(starts_ms)
    return max(sum(1 for s in starts_ms if t <= s < t + period_ms) for t in starts_ms)


async def test_three_worker_processes_at_10_per_second_never_pass_the_limit(
    broker_process: BrokerProcess, tmp_path: Path
) -> None:
    """Issue 13's Done-when: no 1 s window with more than 10 starts; the run takes 9-11 s."""
    (tmp_path / "tasks_flow.py").write_text(HANDLERS)
    url = url_of(broker_process)
    async with Client(url) as client:
        queue = client.queue("sms")
        await queue.set_rate_limit(10, 1)
        # One supervisor, three child processes: to the broker, three separate workers.
        supervisor = await asyncio.create_subprocess_exec(
            *jobwire_command(), "worker", "tasks_flow:handlers", "--queue", "sms",
            "--concurrency", "8", "--processes", "3", "--url", url, cwd=tmp_path,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        try:
            await until(lambda: _workers(client, 3), 30)
            jobs = await queue.add_bulk([("send", i) for i in range(100)])
            await until(lambda: _completed(queue, 100), 60)
        finally:
            supervisor.terminate()
            assert await supervisor.wait() == 0
        starts, finishes = [], []
        for job in jobs:
            await job.refresh()
            assert job.state is JobState.COMPLETED
            assert job.started_at is not None and job.finished_at is not None
            starts.append(round(job.started_at * 1000))
            finishes.append(round(job.finished_at * 1000))
    assert most_in_any_window(starts, 1_000) <= 10
    run_seconds = (max(finishes) - min(starts)) / 1000
    assert 9 <= run_seconds <= 11, run_seconds


async def _workers(client: Client, count: int) -> bool:
    return len({w["client"] for w in await client.workers()}) >= count


async def _completed(queue: object, count: int) -> bool:
    stats = await queue.stats()  # type: ignore[attr-defined]
    return bool(stats.completed == count)


async def test_limits_and_pauses_survive_sigkill(broker_process: BrokerProcess) -> None:
    url = url_of(broker_process)
    async with Client(url, reconnect=False) as client:
        limited, paused, not_now = (client.queue(n) for n in ("limited", "paused", "not-now"))
        await limited.set_rate_limit(10, 1)
        await limited.set_concurrency(2)
        await paused.pause()
        await not_now.add("x")
        body = await client.connection.request(Reserve(("not-now",), 1, 0, None))
        job = parse_reserved(body)[0]
        await client.connection.request(
            Release((ReleaseItem(job.job_id, job.token, 3_600_000, True),)))
        before = await not_now.limits()
    broker_process.kill()
    broker_process.start()
    async with Client(url) as client:
        assert await client.queue("limited").limits() == QueueLimits(10, 1.0, 2, None)
        assert (await client.queue("paused").stats()).paused
        after = await client.queue("not-now").limits()
        assert after == before and after.paused_until is not None
        info = await client.get_job(job.job_id)
        assert info.state is JobState.DELAYED and info.attempts == 0


async def cli(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = await asyncio.to_thread(main, list(argv), stdout=out, stderr=err)
    return code, out.getvalue(), err.getvalue()


async def test_jobwire_limit(broker_process: BrokerProcess) -> None:
    url = ["--url", url_of(broker_process)]
    assert await cli("limit", "sms", *url) == (0, "sms: no limits\n", "")
    code, out, _ = await cli("limit", "sms", "--rate", "10/1s", "--concurrency", "3", *url)
    assert (code, out) == (0, "sms: rate 10 per 1s, concurrency 3\n")
    code, out, _ = await cli("limit", "sms", "--rate", "100/m", "--json", *url)
    assert code == 0 and json.loads(out) == {
        "queue": "sms", "rate_max": 100, "rate_period": 60.0, "concurrency": 3,
        "paused_until": None, "rate_free_at": None,
    }
    assert (await cli("limit", "sms", "--clear", *url))[:2] == (0, "sms: no limits\n")
    code, _, err = await cli("limit", "sms", "--rate", "0/1s", *url)
    assert code == 1 and "rate.max" in err
    code, _, err = await cli("limit", "sms", "--concurrency", "0", *url)
    assert code == 1 and "concurrency" in err
    code, _, err = await cli("limit", "sms", "--clear", "--concurrency", "2", *url)
    assert code == 1 and "--clear" in err
