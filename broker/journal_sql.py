"""The journal's work in the SQLite thread: pragmas, schema, transactions, reads, checkpoints.

Each public function here takes the connection first and runs whole in the journal's SQLite thread
(``broker.dbthread.SQLiteThread.run``), so each costs one hop from the event loop however many
statements it makes; ``broker.journal`` awaits them and never touches the connection itself.
Nothing here runs in the event loop, and nothing here awaits.
"""

from __future__ import annotations

import itertools
import os
import sqlite3
import time
from collections.abc import Callable, Iterator
from enum import StrEnum
from pathlib import Path
from typing import Any, Final, TypeVar

from broker.log import get_logger
from broker.migrations import migrate
from broker.schema import (
    APPLICATION_ID,
    CREATE_STATEMENTS,
    DELETE_QUEUE,
    SCHEMA_VERSION,
    SELECT_JOBS,
    SELECT_NEXT_SEQ,
    SELECT_QUEUES,
    UPSERT_CHUNKS,
    UPSERT_NEXT_SEQ,
    UPSERT_QUEUE,
    delete_jobs_sql,
    insert_payloads_sql,
    upsert_jobs_sql,
)
from broker.schema_schedules import DELETE_SCHEDULE, SELECT_SCHEDULES, UPSERT_SCHEDULE

_log = get_logger("journal")

AUTOCHECKPOINT_FACTOR: Final = 8
"""SQLite's own auto-checkpoint (a safety net) fires at this multiple of ``checkpoint_bytes``."""
VACUUM_MIN_FREE_PAGES: Final = 2_048
"""Free pages below which the file is left as it is (8 MiB of 4 KiB pages)."""
VACUUM_STEP_PAGES: Final = 8_192
"""At most this many pages are returned to the file system per checkpoint."""
BUSY_TIMEOUT_MS: Final = 5_000
CACHE_KIB: Final = 8 * 1024
_chain: Final = itertools.chain.from_iterable
_T = TypeVar("_T")


class JournalError(Exception):
    """The journal cannot be opened, read or written; maps to ``JOURNAL_FAILURE`` on the wire."""


class SyncMode(StrEnum):
    """Durability of a commit: SQLite's ``synchronous`` setting."""

    FULL = "full"  # survives power loss
    NORMAL = "normal"  # survives a broker crash; the last commits may be lost on power loss
    OFF = "off"  # no promise


_SYNCHRONOUS: Final = {SyncMode.FULL: 2, SyncMode.NORMAL: 1, SyncMode.OFF: 0}
_AUTO_VACUUM_INCREMENTAL: Final = 2
_DESCRIBED: Final = (
    "journal_mode",
    "synchronous",
    "wal_autocheckpoint",
    "journal_size_limit",
    "auto_vacuum",
    "busy_timeout",
    "page_size",
    "cache_size",
    "application_id",
    "user_version",
)

DISK_FULL_BYTES: Final = 1 << 20
"""Free space below which an I/O error at open is reported as a full disk."""


def explain(exc: sqlite3.Error, directory: Path) -> str:
    """SQLite's message, saying "disk full" when that is the cause.

    On a full disk SQLite often reports a generic "disk I/O error" (it cannot grow the ``-shm``
    file, ``SQLITE_IOERR_SHMSIZE``); the file system's free space tells the cause.
    """
    name = getattr(exc, "sqlite_errorname", "")
    if name == "SQLITE_FULL" or name.startswith("SQLITE_IOERR"):
        try:
            stats = os.statvfs(directory)
        except OSError:
            return str(exc)
        free = stats.f_bavail * stats.f_frsize
        if name == "SQLITE_FULL" or free < DISK_FULL_BYTES:
            return f"disk full ({free:,} bytes free in {directory}; SQLite said: {exc})"
    return str(exc)


# ------------------------------------------------------------------------- statements


def scalar(conn: sqlite3.Connection, sql: str) -> Any:
    row = conn.execute(sql).fetchone()
    return None if row is None else row[0]


def _set_pragma(
    conn: sqlite3.Connection, path: Path, name: str, value: object, expected: object
) -> None:
    conn.execute(f"PRAGMA {name} = {value}")
    actual = scalar(conn, f"PRAGMA {name}")
    if actual != expected:
        raise JournalError(
            f"PRAGMA {name} = {value} did not take effect on {path}: it is {actual!r}, "
            f"expected {expected!r}"
        )


def configure(
    conn: sqlite3.Connection, path: Path, sync: SyncMode, checkpoint_bytes: int
) -> tuple[int, int]:
    """Set and check every pragma, create or check the schema.

    Returns:
        ``(page_size, max_page_count)`` as SQLite has them.
    """
    _set_pragma(conn, path, "busy_timeout", BUSY_TIMEOUT_MS, BUSY_TIMEOUT_MS)
    new = scalar(conn, "SELECT count(*) FROM sqlite_schema") == 0
    if new:
        # Only possible before the first table exists: lets checkpoint() shrink the file.
        _set_pragma(conn, path, "auto_vacuum", "INCREMENTAL", _AUTO_VACUUM_INCREMENTAL)
    _set_pragma(conn, path, "journal_mode", "WAL", "wal")
    _set_pragma(conn, path, "synchronous", sync.upper(), _SYNCHRONOUS[sync])
    page_size = int(scalar(conn, "PRAGMA page_size"))
    autocheckpoint_pages = max(1, AUTOCHECKPOINT_FACTOR * checkpoint_bytes // page_size)
    _set_pragma(conn, path, "wal_autocheckpoint", autocheckpoint_pages, autocheckpoint_pages)
    _set_pragma(conn, path, "journal_size_limit", checkpoint_bytes, checkpoint_bytes)
    _set_pragma(conn, path, "cache_size", -CACHE_KIB, -CACHE_KIB)
    _set_pragma(conn, path, "temp_store", "MEMORY", 2)
    max_pages = int(scalar(conn, "PRAGMA max_page_count"))
    if new:
        transaction(conn, _create_schema)
    _check_schema(conn, path)
    return page_size, max_pages


def _create_schema(conn: sqlite3.Connection) -> None:
    for statement in CREATE_STATEMENTS:
        conn.execute(statement)
    conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")


def _check_schema(conn: sqlite3.Connection, path: Path) -> None:
    application_id = scalar(conn, "PRAGMA application_id")
    version = scalar(conn, "PRAGMA user_version")
    if application_id != APPLICATION_ID:
        raise JournalError(
            f"{path} is not a jobwire journal (application_id {application_id:#x}); "
            "point --data-dir at a new directory or at a jobwire data directory"
        )
    if version > SCHEMA_VERSION:
        raise JournalError(
            f"{path} has schema version {version}, written by a newer jobwire; this "
            f"version reads schema version {SCHEMA_VERSION}: upgrade jobwire"
        )
    if 1 <= version < SCHEMA_VERSION:  # an older schema (broker.migrations): in one transaction
        started = time.perf_counter()
        jobs = transaction(conn, migrate, version)
        _log.info("journal_migrated", path=str(path), from_version=version,
                  to_version=SCHEMA_VERSION, jobs=jobs,
                  seconds=round(time.perf_counter() - started, 3))
    elif version != SCHEMA_VERSION:
        raise JournalError(
            f"{path} has unknown schema version {version} (expected {SCHEMA_VERSION})"
        )


def transaction(conn: sqlite3.Connection, body: Callable[..., _T], *args: Any) -> _T:
    """``body(conn, *args)`` in one ``BEGIN IMMEDIATE`` transaction, rolled back if it fails.

    Returns:
        What ``body`` returned.

    Raises:
        sqlite3.Error: a statement failed (nothing of the transaction was kept).
    """
    conn.execute("BEGIN IMMEDIATE")
    try:
        result = body(conn, *args)
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            try:
                conn.execute("ROLLBACK")
            except sqlite3.Error as exc:
                _log.error("journal_rollback_failed", error=str(exc))
        raise
    return result


def write_rows(
    conn: sqlite3.Connection,
    upserts: list[tuple[Any, ...]],
    deletes: list[int],
    queues: list[tuple[Any, ...] | str],
    next_seq: int,
    schedules: list[tuple[Any, ...]] | None = None,
    payloads: list[tuple[int, bytearray, int]] = [],  # noqa: B006  # read only
) -> None:
    """The statements of one journal transaction (``Journal.write``, through ``transaction``):
    a ``schedules`` item of two values is a deleted scheduler's ``(queue, key)``; ``payloads``
    are the payload rows of the new jobs among ``upserts``."""
    if deletes:
        _delete_rows(conn, deletes)
    if upserts:
        upsert_rows(conn, upserts)
    if payloads:
        for start, end in _chunks(len(payloads)):
            conn.execute(insert_payloads_sql(end - start), list(_chain(payloads[start:end])))
    if queues:  # a name alone: the queue was obliterated
        conn.executemany(DELETE_QUEUE, [(row,) for row in queues if isinstance(row, str)])
        conn.executemany(UPSERT_QUEUE, [row for row in queues if not isinstance(row, str)])
    if next_seq > 0:
        conn.execute(UPSERT_NEXT_SEQ, (next_seq,))
    if schedules:
        conn.executemany(DELETE_SCHEDULE, [row for row in schedules if len(row) == 2])
        conn.executemany(UPSERT_SCHEDULE, [row for row in schedules if len(row) > 2])


def _chunks(total: int) -> Iterator[tuple[int, int]]:
    """``(start, end)`` of each multi-row statement: the fewest ``UPSERT_CHUNKS`` sizes."""
    start = 0
    for size in UPSERT_CHUNKS:
        while total - start >= size:
            yield start, start + size
            start += size


def upsert_rows(conn: sqlite3.Connection, rows: list[tuple[Any, ...]]) -> int:
    """Upsert ``rows`` with multi-row statements; return the number of rows changed."""
    changed = 0
    for start, end in _chunks(len(rows)):
        sql = upsert_jobs_sql(end - start)
        changed += conn.execute(sql, list(_chain(rows[start:end]))).rowcount
    return changed


def _delete_rows(conn: sqlite3.Connection, seqs: list[int]) -> None:
    """Delete the rows of ``seqs`` with multi-row ``DELETE ... IN (...)`` statements."""
    for start, end in _chunks(len(seqs)):
        chunk = seqs[start:end]
        for statement in delete_jobs_sql(end - start):
            conn.execute(statement, chunk)


def drop_rows(conn: sqlite3.Connection, seqs: list[int]) -> None:
    conn.executemany("DELETE FROM jobs WHERE seq = ?", [(seq,) for seq in seqs])
    conn.executemany("DELETE FROM payloads WHERE seq = ?", [(seq,) for seq in seqs])


def open_jobs(conn: sqlite3.Connection) -> sqlite3.Cursor:
    return conn.execute(SELECT_JOBS)


def fetch(conn: sqlite3.Connection, cursor: sqlite3.Cursor, rows: int) -> list[Any]:
    return cursor.fetchmany(rows)


def close_cursor(conn: sqlite3.Connection, cursor: sqlite3.Cursor) -> None:
    cursor.close()


def lenient_text(conn: sqlite3.Connection, lenient: bool) -> None:
    """Read TEXT that is not UTF-8 (damage) as ``str`` with surrogates rather than fail."""
    conn.text_factory = _lenient_text if lenient else str


def _lenient_text(data: bytes) -> str:
    return data.decode("utf-8", "surrogateescape")


def load_rest(conn: sqlite3.Connection) -> tuple[list[Any], Any, list[Any]]:
    queue_rows = conn.execute(SELECT_QUEUES).fetchall()
    next_seq = scalar(conn, SELECT_NEXT_SEQ)
    schedule_rows = conn.execute(SELECT_SCHEDULES).fetchall()
    conn.execute("PRAGMA shrink_memory")  # the scan's pages are of no more use
    return queue_rows, next_seq, schedule_rows


def checkpoint(conn: sqlite3.Connection, truncate: bool) -> tuple[int, int, int] | None:
    free = int(scalar(conn, "PRAGMA freelist_count"))
    if free >= VACUUM_MIN_FREE_PAGES:
        pages = int(scalar(conn, "PRAGMA page_count"))
        if free * 4 >= pages:
            # executescript steps the pragma to its end; execute() frees one page.
            conn.executescript(f"PRAGMA incremental_vacuum({min(free, VACUUM_STEP_PAGES)});")
    mode = "TRUNCATE" if truncate else "PASSIVE"
    row: tuple[int, int, int] | None = conn.execute(f"PRAGMA wal_checkpoint({mode})").fetchone()
    return row


def describe(conn: sqlite3.Connection) -> dict[str, Any]:
    return {name: scalar(conn, f"PRAGMA {name}") for name in _DESCRIBED}
