"""A damaged journal stops ``jobwire serve`` at start, with its files set aside (process tier).

Each test runs a real broker, SIGKILLs it (or stops it cleanly), damages the journal's files the
way a bad disk or a stray write would (a flipped byte in the WAL or the database, a zeroed WAL
header), and starts it again. What ``broker/integrity.py`` promises, checked here:

* the broker refuses to start: exit status 3, one ``fatal`` log line naming the damage, nothing
  listening, and the files are copied, byte for byte, into ``damaged-<time>/`` beside the journal
  while the originals stay as they were (a restart loop refuses again, without a second copy);
* with ``--accept-journal-loss`` it starts on what SQLite recovers, without the damaged rows;
* a crash alone (no damage) is not mistaken for damage, and a clean stop leaves the state in the
  database file alone (the WAL checkpointed and gone).
"""

from __future__ import annotations

import json
import sqlite3
import struct
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

from protocol.messages import ErrorReply
from tests.conftest import BrokerProcess, jobwire_command
from tests.tools.wire import WireClient, job_spec

Spawn = Callable[..., BrokerProcess]
JOBS = 40
FLAGGED = 17  # the job whose payload the database test damages


def payload(index: int) -> bytes:
    return b"MARK-%04d|" % index + b"." * 3_000


async def enqueue_one_by_one(process: BrokerProcess) -> list[str]:
    """``JOBS`` jobs, each acknowledged (so committed) before the next: one transaction each."""
    client = await WireClient.connect(process.host, process.port)
    try:
        for index in range(JOBS):
            await client.enqueue("damage", job_spec(f"job-{index:04d}", payload=payload(index)))
    finally:
        await client.close()
    return [f"job-{index:04d}" for index in range(JOBS)]


async def present(process: BrokerProcess, job_ids: list[str]) -> list[str]:
    client = await WireClient.connect(process.host, process.port)
    try:
        found = []
        for job_id in job_ids:
            answer = await client.call("get", {"id": job_id})
            if not isinstance(answer, ErrorReply):
                assert answer.body["job"]["payload"] == payload(int(job_id[4:]))
                found.append(job_id)
            else:
                assert answer.code == "NOT_FOUND", answer
        return found
    finally:
        await client.close()


def journal_files(data_dir: Path) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in sorted(data_dir.glob("jobwire.db*"))
            if not path.name.endswith("-shm")}


def flip_wal_frame(data_dir: Path) -> None:
    """Flip one byte inside the page of a frame a quarter of the way into the WAL."""
    wal = data_dir / "jobwire.db-wal"
    data = bytearray(wal.read_bytes())
    (page_size,) = struct.unpack_from(">I", data, 8)
    frames = (len(data) - 32) // (page_size + 24)
    assert frames > 40, frames  # many commits after the damage
    data[32 + frames // 4 * (page_size + 24) + 24 + page_size // 2] ^= 0x01
    wal.write_bytes(bytes(data))


def zero_wal_header(data_dir: Path) -> None:
    wal = data_dir / "jobwire.db-wal"
    data = bytearray(wal.read_bytes())
    data[:32] = bytes(32)
    wal.write_bytes(bytes(data))


def flip_payload_in_database(data_dir: Path) -> None:
    db = data_dir / "jobwire.db"
    data = bytearray(db.read_bytes())
    at = data.find(b"MARK-%04d|" % FLAGGED)
    assert at > 0 and data.find(b"MARK-%04d|" % FLAGGED, at + 1) == -1
    data[at + 20] ^= 0x01  # inside the payload: SQLite itself sees nothing wrong
    db.write_bytes(bytes(data))


def serve_refused(data_dir: Path, *extra: str) -> tuple[int, list[dict[str, Any]]]:
    """Run ``jobwire serve`` on ``data_dir``; it must exit by itself (a start that serves does
    not, and times out). Returns the exit status and the JSON log events."""
    command = [*jobwire_command(), "serve", "--port", "0", "--data-dir", str(data_dir),
               "--log-format", "json", *extra]
    done = subprocess.run(command, capture_output=True, text=True, timeout=90)
    events = [json.loads(line) for line in done.stderr.splitlines() if line.startswith("{")]
    return done.returncode, events


def assert_refused(data_dir: Path, damage_words: str) -> Path:
    """Start, expect the refusal, check the set-aside copy; return its folder."""
    before = journal_files(data_dir)
    status, events = serve_refused(data_dir)
    assert status == 3, events
    fatal = [event for event in events if event["event"] == "fatal"]
    assert len(fatal) == 1, events
    assert damage_words in fatal[0]["error"], fatal[0]
    assert "--accept-journal-loss" in fatal[0]["error"]
    assert not any(event["event"] == "listening" for event in events)
    folders = sorted(data_dir.glob("damaged-*"))
    assert [str(folder) for folder in folders] == [fatal[0]["set_aside"]]
    assert journal_files(folders[0]) == before  # a copy, byte for byte
    assert journal_files(data_dir) == before  # and the originals untouched
    status, _ = serve_refused(data_dir)  # a restart loop refuses again, with no second copy
    assert status == 3 and sorted(data_dir.glob("damaged-*")) == folders
    return folders[0]


# --------------------------------------------------------------------------- the WAL


async def test_a_byte_flipped_in_the_wal_stops_the_start(spawn_broker: Spawn) -> None:
    process = spawn_broker()
    await enqueue_one_by_one(process)
    process.kill()
    flip_wal_frame(process.data_dir)

    assert_refused(process.data_dir, "SQLite's recovery would drop")


async def test_a_zeroed_wal_header_stops_the_start(spawn_broker: Spawn) -> None:
    process = spawn_broker()
    await enqueue_one_by_one(process)
    process.kill()
    zero_wal_header(process.data_dir)

    assert_refused(process.data_dir, "has no valid header")


async def test_accept_journal_loss_starts_on_what_sqlite_recovers(spawn_broker: Spawn) -> None:
    process = spawn_broker()
    job_ids = await enqueue_one_by_one(process)
    process.kill()
    flip_wal_frame(process.data_dir)
    damaged = journal_files(process.data_dir)

    process.extra_args = ("--accept-journal-loss",)
    process.start()
    found = await present(process, job_ids)

    assert found == job_ids[: len(found)] and 0 < len(found) < JOBS  # a prefix: the rest is lost
    accepted = [e for e in process.log_lines() if e["event"] == "journal_loss_accepted"]
    assert len(accepted) == 1 and "SQLite's recovery would drop" in accepted[0]["problem"]
    assert journal_files(Path(accepted[0]["set_aside"])) == damaged


# --------------------------------------------------------------------------- the database


async def test_a_byte_flipped_in_a_job_row_stops_the_start_naming_the_job(
    spawn_broker: Spawn,
) -> None:
    process = spawn_broker()
    job_ids = await enqueue_one_by_one(process)
    assert process.terminate() == 0  # a clean stop: every row is in the database file
    flip_payload_in_database(process.data_dir)

    assert_refused(process.data_dir, f"fail their checksum (job ids 'job-{FLAGGED:04d}')")

    process.extra_args = ("--accept-journal-loss",)
    process.start()
    assert await present(process, job_ids) == [j for j in job_ids if j != f"job-{FLAGGED:04d}"]
    assert process.terminate() == 0
    process.extra_args = ()
    process.start()  # the damaged row was deleted: no flag needed any more


# --------------------------------------------------------------------------- no damage


async def test_a_crash_without_damage_starts_normally(spawn_broker: Spawn) -> None:
    process = spawn_broker()
    job_ids = await enqueue_one_by_one(process)
    process.kill()
    assert (process.data_dir / "jobwire.db-wal").stat().st_size > 0

    process.start()

    assert await present(process, job_ids) == job_ids
    assert not list(process.data_dir.glob("damaged-*"))


async def test_a_clean_stop_leaves_the_state_in_the_database_alone(spawn_broker: Spawn) -> None:
    process = spawn_broker()
    await enqueue_one_by_one(process)
    assert process.terminate() == 0

    wal = process.data_dir / "jobwire.db-wal"
    assert not wal.exists() or wal.stat().st_size == 0
    # immutable=1: SQLite reads the database file as it is and ignores any WAL.
    uri = f"{(process.data_dir / 'jobwire.db').as_uri()}?immutable=1"
    with sqlite3.connect(uri, uri=True) as db:
        assert db.execute("SELECT count(*) FROM jobs").fetchone() == (JOBS,)
