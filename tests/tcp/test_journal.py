"""The SQLite journal against real database files in ``tmp_path``: rows, pragmas, schema, size."""

from __future__ import annotations

import asyncio
import sqlite3
import zlib
from collections.abc import AsyncIterator
from pathlib import Path

import msgpack
import pytest

from broker.committer import GroupCommitter
from broker.config import SYNC_MODES
from broker.core import Changes, QueueMeta
from broker.jobs import NO_OPTIONS, Job, JobOptions
from broker.journal import Journal, JournalError, SyncMode
from broker.journal_sql import upsert_rows
from broker.records import RowEncoder, decode_record
from broker.schema import CREATE_STATEMENTS, RECORD_FIELDS, SCHEMA_VERSION
from protocol.model import Backoff, BackoffKind, JobState, Retention
from tests.tools.journaltools import (
    FIELDS,
    NOW,
    Source,
    as_tuple,
    deletes,
    file_size,
    make_job,
    upserts,
)


@pytest.fixture
async def journal(tmp_path: Path) -> AsyncIterator[Journal]:
    opened = await Journal.open(tmp_path / "jobwire.db")
    yield opened
    await opened.close()



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
        rows = db.execute("SELECT seq, record FROM jobs ORDER BY seq").fetchall()
    assert [(seq, decode_record(record)["options"] is None) for seq, record in rows] == [
        (1, True), (2, False)]


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
    await journal.write(deletes(2, 4, 9_999))

    assert [job.id for job in (await journal.load()).jobs] == ["1", "3", "5"]


@pytest.mark.parametrize("count", [1, 2, 3, 43, 255, 256, 257, 511, 1_000])
async def test_batches_of_any_size_are_written_and_deleted_whole(
    journal: Journal, count: int
) -> None:
    # Rows go out in multi-row statements of UPSERT_CHUNKS sizes; every split must be exact.
    jobs = [make_job(seq, payload=seq.to_bytes(4, "big")) for seq in range(1, count + 1)]
    await journal.write(upserts(*jobs))
    for job in jobs[::3]:
        job.state = JobState.ACTIVE
        job.attempts = 1
    await journal.write(upserts(*jobs[::3]))
    await journal.write(deletes(*(job.seq for job in jobs[1::3])))

    loaded = (await journal.load()).jobs

    kept = [job for index, job in enumerate(jobs) if index % 3 != 1]
    assert [as_tuple(job) for job in loaded] == [as_tuple(job) for job in kept]


@pytest.mark.parametrize("count", [1, 7, 43, 256, 700])
def test_multi_row_upserts_change_every_row_without_the_replace_fallback(
    tmp_path: Path, count: int
) -> None:
    conn = sqlite3.connect(tmp_path / "rows.db", isolation_level=None)
    for statement in CREATE_STATEMENTS:
        conn.execute(statement)
    encoder = RowEncoder()
    rows = [encoder.job_row(make_job(seq)) for seq in range(1, count + 1)]

    assert upsert_rows(conn, rows) == count  # inserted
    assert upsert_rows(conn, rows) == count  # updated in place
    assert conn.execute("SELECT count(*), min(seq), max(seq) FROM jobs").fetchone() == (
        count, 1, count)
    conn.close()


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
    await journal.write(Changes(jobs={9: make_job(9)}, queues={}, next_seq=100))
    await journal.write(Changes(jobs={9: None}, queues={}, next_seq=50))
    assert (await journal.load()).next_seq == 100

    await journal.write(Changes(jobs={500: make_job(500)}, queues={}))
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
    with sqlite3.connect(tmp_path / "jobwire.db") as db:  # a bad row with a good checksum
        (record,) = db.execute("SELECT record FROM jobs").fetchone()
        fields = decode_record(record)
        fields["state"] = 9
        bad = msgpack.packb(tuple(fields[name] for name in RECORD_FIELDS), use_bin_type=True)
        db.execute("UPDATE jobs SET record = ?, crc = ?", (bad, zlib.crc32(bad)))
    reopened = await Journal.open(tmp_path / "jobwire.db")
    try:
        with pytest.raises(JournalError, match="is corrupt: stored job '1' is not valid"):
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
    assert settings["user_version"] == SCHEMA_VERSION


def test_sync_mode_parses_the_cli_words() -> None:
    """Each --sync word the CLI accepts is a journal mode, and nothing else is."""
    assert [SyncMode(word).value for word in SYNC_MODES] == list(SYNC_MODES)
    with pytest.raises(ValueError):
        SyncMode("fsync")


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
        db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")

    with pytest.raises(JournalError,
                       match=f"schema version {SCHEMA_VERSION + 1}, written by a newer jobwire"):
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


# --------------------------------------------------------------------------- bounded files



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
                    source.deleted(job.seq)
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
        await journal.write(deletes(*(job.seq for job in jobs[:-100])))
        await journal.checkpoint()
        await journal.checkpoint(truncate=True)
        emptied = file_size(path)
    finally:
        await journal.close()

    assert full > 20 << 20
    assert emptied < full // 4, (full, emptied)


def test_job_fields_list_matches_the_job_record() -> None:
    # ``key`` is the core's index key, derived from id and queue on load: never stored.
    assert set(FIELDS) | {"key", "lease_token", "lease_deadline", "owner"} == set(Job.__slots__)




async def test_an_id_reused_by_a_new_job_is_a_new_row(journal: Journal) -> None:
    await journal.write(upserts(*(make_job(seq) for seq in range(1, 4))))
    # Job "2" was cancelled and enqueued again before the next commit: rows are keyed by seq,
    # so the change set deletes seq 2 and inserts seq 9; only the new one is left.
    reborn = Job(9, "2", "q", "again", b"new", priority=1, run_at=NOW, max_attempts=3,
                 options=NO_OPTIONS, state=JobState.WAITING, created_at=NOW + 5)
    first = make_job(1, state=JobState.ACTIVE, attempts=1)
    await journal.write(Changes(jobs={2: None, 1: first, 9: reborn}, queues={}))

    jobs = (await journal.load()).jobs

    assert [as_tuple(job) for job in jobs] == [
        as_tuple(first), as_tuple(make_job(3)), as_tuple(reborn)
    ]

