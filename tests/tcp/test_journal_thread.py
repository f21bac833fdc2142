"""The journal's SQLite thread (``broker.dbthread``) and its direct read of the wal-index
(``broker.walformat``), against real database files in ``tmp_path``."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from pathlib import Path

import pytest

from broker.dbthread import SQLiteThread
from broker.journal import Journal, SyncMode
from broker.walformat import WalIndex, wal_bytes_for
from tests.tools.journaltools import make_job, upserts


def _thread_name(conn: sqlite3.Connection) -> str:
    return threading.current_thread().name


def _insert(conn: sqlite3.Connection, value: int) -> int:
    conn.execute("INSERT INTO t VALUES (?)", (value,))
    return value


async def test_calls_run_in_one_other_thread_in_queued_order(tmp_path: Path) -> None:
    db = await SQLiteThread.connect(tmp_path / "t.db")
    try:
        await db.run(sqlite3.Connection.execute, "CREATE TABLE t (v INTEGER)")
        names = await asyncio.gather(*(db.run(_thread_name) for _ in range(5)))
        assert await asyncio.gather(*(db.run(_insert, v) for v in range(100))) == list(range(100))

        rows = await db.run(lambda conn: conn.execute("SELECT v FROM t ORDER BY rowid").fetchall())
    finally:
        await db.close()

    assert len(set(names)) == 1 and names[0] != threading.current_thread().name
    assert [v for (v,) in rows] == list(range(100))


async def test_an_exception_in_the_thread_is_raised_to_the_caller(tmp_path: Path) -> None:
    db = await SQLiteThread.connect(tmp_path / "t.db")
    try:
        with pytest.raises(sqlite3.OperationalError, match="no such table"):
            await db.run(sqlite3.Connection.execute, "SELECT * FROM missing")
        assert await db.run(lambda conn: conn.execute("SELECT 7").fetchone()) == (7,)
    finally:
        await db.close()


async def test_a_cancelled_call_still_runs_and_later_calls_wait_for_it(tmp_path: Path) -> None:
    db = await SQLiteThread.connect(tmp_path / "t.db")
    try:
        await db.run(sqlite3.Connection.execute, "CREATE TABLE t (v INTEGER)")
        call = asyncio.create_task(db.run(_insert, 1))
        await asyncio.sleep(0)
        call.cancel()
        with pytest.raises(asyncio.CancelledError):
            await call
        assert await db.run(lambda conn: conn.execute("SELECT v FROM t").fetchall()) == [(1,)]
    finally:
        await db.close()


async def test_close_ends_the_thread_and_refuses_later_calls(tmp_path: Path) -> None:
    before = threading.active_count()
    db = await SQLiteThread.connect(tmp_path / "t.db")
    assert threading.active_count() == before + 1
    await db.close()
    await db.close()  # safe twice

    assert threading.active_count() == before
    with pytest.raises(sqlite3.ProgrammingError, match="closed"):
        await db.run(_thread_name)


async def test_a_failed_connect_raises_and_leaves_no_thread(tmp_path: Path) -> None:
    before = threading.active_count()
    with pytest.raises(sqlite3.OperationalError):
        await SQLiteThread.connect(tmp_path / "no such dir" / "t.db")
    await asyncio.sleep(0.05)  # the thread returns right after answering
    assert threading.active_count() == before


async def test_wal_index_frames_match_sqlites_own_count(tmp_path: Path) -> None:
    """Guards ``broker.walformat``: it reads ``mxFrame`` from the ``-shm`` file directly. If a
    SQLite release moved it, this disagrees with SQLite's own count and fails."""
    path = tmp_path / "j.db"
    journal = await Journal.open(path, sync=SyncMode.OFF)
    other = sqlite3.connect(path, isolation_level=None)
    try:
        page_size = other.execute("PRAGMA page_size").fetchone()[0]
        counts = []
        for round_ in range(3):
            jobs = [make_job(seq, payload=b"x" * 300) for seq in range(round_ * 500 + 1,
                                                                        round_ * 500 + 501)]
            await journal.write(upserts(*jobs))
            ours = WalIndex(path).frames()
            # Column 2 is the WAL's frame count as SQLite knows it (a PASSIVE checkpoint with
            # nothing else running copies them all, and the WAL restarts at the next write).
            _, sqlites, copied = other.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
            counts.append((ours, sqlites, copied))
            assert journal.wal_bytes() == wal_bytes_for(sqlites, page_size)
    finally:
        other.close()
        await journal.close()

    assert all(ours == sqlites == copied > 10 for ours, sqlites, copied in counts), counts
