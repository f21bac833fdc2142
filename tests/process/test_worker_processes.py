"""``jobwire worker --processes N`` with real processes (issue 13, item 6): both children serve
jobs; a child killed with SIGKILL is replaced and no job is lost; SIGTERM to the supervisor
stops every child gracefully and exits 0; a supervisor killed with SIGKILL leaves no orphans.
And ``ProcessSupervisor`` itself on trivial children: capped, doubling restarts; exit status 2
stops it; a child that ignores SIGTERM is killed after the grace."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import BinaryIO

import psutil

from client import Client, JobState, Queue
from client.processes import ProcessSupervisor
from tests.conftest import BrokerProcess, jobwire_command
from tests.tools.clienttools import until

HANDLERS = textwrap.dedent("""
    import os
    import time

    def where(job):
        time.sleep(job.data)
        return os.getpid()

    handlers = {"where": where}
""")


def url_of(broker: BrokerProcess) -> str:
    return f"jobwire://{broker.host}:{broker.port}"


def alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie waiting for its parent's ``wait`` has stopped)."""
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def children_of(pid: int) -> list[int]:
    try:
        return [child.pid for child in psutil.Process(pid).children() if alive(child.pid)]
    except psutil.NoSuchProcess:
        return []


@asynccontextmanager
async def supervisor(tmp_path: Path, broker: BrokerProcess, *flags: str,
                     processes: int = 2) -> AsyncIterator[asyncio.subprocess.Process]:
    """``jobwire worker tasks_procs:handlers --processes N`` with both children connected."""
    (tmp_path / "tasks_procs.py").write_text(HANDLERS)
    output = _create(tmp_path / "supervisor.log")
    proc = await asyncio.create_subprocess_exec(
        *jobwire_command(), "worker", "tasks_procs:handlers", "--processes", str(processes),
        "--url", url_of(broker), *flags, cwd=tmp_path, stdout=output, stderr=subprocess.STDOUT,
    )
    started: list[int] = []
    try:
        async with Client(url_of(broker)) as client:
            await until(lambda: len(children_of(proc.pid)) == processes, 30)
            await until(lambda: _workers(client, processes), 30)
        started = children_of(proc.pid)
        yield proc
    finally:
        # A failed test must not leave workers behind (orphans included, if that is the bug).
        for pid in {*started, *children_of(proc.pid)}:
            if alive(pid):
                os.kill(pid, signal.SIGKILL)
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        output.close()


def _create(path: Path) -> BinaryIO:
    return path.open("wb")


async def _workers(client: Client, count: int) -> bool:
    return len(await client.workers()) >= count


async def _all_completed(queue: Queue, count: int) -> bool:
    return (await queue.stats()).total_completed >= count


async def test_two_children_serve_and_a_killed_one_is_replaced_without_losing_jobs(
    broker_process: BrokerProcess, tmp_path: Path
) -> None:
    async with supervisor(tmp_path, broker_process, "-q", "procs", "-c", "2") as proc, \
            Client(url_of(broker_process)) as client:
        queue = client.queue("procs", attempts=5, backoff={"type": "fixed", "delay": 0})
        first = children_of(proc.pid)
        jobs = await queue.add_bulk([("where", 0.1)] * 60)
        await until(lambda: _all_completed(queue, 10), 30)
        os.kill(first[0], signal.SIGKILL)
        await until(lambda: len(set(children_of(proc.pid)) - set(first)) == 1, 30)
        replacement = (set(children_of(proc.pid)) - set(first)).pop()
        await until(lambda: _all_completed(queue, 60), 60)
        # At least once: every job completed, none failed, whatever the kill interrupted.
        pids = {await job.wait(timeout=10) for job in jobs}
        assert len(pids) >= 2 and pids <= {*first, replacement}, (first, pids)
        assert (await queue.stats()).failed == 0
        # The replacement serves too: a second batch keeps both children's two slots busy.
        await until(lambda: _workers(client, 2), 30)
        more = await queue.add_bulk([("where", 0.2)] * 12)
        assert replacement in {await job.wait(timeout=30) for job in more}
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), 30) == 0
    log = (tmp_path / "supervisor.log").read_text()
    assert "worker process exited, restarting it" in log and "killed by SIGKILL" in log, log


async def test_sigterm_stops_every_child_gracefully_and_exits_0(
    broker_process: BrokerProcess, tmp_path: Path
) -> None:
    async with supervisor(tmp_path, broker_process, "-q", "grace", "-c", "1",
                          "--grace", "20") as proc, Client(url_of(broker_process)) as client:
        queue = client.queue("grace")
        children = children_of(proc.pid)
        jobs = await queue.add_bulk([("where", 1.0)] * 2)
        await until(lambda: _active(queue, 2), 30)
        proc.send_signal(signal.SIGTERM)
        # Generous bound: the children's grace is 20 s; the handlers need 1 s of it.
        assert await asyncio.wait_for(proc.wait(), 30) == 0
        assert not [pid for pid in children if alive(pid)]
        # Graceful: the running jobs finished inside the grace and were not handed back.
        for job in jobs:
            await job.refresh()
            assert job.state is JobState.COMPLETED and job.attempts == 1, job


async def test_a_second_sigterm_skips_the_grace_and_hands_the_jobs_back(
    broker_process: BrokerProcess, tmp_path: Path
) -> None:
    async with supervisor(tmp_path, broker_process, "-q", "twice", "-c", "1",
                          "--grace", "60") as proc, Client(url_of(broker_process)) as client:
        queue = client.queue("twice")
        jobs = await queue.add_bulk([("where", 30.0)] * 2)
        await until(lambda: _active(queue, 2), 30)
        proc.send_signal(signal.SIGTERM)
        await asyncio.sleep(0.3)
        proc.send_signal(signal.SIGTERM)
        # Generous bound, far below the 60 s grace and the 30 s handlers: the grace was skipped.
        assert await asyncio.wait_for(proc.wait(), 20) == 0
        for job in jobs:  # handed back: waiting again, the attempt not counted
            await job.refresh()
            assert job.state is JobState.WAITING and job.attempts == 0, job
    assert "killed by" not in (tmp_path / "supervisor.log").read_text()


async def _active(queue: Queue, count: int) -> bool:
    return (await queue.stats()).active >= count


async def test_a_sigkilled_supervisor_leaves_no_orphans(
    broker_process: BrokerProcess, tmp_path: Path
) -> None:
    async with supervisor(tmp_path, broker_process, "-q", "orphans") as proc, \
            Client(url_of(broker_process)) as client:
        queue = client.queue("orphans")
        children = children_of(proc.pid)
        job = await queue.add("where", 1.0)
        await until(lambda: _active(queue, 1), 30)
        proc.kill()
        await proc.wait()
        # The children see their lifeline's end-of-file and stop; the running job finishes.
        await until(lambda: not [pid for pid in children if alive(pid)], 15)
        assert await job.wait(timeout=10) in children
    assert "supervisor process gone: stopping" in (tmp_path / "supervisor.log").read_text()


# --------------------------------------------------------------------------- the supervisor alone


class Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


async def test_a_child_that_keeps_dying_is_restarted_with_capped_doubling_delays() -> None:
    records = Records()
    logger = logging.getLogger("jobwire.processes")
    logger.addHandler(records)
    logger.setLevel(logging.INFO)
    sup = ProcessSupervisor([sys.executable, "-c", "raise SystemExit(3)"], 1, 1.0,
                            restart_base=0.02, restart_cap=0.16, handle_signals=False)
    try:
        task = asyncio.create_task(sup.run())
        await until(lambda: sup.restarts >= 7, 60)
        sup.stop()
        assert await asyncio.wait_for(task, 30) == 0
    finally:
        logger.removeHandler(records)
    restarts = [r for r in records.records
                if r.getMessage() == "worker process exited, restarting it"]
    assert all(r.exit == "exit status 3" for r in restarts)  # type: ignore[attr-defined]
    delays = [r.delay for r in restarts]  # type: ignore[attr-defined]
    for attempt, delay in enumerate(delays[:7]):
        ceiling = min(0.16, 0.02 * 2 ** attempt)
        assert ceiling / 2 - 0.001 <= delay <= ceiling + 0.001, (attempt, delays)


async def test_exit_status_2_stops_the_supervisor_without_restarts() -> None:
    sup = ProcessSupervisor([sys.executable, "-c", "raise SystemExit(2)"], 2, 1.0,
                            restart_base=0.01, handle_signals=False)
    assert await asyncio.wait_for(sup.run(), 30) == 2
    assert sup.restarts == 0 and sup.pids == []


async def test_a_child_that_ignores_sigterm_is_killed_after_the_grace(tmp_path: Path) -> None:
    ready = tmp_path / "ready"
    script = ("import signal, sys, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
              "open(sys.argv[1], 'w').close(); time.sleep(60)")
    sup = ProcessSupervisor([sys.executable, "-c", script, str(ready)], 1, 0.2,
                            kill_margin=0.2, handle_signals=False)
    task = asyncio.create_task(sup.run())
    await until(ready.exists, 30)
    [pid] = sup.pids
    sup.stop()
    assert await asyncio.wait_for(task, 30) == 0
    assert not alive(pid) and sup.restarts == 0
