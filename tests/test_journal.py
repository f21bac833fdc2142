"""The SQLite journal and the group committer, against real database files in ``tmp_path``."""

from __future__ import annotations

import asyncio
import random
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from broker.committer import GroupCommitter
from broker.core import Changes, Core, CoreConfig, QueueMeta
from broker.jobs import NO_OPTIONS, Job, JobOptions
from broker.journal import Journal, JournalError, SyncMode
from protocol.messages import AckItem, Backoff, BackoffKind, JobSpec, JobState, Retention

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
    return Changes(jobs={job.id: job for job in jobs}, queues={})


def deletes(*job_ids: str) -> Changes:
    return Changes(jobs=dict.fromkeys(job_ids), queues={})


@pytest.fixture
async def journal(tmp_path: Path) -> AsyncIterator[Journal]:
    opened = await Journal.open(tmp_path / "jobwire.db")
    yield opened
    await opened.close()


class Source:
    """Stands in for the core's change log: jobs changed since the last ``take_changes``."""

    def __init__(self) -> None:
        self.pending = Changes(jobs={}, queues={})
        self.next_seq = 1
        self.taken = asyncio.Event()  # set whenever the committer takes a non-empty batch

    def new_job(self, **fields: Any) -> Job:
        job = make_job(self.next_seq, **fields)
        self.next_seq += 1
        self.pending.jobs[job.id] = job
        return job

    def changed(self, job: Job) -> None:
        self.pending.jobs[job.id] = job

    def deleted(self, job_id: str) -> None:
        self.pending.jobs[job_id] = None

    def take_changes(self) -> Changes:
        taken, self.pending = self.pending, Changes(jobs={}, queues={})
        taken.next_seq = self.next_seq
        if taken:
            self.taken.set()
        return taken


@pytest.fixture
async def committed(
    journal: Journal,
) -> AsyncIterator[tuple[Journal, Source, GroupCommitter]]:
    source = Source()
    committer = GroupCommitter(journal, source.take_changes, retry_delay=0.01)
    task = asyncio.create_task(committer.run())
    yield journal, source, committer
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


def failing(committer: GroupCommitter) -> bool:
    return committer.pending_failure  # a call, so mypy does not narrow it between asserts


async def commit(committer: GroupCommitter) -> BaseException | None:
    """Register one waiter and return what it is called with."""
    future: asyncio.Future[BaseException | None] = asyncio.get_running_loop().create_future()
    committer.after_commit(future.set_result)
    return await future


# --------------------------------------------------------------------------- round trips


async def test_every_field_round_trips(journal: Journal) -> None:
    options = JobOptions(
        backoff=Backoff(BackoffKind.FIXED, 250, 10_000, 0.5),
        lease_ms=90_000,
        keep_completed=Retention(10, None),
        keep_failed=Retention(None, 3_600_000),
    )
    jobs = [
        make_job(1, queue="émails ✉", name="send", payload=b"\x00\xff" * 50, priority=-5,
                 run_at=NOW + 5_000, max_attempts=7, options=options, state=JobState.DELAYED,
                 attempts=2, started_at=NOW + 1, error="boom: ✗"),
        make_job(2, state=JobState.ACTIVE, attempts=1, started_at=NOW + 2,
                 progress={"done": 3, "of": (1, 2.5, None, True, "x", b"raw")}),
        make_job(3, state=JobState.COMPLETED, attempts=1, started_at=NOW, finished_at=NOW + 9,
                 result=b"\x01result", progress=42, options=JobOptions(lease_ms=5)),
        make_job(4, state=JobState.FAILED, attempts=3, finished_at=NOW + 10, error="gave up",
                 options=JobOptions(backoff=Backoff(BackoffKind.EXPONENTIAL, 1, None, 0.0))),
        make_job(5, payload=b"", priority=2**40, run_at=2**62),
    ]
    jobs[1].lease_token = 12345
    jobs[1].lease_deadline = NOW + 30_000
    jobs[1].owner = 7
    await journal.write(upserts(*jobs))

    snapshot = await journal.load()

    assert [as_tuple(job) for job in snapshot.jobs] == [as_tuple(job) for job in jobs]
    assert snapshot.jobs[4].options is NO_OPTIONS
    # Leases never survive a restart; recovery deals with ACTIVE jobs.
    assert (snapshot.jobs[1].lease_token, snapshot.jobs[1].lease_deadline) == (None, None)
    assert snapshot.jobs[1].owner is None
    assert all(type(job.state) is JobState for job in snapshot.jobs)


async def test_names_and_equal_options_are_shared_after_load(journal: Journal) -> None:
    options = JobOptions(lease_ms=1_000)
    await journal.write(upserts(*(make_job(seq, queue="shared-" + "q", options=JobOptions(
        lease_ms=1_000)) for seq in range(1, 4))))

    jobs = (await journal.load()).jobs

    assert jobs[0].queue is jobs[1].queue is jobs[2].queue
    assert jobs[0].name is jobs[2].name
    assert jobs[0].options is jobs[1].options is jobs[2].options
    assert jobs[0].options == options


async def test_no_options_is_stored_as_null(journal: Journal, tmp_path: Path) -> None:
    await journal.write(upserts(make_job(1), make_job(2, options=JobOptions(lease_ms=1))))
    await journal.close()

    with sqlite3.connect(tmp_path / "jobwire.db") as db:
        rows = db.execute("SELECT seq, options IS NULL FROM jobs ORDER BY seq").fetchall()
    assert rows == [(1, 1), (2, 0)]


async def test_upsert_replaces_the_row_with_the_jobs_latest_state(journal: Journal) -> None:
    job = make_job(1)
    await journal.write(upserts(job))
    job.state = JobState.ACTIVE
    job.attempts = 1
    job.started_at = NOW + 1
    await journal.write(upserts(job))

    (loaded,) = (await journal.load()).jobs

    assert as_tuple(loaded) == as_tuple(job)


async def test_rows_are_built_when_write_is_called(journal: Journal) -> None:
    job = make_job(1)
    writing = asyncio.create_task(journal.write(upserts(job)))
    await asyncio.sleep(0)  # write() has built its rows and handed them to the SQLite thread
    job.state = JobState.ACTIVE
    await writing

    (loaded,) = (await journal.load()).jobs

    assert loaded.state is JobState.WAITING


async def test_deletes(journal: Journal) -> None:
    await journal.write(upserts(*(make_job(seq) for seq in range(1, 6))))
    await journal.write(deletes("2", "4", "no-such-job"))

    assert [job.id for job in (await journal.load()).jobs] == ["1", "3", "5"]


async def test_one_write_mixes_upserts_deletes_and_queues(journal: Journal) -> None:
    await journal.write(upserts(make_job(1), make_job(2)))
    changes = Changes(
        jobs={"1": None, "3": make_job(3)},
        queues={"q": QueueMeta("q", paused=True, total_completed=5, total_failed=2)},
        next_seq=4,
    )
    await journal.write(changes)
    await journal.write(Changes(jobs={}, queues={"r": QueueMeta("r")}))

    snapshot = await journal.load()

    assert [job.id for job in snapshot.jobs] == ["2", "3"]
    assert sorted(snapshot.queues, key=lambda meta: meta.name) == [
        QueueMeta("q", True, 5, 2),
        QueueMeta("r", False, 0, 0),
    ]
    assert snapshot.next_seq == 4


async def test_next_seq_never_goes_back_and_exceeds_every_loaded_seq(journal: Journal) -> None:
    await journal.write(Changes(jobs={"9": make_job(9)}, queues={}, next_seq=100))
    await journal.write(Changes(jobs={"9": None}, queues={}, next_seq=50))
    assert (await journal.load()).next_seq == 100

    await journal.write(Changes(jobs={"500": make_job(500)}, queues={}))
    assert (await journal.load()).next_seq == 501


async def test_empty_changes_write_nothing(journal: Journal) -> None:
    await journal.write(Changes(jobs={}, queues={}))
    assert journal.transactions == 0


async def test_a_cancelled_write_still_completes_its_transaction(journal: Journal) -> None:
    writing = asyncio.create_task(journal.write(upserts(*(make_job(s) for s in range(1, 501)))))
    await asyncio.sleep(0)
    writing.cancel()
    with pytest.raises(asyncio.CancelledError):
        await writing

    assert len((await journal.load()).jobs) == 500
    await journal.write(upserts(make_job(501)))  # no transaction was left open
    assert len((await journal.load()).jobs) == 501


async def test_a_corrupt_row_fails_the_load_clearly(journal: Journal, tmp_path: Path) -> None:
    await journal.write(upserts(make_job(1)))
    await journal.close()
    with sqlite3.connect(tmp_path / "jobwire.db") as db:
        db.execute("UPDATE jobs SET state = 9")
    reopened = await Journal.open(tmp_path / "jobwire.db")
    try:
        with pytest.raises(JournalError, match="corrupt"):
            await reopened.load()
    finally:
        await reopened.close()


# --------------------------------------------------------------------------- pragmas and schema


@pytest.mark.parametrize(
    ("mode", "synchronous"), [(SyncMode.FULL, 2), (SyncMode.NORMAL, 1), (SyncMode.OFF, 0)]
)
async def test_pragmas_take_effect(tmp_path: Path, mode: SyncMode, synchronous: int) -> None:
    journal = await Journal.open(tmp_path / "j.db", sync=mode, checkpoint_bytes=1 << 20)
    try:
        settings = await journal.describe()
    finally:
        await journal.close()

    assert settings["journal_mode"] == "wal"
    assert settings["synchronous"] == synchronous
    assert settings["auto_vacuum"] == 2  # incremental
    assert settings["journal_size_limit"] == 1 << 20
    assert settings["wal_autocheckpoint"] * settings["page_size"] > 1 << 20
    assert settings["user_version"] == 1


def test_sync_mode_parses_the_cli_words() -> None:
    assert [SyncMode(word) for word in ("full", "normal", "off")] == list(SyncMode)


async def test_a_pragma_that_does_not_take_effect_is_an_error() -> None:
    # An in-memory database cannot use WAL: SQLite answers "memory" and carries on.
    with pytest.raises(JournalError, match="journal_mode = WAL did not take effect"):
        await Journal.open(Path(":memory:"))


async def test_reopen_keeps_the_data(tmp_path: Path) -> None:
    first = await Journal.open(tmp_path / "j.db")
    await first.write(upserts(make_job(1)))
    await first.close()
    second = await Journal.open(tmp_path / "j.db", sync=SyncMode.NORMAL)
    try:
        assert [job.id for job in (await second.load()).jobs] == ["1"]
    finally:
        await second.close()


async def test_a_newer_schema_version_is_refused(tmp_path: Path) -> None:
    await (await Journal.open(tmp_path / "j.db")).close()
    with sqlite3.connect(tmp_path / "j.db") as db:
        db.execute("PRAGMA user_version = 2")

    with pytest.raises(JournalError, match="schema version 2, written by a newer jobwire"):
        await Journal.open(tmp_path / "j.db")


async def test_a_database_that_is_not_a_journal_is_refused(tmp_path: Path) -> None:
    with sqlite3.connect(tmp_path / "other.db") as db:
        db.execute("CREATE TABLE notes (text TEXT)")

    with pytest.raises(JournalError, match="not a jobwire journal"):
        await Journal.open(tmp_path / "other.db")


async def test_an_unopenable_path_is_a_journal_error(tmp_path: Path) -> None:
    with pytest.raises(JournalError, match="cannot"):
        await Journal.open(tmp_path / "missing-dir" / "j.db")


async def test_close_is_safe_twice_and_later_writes_fail_clearly(tmp_path: Path) -> None:
    journal = await Journal.open(tmp_path / "j.db")
    await journal.write(upserts(make_job(1)))
    await journal.close()
    await journal.close()

    with pytest.raises(JournalError, match="closed"):
        await journal.write(upserts(make_job(2)))
    assert file_size(Path(f"{tmp_path / 'j.db'}-wal")) == 0


# --------------------------------------------------------------------------- group commit


async def test_many_requests_share_few_transactions(
    committed: tuple[Journal, Source, GroupCommitter],
) -> None:
    journal, source, committer = committed

    async def request() -> BaseException | None:
        source.new_job()
        return await commit(committer)

    results = await asyncio.gather(*(request() for _ in range(300)))

    assert results == [None] * 300
    assert journal.transactions <= 3
    assert committer.batches == journal.transactions
    assert len((await journal.load()).jobs) == 300


async def test_the_next_batch_gathers_while_a_transaction_runs(
    committed: tuple[Journal, Source, GroupCommitter],
) -> None:
    journal, source, committer = committed
    for _ in range(2_000):
        source.new_job(payload=b"x" * 200)
    first = asyncio.ensure_future(commit(committer))
    await source.taken.wait()  # the committer took them and built the first transaction
    later = []
    for _ in range(50):
        source.new_job()
        later.append(asyncio.ensure_future(commit(committer)))

    assert await first is None
    assert await asyncio.gather(*later) == [None] * 50
    assert journal.transactions == 2
    assert len((await journal.load()).jobs) == 2_050


async def test_a_waiter_with_nothing_to_write_is_still_answered(
    committed: tuple[Journal, Source, GroupCommitter],
) -> None:
    journal, _, committer = committed

    assert await commit(committer) is None
    assert journal.transactions == 0


async def test_a_waiter_without_changes_is_answered_after_the_running_commit(
    committed: tuple[Journal, Source, GroupCommitter],
) -> None:
    journal, source, committer = committed
    order: list[str] = []
    for _ in range(2_000):
        source.new_job()
    committer.after_commit(lambda error: order.append("writer"))
    await source.taken.wait()
    assert journal.transactions == 0  # the writer's transaction is still running

    committer.after_commit(lambda error: order.append("reader"))
    await committer.flush()

    assert order == ["writer", "reader"]
    assert journal.transactions == 1


async def test_a_failing_callback_does_not_stop_the_loop(
    committed: tuple[Journal, Source, GroupCommitter],
) -> None:
    _, source, committer = committed

    def broken(error: BaseException | None) -> None:
        raise RuntimeError("callback bug")

    source.new_job()
    committer.after_commit(broken)
    assert await commit(committer) is None
    source.new_job()
    assert await commit(committer) is None


async def test_flush_commits_everything_and_is_safe_when_idle(journal: Journal) -> None:
    source = Source()
    committer = GroupCommitter(journal, source.take_changes)  # no run() task at all
    await committer.flush()
    answers: list[BaseException | None] = []
    source.new_job()
    committer.after_commit(answers.append)
    await committer.flush()
    await committer.flush()

    assert answers == [None]
    assert len((await journal.load()).jobs) == 1


async def test_run_reraises_cancellation_and_keeps_an_unanswered_batch(journal: Journal) -> None:
    source = Source()
    committer = GroupCommitter(journal, source.take_changes)
    task = asyncio.create_task(committer.run())
    for _ in range(1_000):
        source.new_job()
    answers: list[BaseException | None] = []
    committer.after_commit(answers.append)
    await asyncio.sleep(0)
    await asyncio.sleep(0)  # mid-transaction
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task

    await committer.flush()  # shutdown's final commit answers the waiter
    assert answers == [None]
    assert len((await journal.load()).jobs) == 1_000


async def test_a_failed_write_is_reported_and_retried_once_the_disk_has_room(
    committed: tuple[Journal, Source, GroupCommitter],
) -> None:
    journal, source, committer = committed
    kept = source.new_job()
    doomed = source.new_job()
    assert await commit(committer) is None

    await journal.set_size_limit(0)  # the file may not grow: as good as a full disk
    for _ in range(300):
        source.new_job(payload=b"z" * 1_000)
    kept.state = JobState.ACTIVE
    source.changed(kept)
    failure = await commit(committer)

    assert isinstance(failure, JournalError)
    assert isinstance(failure.__cause__, sqlite3.Error)
    assert failing(committer)
    with pytest.raises(JournalError, match="full"):
        await journal.write(upserts(make_job(10_000, payload=b"y" * 100_000)))

    # Newer changes made while the disk is full are merged over the retained ones.
    kept.attempts = 1
    source.changed(kept)
    source.deleted(doomed.id)
    assert isinstance(await commit(committer), JournalError)

    await journal.set_size_limit(None)
    assert await commit(committer) is None
    assert not failing(committer)
    assert committer.batches == journal.transactions
    assert committer.failed_batches >= 2  # the retry timer may have added failures of its own
    jobs = {job.id: job for job in (await journal.load()).jobs}
    assert len(jobs) == 301
    assert doomed.id not in jobs
    assert (jobs[kept.id].state, jobs[kept.id].attempts) == (JobState.ACTIVE, 1)


async def test_retained_changes_are_retried_without_new_requests(
    committed: tuple[Journal, Source, GroupCommitter],
) -> None:
    journal, source, committer = committed
    await journal.set_size_limit(0)
    for _ in range(300):
        source.new_job(payload=b"z" * 1_000)
    assert isinstance(await commit(committer), JournalError)

    await journal.set_size_limit(None)
    for _ in range(1_000):  # the committer's own retry timer (10 ms, doubling) gets there
        if not failing(committer):
            break
        await asyncio.sleep(0.01)
    assert not failing(committer)
    assert len((await journal.load()).jobs) == 300


async def test_flush_raises_when_the_final_commit_fails(journal: Journal) -> None:
    source = Source()
    committer = GroupCommitter(journal, source.take_changes)
    await journal.set_size_limit(0)
    for _ in range(300):
        source.new_job(payload=b"z" * 1_000)

    with pytest.raises(JournalError):
        await committer.flush()
    assert failing(committer)


# --------------------------------------------------------------------------- bounded files


def file_size(path: Path) -> int:
    return path.stat().st_size if path.exists() else 0


async def test_files_stay_bounded_over_a_long_insert_delete_run(tmp_path: Path) -> None:
    path = tmp_path / "j.db"
    wal = Path(f"{path}-wal")
    journal = await Journal.open(path, sync=SyncMode.OFF, checkpoint_bytes=1 << 20)
    source = Source()
    committer = GroupCommitter(journal, source.take_changes)
    live: list[Job] = []
    largest_db = largest_wal = 0
    try:
        for _ in range(100):  # 200,000 jobs written, 200,000 deleted, at most 4,000 alive
            live.extend(source.new_job(payload=b"p" * 100) for _ in range(2_000))
            if len(live) > 2_000:
                for job in live[:2_000]:
                    source.deleted(job.id)
                del live[:2_000]
            await committer.flush()
            largest_db = max(largest_db, file_size(path))
            largest_wal = max(largest_wal, file_size(wal))
        assert len((await journal.load()).jobs) == 2_000
    finally:
        await journal.close()

    assert journal.checkpoints > 10
    assert largest_db < 4 << 20, largest_db
    assert largest_wal < 3 << 20, largest_wal


async def test_free_pages_go_back_to_the_file_system(tmp_path: Path) -> None:
    path = tmp_path / "j.db"
    journal = await Journal.open(path, sync=SyncMode.OFF)
    try:
        jobs = [make_job(seq, payload=b"p" * 500) for seq in range(1, 40_001)]
        await journal.write(upserts(*jobs))
        await journal.checkpoint(truncate=True)
        full = file_size(path)
        await journal.write(deletes(*(job.id for job in jobs[:-100])))
        await journal.checkpoint()
        await journal.checkpoint(truncate=True)
        emptied = file_size(path)
    finally:
        await journal.close()

    assert full > 20 << 20
    assert emptied < full // 4, (full, emptied)


def test_job_fields_list_matches_the_job_record() -> None:
    assert set(FIELDS) | {"lease_token", "lease_deadline", "owner"} == set(Job.__slots__)



# --------------------------------------------------------------------------- recovery with the core


async def test_a_restart_rebuilds_the_core_from_what_was_committed(tmp_path: Path) -> None:
    path = tmp_path / "jobwire.db"
    journal = await Journal.open(path)
    core = Core(CoreConfig(), rng=random.Random(1), token_base=1_000)
    committer = GroupCommitter(journal, core.take_changes)
    core.enqueue("q", [JobSpec(f"job-{i}", "work", b"%d" % i) for i in range(5)], NOW)
    await committer.flush()
    leased = {job.job_id: job for job in core.reserve(["q"], 3, None, owner=1, now=NOW + 1)}
    core.ack([AckItem("job-0", leased["job-0"].token, b"done")], NOW + 2)
    core.pause("q", NOW + 2)
    await committer.flush()
    core.enqueue("q", [JobSpec("never-committed", "work", b"")], NOW + 3)
    await journal.close()  # "crash": the last enqueue was never committed

    journal = await Journal.open(path)
    try:
        restarted = Core.restore(CoreConfig(), await journal.load(), NOW + 10,
                                 rng=random.Random(2), token_base=2_000)
    finally:
        await journal.close()

    def state(job_id: str) -> tuple[JobState, int] | None:
        info = restarted.get(job_id)
        return None if info is None else (info.state, info.attempts)

    assert state("job-0") == (JobState.COMPLETED, 1)
    # Leased when the broker stopped: that attempt counts as failed, with backoff.
    assert state("job-1") == (JobState.DELAYED, 1)
    assert state("job-2") == (JobState.DELAYED, 1)
    assert state("job-3") == (JobState.WAITING, 0)
    assert state("job-4") == (JobState.WAITING, 0)
    assert state("never-committed") is None
    assert restarted.stats("q", NOW + 10)["q"].paused


async def test_an_id_reused_by_a_new_job_replaces_the_old_row(journal: Journal) -> None:
    await journal.write(upserts(*(make_job(seq) for seq in range(1, 4))))
    # Job "2" was cancelled and enqueued again before the next commit: only the new one is left.
    reborn = Job(9, "2", "q", "again", b"new", priority=1, run_at=NOW, max_attempts=3,
                 options=NO_OPTIONS, state=JobState.WAITING, created_at=NOW + 5)
    first = make_job(1, state=JobState.ACTIVE, attempts=1)
    await journal.write(upserts(first, reborn))

    jobs = (await journal.load()).jobs

    assert [as_tuple(job) for job in jobs] == [
        as_tuple(first), as_tuple(make_job(3)), as_tuple(reborn)
    ]
