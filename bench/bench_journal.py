"""Journal alone: rows/s of 1,000-row transactions (insert, update, delete), group commit, load.

Run: ``.venv/bin/python -m bench.bench_journal [--jobs 200000] [--batch 1000] [--sync full]
[--producers 8] [--load 1000000] [--dir DIR]``. The group-commit figure has ``--producers``
tasks each enqueue 100 jobs and wait for the commit, again and again, through ``GroupCommitter``
(no core, no network: the journal's share of an end-to-end enqueue). The database goes to a
temporary directory under ``--dir`` (default: the current directory, so the figure reflects the
real disk, not tmpfs).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path

from broker.committer import GroupCommitter
from broker.core import Changes, Snapshot
from broker.jobs import NO_OPTIONS, Job
from broker.journal import Journal, SyncMode
from broker.log import configure_logging
from protocol.model import JobState

PAYLOAD = b"p" * 100
NOW = 1_700_000_000_000


def make_job(seq: int) -> Job:
    return Job(
        seq, str(seq), "bench", "work", PAYLOAD, priority=0, run_at=NOW, max_attempts=3,
        options=NO_OPTIONS, state=JobState.WAITING, created_at=NOW,
    )


async def timed_batches(journal: Journal, batches: list[Changes]) -> float:
    started = time.perf_counter()
    for changes in batches:
        await journal.write(changes)
    return time.perf_counter() - started


async def run(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        path = Path(tmp) / "bench.db"
        journal = await Journal.open(path, sync=SyncMode(args.sync))
        try:
            jobs = [make_job(seq) for seq in range(1, args.jobs + 1)]
            chunks = [jobs[i : i + args.batch] for i in range(0, len(jobs), args.batch)]

            def as_changes(chunk: list[Job], delete: bool = False) -> Changes:
                return Changes(
                    jobs={job.seq: None if delete else job for job in chunk}, queues={}
                )

            seconds = await timed_batches(journal, [as_changes(c) for c in chunks])
            report("insert", len(jobs), len(chunks), seconds)
            for job in jobs:
                job.state = JobState.ACTIVE
                job.attempts = 1
                job.started_at = NOW
            seconds = await timed_batches(journal, [as_changes(c) for c in chunks])
            report("update", len(jobs), len(chunks), seconds)
            seconds = await timed_batches(journal, [as_changes(c, delete=True) for c in chunks])
            report("delete", len(jobs), len(chunks), seconds)
            if args.load:
                await fill(journal, args.load, args.batch * 10)
                await journal.checkpoint(truncate=True)  # as a restart after a clean shutdown
                started = time.perf_counter()
                cpu_started = time.process_time()
                snapshot: Snapshot = await journal.load()
                seconds = time.perf_counter() - started
                cpu_seconds = time.process_time() - cpu_started
                print(f"load      {len(snapshot.jobs):>9,} jobs in {seconds:.2f} s "
                      f"({len(snapshot.jobs) / seconds:,.0f} jobs/s; {cpu_seconds:.2f} s of CPU, "
                      "all threads: the figure for an idle machine)")
            if args.producers:
                await group_commit(journal, args.jobs, args.producers)
            started = time.perf_counter()
            await journal.checkpoint(truncate=True)
            print(f"checkpoint (truncate) {time.perf_counter() - started:.3f} s; "
                  f"db {path.stat().st_size >> 20} MiB")
        finally:
            await journal.close()


async def group_commit(journal: Journal, count: int, producers: int) -> None:
    pending: dict[int, Job | None] = {}
    next_seq = 10_000_000

    def take_changes() -> Changes:
        nonlocal pending
        taken, pending = pending, {}
        return Changes(jobs=taken, queues={})

    committer = GroupCommitter(journal, take_changes)
    loop = asyncio.get_running_loop()

    async def producer(batches: int) -> None:
        nonlocal next_seq
        for _ in range(batches):
            for _ in range(100):
                job = make_job(next_seq)
                next_seq += 1
                pending[job.seq] = job
            done: asyncio.Future[BaseException | None] = loop.create_future()
            committer.after_commit(done.set_result)
            if (error := await done) is not None:
                raise error

    before = journal.transactions
    started = time.perf_counter()
    async with asyncio.TaskGroup() as tasks:
        runner = tasks.create_task(committer.run())
        await asyncio.gather(*(producer(count // 100 // producers) for _ in range(producers)))
        runner.cancel()
    seconds = time.perf_counter() - started
    transactions = journal.transactions - before
    jobs = count // 100 // producers * 100 * producers
    print(f"group     {jobs / seconds:>9,.0f} jobs/s  {producers} producers x 100-job batches, "
          f"{jobs / transactions:,.0f} jobs per transaction")


async def fill(journal: Journal, count: int, batch: int) -> None:
    for start in range(1, count + 1, batch):
        chunk = [make_job(seq) for seq in range(start, min(count + 1, start + batch))]
        await journal.write(Changes(jobs={job.seq: job for job in chunk}, queues={}))


def report(what: str, rows: int, transactions: int, seconds: float) -> None:
    print(f"{what:<9} {rows / seconds:>9,.0f} rows/s  "
          f"{seconds / transactions * 1000:.2f} ms per {rows // transactions}-row transaction")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--jobs", type=int, default=200_000)
    parser.add_argument("--batch", type=int, default=1_000)
    parser.add_argument("--sync", choices=[m.value for m in SyncMode], default="full")
    parser.add_argument("--producers", type=int, default=8,
                        help="group-commit producers (0 skips that part)")
    parser.add_argument("--load", type=int, default=0, help="also time load() of this many jobs")
    parser.add_argument("--dir", default=".", help="where the temporary database goes")
    parser.add_argument("--log-level", choices=("debug", "info", "warning", "error"),
                        default="warning", help="the journal's own log lines, on stderr "
                                                "(default warning: no checkpoint chatter)")
    args = parser.parse_args()
    configure_logging(args.log_level, stream=sys.stderr)
    asyncio.run(run(args))


if __name__ == "__main__":
    main()
