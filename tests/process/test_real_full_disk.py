"""A real full disk: ``ENOSPC`` from a small tmpfs under a real ``jobwire serve`` (issue 18.4).

The other disk-full tests use ``PRAGMA max_page_count`` or ``RLIMIT_FSIZE``; here the WAL appends
and checkpoints hit a filesystem that is really out of space. Producers and a worker run until
writes fail, the broker is killed with SIGKILL while full, the filesystem is given room, and every
acknowledged enqueue and completion must be there after the restart.

Needs root (to mount a tmpfs); skipped with the reason otherwise.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from protocol.messages import ErrorReply
from tests.conftest import HOST
from tests.process.test_journal_faults import Daemon
from tests.tools.wire import R_ID, R_TOKEN, WireClient, job_spec

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="mounting a tmpfs needs root")


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    mount_point = tmp_path / "disk"
    mount_point.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount_point)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=False)


def grow(mount_point: Path, size: str) -> None:
    subprocess.run(["mount", "-o", f"remount,size={size}", str(mount_point)], check=True)


async def test_enospc_under_load_loses_nothing_acknowledged(small_disk: Path) -> None:
    daemon = Daemon(small_disk / "data")
    await asyncio.to_thread(daemon.start)
    try:
        producer = await WireClient.connect(HOST, daemon.port)
        worker = await WireClient.connect(HOST, daemon.port)
        enqueued: set[str] = set()
        completed: set[str] = set()
        refusals = 0
        for batch in range(400):  # about 4 MB of payloads: more than the disk holds
            ids = [f"job-{batch}-{i}" for i in range(10)]
            answer = await producer.call("enqueue", {"queue": "full", "jobs": [
                job_spec(job_id, payload=os.urandom(1_000)) for job_id in ids]})
            if isinstance(answer, ErrorReply):
                assert answer.code == "JOURNAL_FAILURE", answer
                refusals += 1
                if refusals >= 5:
                    break
                continue
            enqueued.update(ids)
            jobs = await worker.reserve("full", max_jobs=5)
            if jobs:
                acked = await worker.call("ack", {"items": [[j[R_ID], j[R_TOKEN], b"r"]
                                                            for j in jobs]})
                if not isinstance(acked, ErrorReply):
                    completed.update(j[R_ID] for j in jobs)
        assert refusals >= 5, "the disk never filled"
        assert enqueued and completed
        assert any(line.get("event") == "journal_failure" for line in daemon.lines)
        assert daemon.proc is not None and daemon.proc.poll() is None  # it kept running

        daemon.kill()  # kill -9 while the disk is full
        daemon.proc = None
        grow(small_disk, "64m")
        await asyncio.to_thread(daemon.start)
        client = await WireClient.connect(HOST, daemon.port)
        for job_id in sorted(enqueued):  # every acknowledged enqueue survived...
            state = (await client.get(job_id))["state"]
            if job_id in completed:  # ...and every acknowledged completion
                assert state == "completed", (job_id, state)
        await client.close()
        with contextlib.suppress(Exception):
            await producer.close()
            await worker.close()
    finally:
        daemon.kill()
