"""The journal's schema: row checksums, the in-place migrations from versions 1 and 2 (version 4
drops the UNIQUE index on ``id``: user ids are unique per queue), and the WAL header reader of
the start-up check (``broker.walformat``), against real files in
``tmp_path``."""

from __future__ import annotations

import shutil
import sqlite3
import zlib
from pathlib import Path

import msgpack
import pytest

from broker import migrations, schema
from broker.jobs import Job, JobOptions
from broker.journal import DamagedRows, Journal, JournalError, SyncMode
from broker.records import RowEncoder, decode_record
from broker.schema import RECORD_FIELDS, SCHEMA_VERSION, payload_checksum
from broker.walformat import read_wal_header
from protocol.model import Backoff, BackoffKind, JobState, Retention
from tests.tools.journaltools import NOW, as_tuple, make_job, upserts

V1_JOURNAL = Path(__file__).parent.parent / "data" / "journal-v1.db"
"""Written by ``Journal`` at commit 742e39a (schema 1): ``v1_jobs()`` in 100-job transactions,
each with queue ``q`` (paused, 17 completed, 3 failed) and ``next_seq`` 5,000, then closed."""


V2_JOURNAL = Path(__file__).parent.parent / "data" / "journal-v2.db"
"""Written by ``Journal`` at commit 0f30701 (schema 2): ``v2_jobs()`` in 100-job transactions,
each with queue ``q`` (paused, 17 completed, 3 failed) and ``next_seq`` 5,000, then closed."""


def _jobs_indexes(path: Path) -> list[str]:
    with sqlite3.connect(path) as db:
        return [row[0] for row in db.execute(
            "SELECT name FROM sqlite_schema WHERE type = 'index' AND tbl_name = 'jobs'")]


def v1_jobs() -> list[Job]:
    """The jobs in ``V1_JOURNAL``, made the way they were made to write it."""
    options = JobOptions(backoff=Backoff(BackoffKind.FIXED, 250, 10_000, 0.5), lease_ms=90_000,
                         keep_completed=Retention(10, None), keep_failed=Retention(None, 3_600_000))
    jobs = [
        make_job(1, queue="émails ✉", name="send", payload=b"\x00\xff" * 50, priority=-5,
                 run_at=NOW + 5_000, max_attempts=7, options=options, state=JobState.DELAYED,
                 attempts=2, started_at=NOW + 1, error="boom: ✗"),
        make_job(2, state=JobState.ACTIVE, attempts=1, started_at=NOW + 2,
                 progress={"done": 3, "of": (1, 2.5, None, True, "x", b"raw")}),
        make_job(3, state=JobState.COMPLETED, attempts=1, started_at=NOW, finished_at=NOW + 9,
                 result=b"\x01result", progress=42, options=JobOptions(lease_ms=5)),
        make_job(4, state=JobState.FAILED, attempts=3, finished_at=NOW + 10, error="gave up"),
    ]
    return jobs + [make_job(seq, payload=b"%d" % seq * 40) for seq in range(5, 305)]


# --------------------------------------------------------------------------- migration


async def test_a_version_1_journal_is_migrated_in_place_and_keeps_every_job(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "jobwire.db"
    shutil.copy(V1_JOURNAL, path)
    monkeypatch.setattr(migrations, "MIGRATE_BATCH", 64)  # several batches from 304 rows
    journal = await Journal.open(path)
    try:
        snapshot = await journal.load()  # every migrated row passes its checksum
    finally:
        await journal.close()

    assert [as_tuple(job) for job in snapshot.jobs] == [as_tuple(job) for job in v1_jobs()]
    assert [(q.name, q.paused, q.total_completed, q.total_failed) for q in snapshot.queues] == [
        ("q", True, 17, 3)]
    assert snapshot.next_seq == 5_000
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA user_version").fetchone() == (SCHEMA_VERSION,)
        assert db.execute("SELECT count(*) FROM jobs WHERE crc = 0").fetchone() == (0,)
    assert _jobs_indexes(path) == []  # and on to schema 4, in the same transaction
    reopened = await Journal.open(path)  # opens as version 3: nothing left to migrate
    try:
        assert len((await reopened.load()).jobs) == len(v1_jobs())
    finally:
        await reopened.close()


async def test_a_failed_migration_leaves_the_version_1_journal_as_it_was(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "jobwire.db"
    shutil.copy(V1_JOURNAL, path)

    def failing_checksum(values: object, pack: object = None) -> int:
        raise sqlite3.OperationalError("disk I/O error")  # as a failing write would

    monkeypatch.setattr(migrations, "v4_checksum", failing_checksum)
    with pytest.raises(JournalError, match="disk I/O error"):
        await Journal.open(path)

    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA user_version").fetchone() == (1,)
        columns = [row[1] for row in db.execute("PRAGMA table_info(jobs)")]
    assert "crc" not in columns
    monkeypatch.undo()
    journal = await Journal.open(path)  # and the next start migrates it
    try:
        assert len((await journal.load()).jobs) == len(v1_jobs())
    finally:
        await journal.close()


def v2_jobs() -> list[Job]:
    """The jobs in ``V2_JOURNAL``: ``v1_jobs()`` and one job with a user id."""
    named = make_job(305, queue="reports")
    named.id = named.key = "nightly-report"
    return [*v1_jobs(), named]


async def test_a_version_2_journal_is_migrated_in_one_step_and_keeps_every_job(
    tmp_path: Path,
) -> None:
    path = tmp_path / "jobwire.db"
    shutil.copy(V2_JOURNAL, path)
    assert _jobs_indexes(path)  # schema 2: the UNIQUE index on id
    journal = await Journal.open(path)
    try:
        snapshot = await journal.load()  # every row passes its checksum: the columns are the same
        # Schema 3: the same user id in another queue is another row.
        twin = make_job(400, queue="other")
        twin.id = "nightly-report"
        await journal.write(upserts(twin))
        reloaded = await journal.load()
    finally:
        await journal.close()

    assert [as_tuple(job) for job in snapshot.jobs] == [as_tuple(job) for job in v2_jobs()]
    assert [(q.name, q.paused, q.total_completed, q.total_failed) for q in snapshot.queues] == [
        ("q", True, 17, 3)]
    assert snapshot.next_seq == 5_000
    assert [(job.queue, job.id) for job in reloaded.jobs if job.id == "nightly-report"] == [
        ("reports", "nightly-report"), ("other", "nightly-report")]
    assert _jobs_indexes(path) == []
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA user_version").fetchone() == (SCHEMA_VERSION,) == (7,)


async def test_a_failed_version_2_migration_leaves_the_journal_as_it_was(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "jobwire.db"
    shutil.copy(V2_JOURNAL, path)
    # The copy into the new table fails (as a full disk would): the whole transaction goes.
    monkeypatch.setattr(migrations, "CREATE_JOBS_V4",
                        "CREATE TABLE {table} (seq INTEGER PRIMARY KEY)")
    with pytest.raises(JournalError, match="no column named id"):
        await Journal.open(path)

    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA user_version").fetchone() == (2,)
        tables = [row[0] for row in db.execute(
            "SELECT name FROM sqlite_schema WHERE type = 'table'")]
    assert "jobs_v4" not in tables
    assert _jobs_indexes(path)
    monkeypatch.undo()
    journal = await Journal.open(path)
    try:
        assert len((await journal.load()).jobs) == len(v2_jobs())
    finally:
        await journal.close()


# --------------------------------------------------------------------------- row checksums


def _pack(fields: dict[str, object]) -> bytes:
    return msgpack.packb(tuple(fields[name] for name in RECORD_FIELDS), use_bin_type=True)


def _changed(value: object) -> object:
    """A value that was never written, of the kind a flipped byte makes."""
    if isinstance(value, int):
        return value + 1
    if isinstance(value, str):
        return "x" + value
    return b"x" + (value or b"")


@pytest.mark.parametrize("field", [f for f in RECORD_FIELDS if f != "seq"])
async def test_a_change_to_any_field_fails_the_rows_checksum(tmp_path: Path,
                                                             field: str) -> None:
    path = tmp_path / "jobwire.db"
    journal = await Journal.open(path, sync=SyncMode.OFF)
    await journal.write(upserts(*v1_jobs()[:4]))
    await journal.close()
    with sqlite3.connect(path) as db:  # the record changed, its checksum not
        (record,) = db.execute("SELECT record FROM jobs WHERE seq = 3").fetchone()
        fields = decode_record(record)
        fields[field] = _changed(fields[field])
        db.execute("UPDATE jobs SET record = ? WHERE seq = 3", (_pack(fields),))

    journal = await Journal.open(path)
    try:
        with pytest.raises(DamagedRows, match="1 job rows") as raised:
            await journal.load()
        assert raised.value.rows == [(3, "x3" if field == "id" else "3")]
        kept = await journal.load(skip_damaged=True)
    finally:
        await journal.close()
    assert [job.seq for job in kept.jobs] == [1, 2, 4]


async def _damaged_rows(path: Path) -> list[tuple[object, object]]:
    """The ``(seq, id)`` rows that loading the journal at ``path`` finds damaged (it must)."""
    journal = await Journal.open(path)
    try:
        with pytest.raises(DamagedRows) as raised:
            await journal.load()
    finally:
        await journal.close()
    return raised.value.rows


async def test_a_flipped_byte_anywhere_in_a_record_is_damage(tmp_path: Path) -> None:
    path = tmp_path / "jobwire.db"
    journal = await Journal.open(path, sync=SyncMode.OFF)
    await journal.write(upserts(*v1_jobs()[:2]))
    await journal.close()
    with sqlite3.connect(path) as db:
        (record,) = db.execute("SELECT record FROM jobs WHERE seq = 2").fetchone()
    for offset in range(len(record)):
        flipped = bytearray(record)
        flipped[offset] ^= 0x10
        with sqlite3.connect(path) as db:
            db.execute("UPDATE jobs SET record = ? WHERE seq = 2", (bytes(flipped),))
        assert [seq for seq, _ in await _damaged_rows(path)] == [2], offset


async def test_a_record_under_another_seq_is_damage(tmp_path: Path) -> None:
    path = tmp_path / "jobwire.db"
    journal = await Journal.open(path, sync=SyncMode.OFF)
    await journal.write(upserts(*v1_jobs()[:3]))
    await journal.close()
    with sqlite3.connect(path) as db:  # row 2 gets row 3's record, checksum and all
        db.execute("UPDATE jobs SET (record, crc) = (SELECT record, crc FROM jobs WHERE seq = 3) "
                   "WHERE seq = 2")
    assert await _damaged_rows(path) == [(2, "3")]


def test_the_stored_checksum_is_the_crc_of_the_record(tmp_path: Path) -> None:
    job = make_job(7, payload=b"\x00" * 9, error="e")
    seq, record, crc = RowEncoder().job_row(job)
    fields = decode_record(record)
    assert seq == fields["seq"] == 7 and fields["id"] == job.id and fields["error"] == "e"
    assert crc == zlib.crc32(record) == zlib.crc32(_pack(fields))
    assert crc != zlib.crc32(_pack({**fields, "priority": 1}))
    assert RowEncoder.payload_row(job) == (7, b"\x00" * 9, payload_checksum(7, b"\x00" * 9))
    assert payload_checksum(7, b"\x00" * 9) != payload_checksum(8, b"\x00" * 9)
    with pytest.raises(schema.SchemaError):
        decode_record(b"\x93\x01\x02\x03")


@pytest.mark.parametrize("change", ["payload = CAST('x' AS BLOB) || payload", "seq = 99",
                                    "crc = crc + 1"])
async def test_a_change_to_a_payload_row_fails_its_jobs_check(tmp_path: Path,
                                                              change: str) -> None:
    path = tmp_path / "jobwire.db"
    journal = await Journal.open(path, sync=SyncMode.OFF)
    await journal.write(upserts(*v1_jobs()[:4]))
    await journal.close()
    with sqlite3.connect(path) as db:
        db.execute(f"UPDATE payloads SET {change} WHERE seq = 2")

    journal = await Journal.open(path)
    try:
        with pytest.raises(DamagedRows, match="1 job rows") as raised:
            await journal.load()
        assert [seq for seq, _ in raised.value.rows] == [2]
        kept = await journal.load(skip_damaged=True)
    finally:
        await journal.close()
    assert [job.seq for job in kept.jobs] == [1, 3, 4]


async def _migrated_with_damage(path: Path, damaged_seq: int) -> list[Job]:
    """Open (migrating) the journal at ``path``: its load must name ``damaged_seq`` alone as
    damaged; the jobs loaded without it."""
    assert [seq for seq, _ in await _damaged_rows(path)] == [damaged_seq]  # still damaged
    journal = await Journal.open(path)
    try:
        return (await journal.load(skip_damaged=True)).jobs
    finally:
        await journal.close()


async def test_a_version_4_journal_moves_its_payloads_and_keeps_damage_visible(
    tmp_path: Path,
) -> None:
    path = tmp_path / "jobwire.db"
    shutil.copy(V2_JOURNAL, path)
    journal = await Journal.open(path)  # 2 -> 7; then made a version 4 journal again below
    await journal.close()
    jobs = v2_jobs()
    _as_version_4(path, jobs, damage_seq=3)  # a damaged v4 row (seq 3)
    kept = await _migrated_with_damage(path, 3)  # 4 -> 5 -> 6 -> 7
    assert [as_tuple(job) for job in kept] == [as_tuple(job) for job in jobs if job.seq != 3]
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA user_version").fetchone() == (SCHEMA_VERSION,) == (7,)
        assert db.execute("SELECT count(*) FROM payloads").fetchone() == (len(jobs),)
        columns = [row[1] for row in db.execute("PRAGMA table_info(jobs)")]
    assert "payload" not in columns


def _as_version_6(path: Path, jobs: list[Job], damage_seq: int) -> None:
    """Turn a journal into what schema 6 wrote, holding ``jobs``: one column per record field
    and the checksum of their msgpack array, flipped for ``damage_seq``, whose ``error`` is
    also made text that is not UTF-8 (what a flipped byte in a TEXT value leaves)."""
    pack = msgpack.Packer(use_bin_type=True).pack
    encoder = RowEncoder()
    with sqlite3.connect(path) as db:
        db.execute("DROP TABLE jobs")
        db.execute(migrations.CREATE_JOBS_V6)
        db.execute("ALTER TABLE jobs_v6 RENAME TO jobs")
        for job in jobs:
            values = tuple(decode_record(encoder.job_row(job)[1]).values())
            db.execute(f"INSERT INTO jobs VALUES ({', '.join('?' * 17)})",
                       (*values, zlib.crc32(pack(values)) ^ (job.seq == damage_seq)))
        db.execute("UPDATE jobs SET error = CAST(X'ff00fe' AS TEXT) WHERE seq = ?", (damage_seq,))
        db.execute("PRAGMA user_version = 6")


async def test_a_version_6_journal_becomes_records_and_keeps_damage_visible(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "jobwire.db"
    jobs = [make_job(seq, options=JobOptions(lease_ms=seq) if seq % 3 else JobOptions(),
                     progress={"n": seq} if seq % 2 else None) for seq in range(1, 151)]
    journal = await Journal.open(path)
    await journal.write(upserts(*jobs))
    await journal.close()
    _as_version_6(path, jobs, damage_seq=42)
    monkeypatch.setattr(migrations, "MIGRATE_BATCH", 64)  # several batches

    kept = await _migrated_with_damage(path, 42)  # 6 -> 7
    assert [as_tuple(job) for job in kept] == [as_tuple(job) for job in jobs if job.seq != 42]
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA user_version").fetchone() == (SCHEMA_VERSION,) == (7,)
        assert [row[1] for row in db.execute("PRAGMA table_info(jobs)")] == [
            "seq", "record", "crc"]


async def test_drop_rows_deletes_by_seq(tmp_path: Path) -> None:
    journal = await Journal.open(tmp_path / "j.db", sync=SyncMode.OFF)
    try:
        await journal.write(upserts(*(make_job(seq) for seq in range(1, 6))))
        await journal.drop_rows([2, 4])
        assert [job.seq for job in (await journal.load()).jobs] == [1, 3, 5]
    finally:
        await journal.close()


# --------------------------------------------------------------------------- WAL header


def _wal_head(path: Path) -> bytes:
    return Path(f"{path}-wal").read_bytes()[:32]


async def test_the_wal_header_reader_accepts_sqlites_and_rejects_damage(tmp_path: Path) -> None:
    path = tmp_path / "j.db"
    journal = await Journal.open(path, sync=SyncMode.OFF)
    try:
        await journal.write(upserts(make_job(1)))
        head = _wal_head(path)
    finally:
        await journal.close()

    header = read_wal_header(head)
    assert header is not None and header.page_size == 4096
    assert read_wal_header(bytes(32)) is None  # zeroed
    assert read_wal_header(head[:31]) is None  # short
    for offset in range(32):  # one flipped byte anywhere: magic, version, size, salts, checksum
        flipped = bytearray(head)
        flipped[offset] ^= 0x40
        assert read_wal_header(bytes(flipped)) is None, offset


# --------------------------------------------------------------------------- schedules (schema 5)


def _as_version_4(path: Path, jobs: list[Job], damage_seq: int | None = None) -> None:
    """Turn a journal into what schema 4 wrote, holding ``jobs``: no ``schedules`` (schema 5)
    or ``payloads`` (schema 6) table, each payload in its ``jobs`` row under the v4 checksum
    (flipped for ``damage_seq``), user_version 4."""
    pack = msgpack.Packer(use_bin_type=True).pack
    with sqlite3.connect(path) as db:
        for table in ("schedules", "payloads", "jobs"):
            db.execute(f"DROP TABLE {table}")
        db.execute(migrations.CREATE_JOBS_V4.format(table="jobs"))
        rows = [(*as_tuple(job)[:8], schema.encode_options(job.options),
                 schema.STATE_CODES[job.state],
                 *as_tuple(job)[10:14], None if job.progress is None else pack(job.progress),
                 *as_tuple(job)[15:]) for job in jobs]
        rows = [(*row, migrations.v4_checksum(row, pack) ^ (row[0] == damage_seq))
                for row in rows]
        db.executemany(f"INSERT INTO jobs VALUES ({', '.join('?' * 18)})", rows)
        db.execute("PRAGMA user_version = 4")


async def test_a_version_4_journal_gains_the_schedules_table_in_place(tmp_path: Path) -> None:
    from broker.core import Changes
    from broker.schedule import Rule, Scheduler
    from protocol.model import JobSpec

    path = tmp_path / "jobwire.db"
    journal = await Journal.open(path)
    await journal.close()
    _as_version_4(path, [make_job(seq) for seq in range(1, 51)])

    journal = await Journal.open(path)
    try:
        snapshot = await journal.load()
        assert len(snapshot.jobs) == 50 and snapshot.schedules == []
        scheduler = Scheduler("q", "nightly", Rule(None, "0 3 * * *", "Europe/Berlin", None, None,
                                                    5, NOW), JobSpec(None, "cleanup", b"\x00"),
                              NOW, 2, NOW + 86_400_000)
        await journal.write(Changes({}, {}, 0, {("q", "nightly"): scheduler}))
        assert (await journal.load()).schedules == [scheduler]
        await journal.write(Changes({}, {}, 0, {("q", "nightly"): None}))
        assert (await journal.load()).schedules == []
    finally:
        await journal.close()
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA user_version").fetchone() == (SCHEMA_VERSION,) == (7,)


async def test_a_damaged_scheduler_row_stops_the_load(tmp_path: Path) -> None:
    from broker.core import Changes
    from broker.schedule import Rule, Scheduler
    from protocol.model import JobSpec

    path = tmp_path / "jobwire.db"
    journal = await Journal.open(path)
    scheduler = Scheduler("q", "k", Rule(1_000, None, None, None, None, None, NOW),
                          JobSpec(None, "t", b""), NOW, 1, NOW)
    await journal.write(Changes({}, {}, 0, {("q", "k"): scheduler}))
    await journal.close()
    with sqlite3.connect(path) as db:
        db.execute("UPDATE schedules SET count = 7")
    journal = await Journal.open(path)
    try:
        with pytest.raises(JournalError, match="scheduler 'k' of queue 'q' fails its checksum"):
            await journal.load()
    finally:
        await journal.close()


async def test_a_record_too_damaged_to_name_its_job_is_refused_by_seq(tmp_path: Path) -> None:
    from broker.integrity import JournalDamaged, open_journal

    path = tmp_path / "jobwire.db"
    journal = await Journal.open(path, sync=SyncMode.OFF)
    await journal.write(upserts(*v1_jobs()[:3]))
    await journal.close()
    with sqlite3.connect(path) as db:  # not msgpack at all: the id cannot be read
        db.execute("UPDATE jobs SET record = X'c1c1c1' WHERE seq = 2")

    with pytest.raises(JournalDamaged, match=r"job ids \(unreadable, seq 2\)"):
        await open_journal(path, sync=SyncMode.OFF, accept_loss=False)
    journal, snapshot = await open_journal(path, sync=SyncMode.OFF, accept_loss=True)
    await journal.close()
    assert [job.seq for job in snapshot.jobs] == [1, 3]
