"""The worker with real processes: ``jobwire worker`` shut down by SIGTERM without losing jobs,
and a worker that keeps going while the broker is killed (SIGKILL) and restarted under it."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import textwrap
from pathlib import Path

from client import Client, JobContext, JobState, Queue, Worker
from tests.conftest import BrokerProcess, jobwire_command
from tests.tools.clienttools import until

HANDLERS = textwrap.dedent("""
    import asyncio
    import pathlib

    LOG = pathlib.Path(__file__).with_name("started.log")

    async def slow(job):
        with LOG.open("a") as log:
            log.write(job.id + "\\n")
        await asyncio.sleep(job.data["seconds"])
        return {"slept": job.data["seconds"]}

    handlers = {"slow": slow}
""")


def url_of(broker: BrokerProcess) -> str:
    return f"jobwire://{broker.host}:{broker.port}"


async def test_sigterm_finishes_running_jobs_and_loses_none(
    broker_process: BrokerProcess, tmp_path: Path
) -> None:
    (tmp_path / "tasks_sigterm.py").write_text(HANDLERS)
    started_log = tmp_path / "started.log"
    async with Client(url_of(broker_process)) as client:
        queue = client.queue("proc")
        jobs = await queue.add_bulk([("slow", {"seconds": 0.5})] * 6)
        worker = await asyncio.create_subprocess_exec(
            *jobwire_command(), "worker", "tasks_sigterm:handlers", "--queue", "proc",
            "--concurrency", "3", "--grace", "20", "--url", url_of(broker_process),
            cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        )
        try:
            await until(lambda: started_log.exists()
                        and len(started_log.read_text().split()) >= 3, 30)
            worker.send_signal(signal.SIGTERM)
            output, _ = await asyncio.wait_for(worker.communicate(), 30)
        finally:
            if worker.returncode is None:
                worker.kill()
                await worker.wait()
        assert worker.returncode == 0, output.decode()
        started = set(started_log.read_text().split())
        states = {}
        for job in jobs:
            await job.refresh()
            states[job.id] = job.state
        # every job that started finished; the rest still wait; nothing is lost or active
        assert started and all(states[i] is JobState.COMPLETED for i in started), states
        assert all(s in (JobState.COMPLETED, JobState.WAITING) for s in states.values()), states
        assert (await queue.stats()).active == 0


async def test_worker_survives_a_broker_restart(broker_process: BrokerProcess) -> None:
    total = 300
    handled = 0

    async def work(job: JobContext) -> int:
        nonlocal handled
        handled += 1
        await asyncio.sleep(0.005)
        return int(job.data)

    worker = Worker(url_of(broker_process), "restart", work, concurrency=20,
                    handle_signals=False, poll_wait=0.5, reconnect_cap=0.2)
    async with Client(url_of(broker_process), reconnect_cap=0.2) as client:
        queue = client.queue("restart", attempts=10, backoff={"type": "fixed", "delay": 0})
        jobs = await queue.add_bulk([("w", i) for i in range(total)])
        task = asyncio.create_task(worker.run())
        try:
            await until(lambda: handled >= total // 3, 30)
            broker_process.kill()
            await asyncio.to_thread(broker_process.start)
            await until(lambda: _completed(queue, total), 60)
        finally:
            await worker.close()
            await asyncio.wait_for(task, 30)
        results = [await job.wait(timeout=10) for job in jobs]
        assert results == list(range(total))
        stats = worker.statistics()
        assert stats.connection.connects >= 2
        assert (await queue.stats()).active == 0


async def _completed(queue: Queue, total: int) -> bool:
    return (await queue.stats()).total_completed >= total


def test_worker_command_reports_bad_targets(tmp_path: Path) -> None:
    for target, message in (("nomodule_xyz:handler", "cannot import"),
                            ("json:no_such_attr", "has no attribute"),
                            ("json", "MODULE:ATTRIBUTE"),
                            ("json:__doc__", "not a function")):
        done = subprocess.run([*jobwire_command(), "worker", target, "--url",
                               "jobwire://127.0.0.1:1"], cwd=tmp_path, capture_output=True,
                              text=True, timeout=60)
        assert done.returncode == 2, done
        assert message in done.stderr and done.stderr.startswith("jobwire: error:")


async def test_an_ack_for_a_lease_from_before_a_restart_is_refused_and_logged(
    broker_process: BrokerProcess,
) -> None:
    release = asyncio.Event()
    attempts: list[int] = []

    async def handler(job: JobContext) -> str:
        attempts.append(job.attempt)
        if job.attempt == 1:
            await release.wait()  # still running while the broker restarts
        return f"attempt {job.attempt}"

    worker = Worker(url_of(broker_process), "stale-restart", handler, handle_signals=False,
                    poll_wait=0.5, reconnect_cap=0.1)
    async with Client(url_of(broker_process), reconnect_cap=0.1) as client:
        job = await client.queue("stale-restart", backoff={"type": "fixed", "delay": 0}).add("h")
        task = asyncio.create_task(worker.run())
        try:
            await until(lambda: attempts == [1])
            broker_process.kill()
            await asyncio.to_thread(broker_process.start)
            await until(lambda: worker.connection.statistics().connects == 2)
            release.set()  # the old lease is stale now: the broker must refuse this ack
            await until(lambda: worker.statistics().refused == 1)
            assert await job.wait(timeout=30) == "attempt 2"
        finally:
            await worker.close()
            await asyncio.wait_for(task, 30)
    assert attempts == [1, 2]
    assert job.attempts == 2 and worker.statistics().completed == 1


WORKER_MODULE = textwrap.dedent("""
    import gc
    import os
    from client import Worker

    async def double(job):
        return job.data * 2

    async def frozen(job):  # the CLI froze what existed when it started the worker
        return gc.get_freeze_count()

    worker = Worker(os.environ["JOBWIRE_URL"], "configured", {"double": double, "frozen": frozen},
                    concurrency=4, grace=5)
""")


async def test_worker_command_runs_a_configured_worker_instance(
    broker_process: BrokerProcess, tmp_path: Path
) -> None:
    (tmp_path / "configured_worker.py").write_text(WORKER_MODULE)
    env = {**os.environ, "JOBWIRE_URL": url_of(broker_process)}
    refused = await asyncio.create_subprocess_exec(
        *jobwire_command(), "worker", "configured_worker:worker", "-q", "x", cwd=tmp_path,
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )
    _, refused_err = await asyncio.wait_for(refused.communicate(), 60)
    assert refused.returncode == 2 and b"drop --queue" in refused_err
    proc = await asyncio.create_subprocess_exec(
        *jobwire_command(), "worker", "configured_worker:worker", cwd=tmp_path, env=env,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )
    try:
        async with Client(url_of(broker_process)) as client:
            job = await client.queue("configured").add("double", 21)
            assert await job.wait(timeout=30) == 42
            frozen = await client.queue("configured").add("frozen", None)
            assert await frozen.wait(timeout=30) > 1000  # the imports, out of the GC's scans
        proc.send_signal(signal.SIGTERM)
        await asyncio.wait_for(proc.communicate(), 30)
        assert proc.returncode == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
