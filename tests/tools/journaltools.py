"""Helpers for the journal and committer tests: job factories and a stand-in for the core."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from broker.committer import GroupCommitter
from broker.core import Changes
from broker.jobs import NO_OPTIONS, Job
from protocol.model import JobState

NOW = 1_700_000_000_000
FIELDS = (
    "seq", "id", "queue", "name", "payload", "priority", "run_at", "max_attempts", "options",
    "state", "created_at", "attempts", "started_at", "finished_at", "progress", "result", "error",
)


def make_job(
    seq: int, *, queue: str = "q", name: str = "handler", payload: bytes = b"payload",
    **fields: Any,
) -> Job:
    values: dict[str, Any] = {
        "priority": 0, "run_at": NOW, "max_attempts": 3, "options": NO_OPTIONS,
        "state": JobState.WAITING, "created_at": NOW,
    }
    values.update(fields)
    return Job(seq, str(seq), queue, name, payload, **values)


def as_tuple(job: Job) -> tuple[Any, ...]:
    return tuple(getattr(job, name) for name in FIELDS)


def upserts(*jobs: Job) -> Changes:
    return Changes(jobs={job.seq: job for job in jobs}, queues={})


def deletes(*seqs: int) -> Changes:
    return Changes(jobs=dict.fromkeys(seqs), queues={})



class Source:
    """Stands in for the core's change log: jobs changed since the last ``take_changes``."""

    def __init__(self) -> None:
        self.pending = Changes(jobs={}, queues={})
        self.next_seq = 1
        self.taken = asyncio.Event()  # set whenever the committer takes a non-empty batch

    def new_job(self, **fields: Any) -> Job:
        job = make_job(self.next_seq, **fields)
        self.next_seq += 1
        self.pending.jobs[job.seq] = job
        return job

    def changed(self, job: Job) -> None:
        self.pending.jobs[job.seq] = job

    def deleted(self, seq: int) -> None:
        self.pending.jobs[seq] = None

    def take_changes(self) -> Changes:
        taken, self.pending = self.pending, Changes(jobs={}, queues={})
        taken.next_seq = self.next_seq
        if taken:
            self.taken.set()
        return taken



def failing(committer: GroupCommitter) -> bool:
    return committer.pending_failure  # a call, so mypy does not narrow it between asserts


async def commit(committer: GroupCommitter) -> BaseException | None:
    """Register one waiter and return what it is called with."""
    future: asyncio.Future[BaseException | None] = asyncio.get_running_loop().create_future()
    committer.after_commit(future.set_result)
    return await future



def file_size(path: Path) -> int:
    return path.stat().st_size if path.exists() else 0

