"""The journal's write path, for instruction counts: ``Journal.write`` of new jobs in 1,000-job
transactions (a bulk enqueue's commits) and of state changes in 50-job transactions (a drain's
commits), rows built from live jobs, SQLite included (its thread is counted too), with the
checkpoint at close. No timing: run it under ``valgrind --tool=cachegrind --cache-sim=no``;
instructions do not move with the load of a shared machine (times here do, by +-30%).

Usage: ``python -m bench.bench_journalpath JOBS MODE``, MODE ``none`` (the jobs are built and the
journal opened and closed, nothing written), ``enqueue`` (the jobs written as new rows) or
``update`` (and then JOBS state changes written over them). Instructions per job of a part =
(count of the mode with it - count of the mode before) / JOBS::

    for m in none enqueue update; do valgrind --tool=cachegrind --cache-sim=no \\
        --cachegrind-out-file=/dev/null python -m bench.bench_journalpath 20000 $m 2>&1 \\
        | grep refs
    done
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
from pathlib import Path

from broker.core import Changes
from broker.core_state import ACTIVE, COMPLETED, WAITING
from broker.jobs import NO_OPTIONS, Job
from broker.journal import Journal, SyncMode
from protocol.model import JobState

ENQUEUE_BATCH = 1_000
UPDATE_BATCH = 50
NOW = 1_700_000_000_000


def _job(seq: int, state: JobState, attempts: int = 0) -> Job:
    return Job(seq, str(seq), "q", "bench", bytes(100), priority=0, run_at=NOW, max_attempts=3,
               options=NO_OPTIONS, state=state, created_at=NOW, attempts=attempts,
               started_at=NOW + 1 if attempts else None)


async def _run(total: int, mode: str, directory: Path) -> None:
    # sync off: fsync is kernel time, which cachegrind does not count anyway
    journal = await Journal.open(directory / "jobwire.db", sync=SyncMode.OFF)
    try:
        for start in range(0, total, ENQUEUE_BATCH):
            jobs: dict[int, Job | None] = {
                seq: _job(seq, WAITING) for seq in range(start, start + ENQUEUE_BATCH)}
            if mode != "none":
                await journal.write(Changes(jobs, {}, start + ENQUEUE_BATCH, new_from=start))
        if mode == "update":
            for index, start in enumerate(range(0, total, UPDATE_BATCH)):
                state = COMPLETED if index % 2 else ACTIVE
                changed: dict[int, Job | None] = {
                    seq: _job(seq, state, 1) for seq in range(start, start + UPDATE_BATCH)}
                await journal.write(Changes(changed, {}, total, new_from=total))
    finally:
        await journal.close()


def main(argv: list[str]) -> int:
    total, mode = int(argv[0]), argv[1]
    if mode not in ("none", "enqueue", "update"):
        raise SystemExit(f"unknown mode {mode!r}: none, enqueue or update")
    with tempfile.TemporaryDirectory(prefix="jobwire-journalpath-") as directory:
        asyncio.run(_run(total, mode, Path(directory)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
