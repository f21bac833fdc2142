"""The write-ahead journal: the core's state persisted to SQLite (WAL mode) through aiosqlite.

Theory of operation:

* ``Journal`` owns one aiosqlite connection (one SQLite thread). ``open`` sets every pragma and
  reads it back (a pragma SQLite silently ignores is an error, as litestream does), then creates
  or checks the schema (``broker.schema``). ``write`` turns a ``Changes`` into rows *at once*, in
  the event loop, from the live ``Job`` objects, then runs one transaction for all of them in the
  SQLite thread. ``load`` reads everything back as a ``Snapshot`` for ``Core.restore``.
* ``GroupCommitter`` (``broker/committer.py``) is the only writer while the broker runs: many
  requests per transaction.
* Checkpoints are chosen, not automatic: after a commit, when the WAL holds more than
  ``checkpoint_bytes``, the committer runs a PASSIVE checkpoint (SQLite's own auto-checkpoint is
  set far higher, only as a safety net); ``close`` runs a TRUNCATE checkpoint. Incremental vacuum
  returns free pages once they are a large share of the file, so the files stay proportional to
  the live and retained jobs.

Invariants:

1. Every journal operation holds ``Journal._lock`` for its whole duration, and a write runs in
   a task that cannot be cancelled half-way: a transaction is never left open between calls.
2. A failed write rolls back and raises ``JournalError``; the connection stays usable, so writes
   resume once the fault (full disk, I/O error, a busy lock) clears.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import itertools
import os
import sqlite3
import struct
import sys
from collections.abc import Awaitable, Callable, Iterator
from enum import StrEnum
from pathlib import Path
from typing import Any, Final, cast

import aiosqlite

from broker.core import Changes, QueueMeta, Snapshot
from broker.jobs import Job
from broker.log import get_logger
from broker.schema import (
    APPLICATION_ID,
    CREATE_STATEMENTS,
    REPLACE_JOB,
    SCHEMA_VERSION,
    SELECT_JOBS,
    SELECT_NEXT_SEQ,
    SELECT_QUEUES,
    UPSERT_CHUNKS,
    UPSERT_NEXT_SEQ,
    UPSERT_QUEUE,
    RowDecoder,
    RowEncoder,
    SchemaError,
    delete_jobs_sql,
    upsert_jobs_sql,
)

_log = get_logger("journal")

DEFAULT_CHECKPOINT_BYTES: Final = 16 << 20
"""Run a PASSIVE checkpoint after a commit once the WAL holds more than this."""
AUTOCHECKPOINT_FACTOR: Final = 8
"""SQLite's own auto-checkpoint (a safety net) fires at this multiple of ``checkpoint_bytes``."""
LOAD_CHUNK: Final = 20_000
"""Rows fetched per round trip to the SQLite thread while loading."""
VACUUM_MIN_FREE_PAGES: Final = 2_048
"""Free pages below which the file is left as it is (8 MiB of 4 KiB pages)."""
VACUUM_STEP_PAGES: Final = 8_192
"""At most this many pages are returned to the file system per checkpoint."""
BUSY_TIMEOUT_MS: Final = 5_000
CACHE_KIB: Final = 8 * 1024
_WAL_HEADER_BYTES: Final = 32
_WAL_FRAME_HEADER_BYTES: Final = 24
_chain: Final = itertools.chain.from_iterable
_sched_yield: Final[Callable[[], None] | None] = getattr(os, "sched_yield", None)
_SHM_MXFRAME: Final = struct.Struct("=I")  # wal-index header: mxFrame, a native u32 at offset 16


def _write_rows(
    conn: sqlite3.Connection,
    upserts: list[tuple[Any, ...]],
    deletes: list[tuple[str]],
    queues: list[tuple[str, int, int, int]],
    next_seq: int,
) -> None:
    """One journal transaction, run in the SQLite thread (``Journal.write``); a failed one is
    rolled back here, in the same thread hop.

    Raises:
        sqlite3.Error: a statement failed (nothing of the transaction was kept).
    """
    conn.execute("BEGIN IMMEDIATE")
    try:
        if deletes:
            _delete_rows(conn, deletes)
        # Fewer rows changed than given: an id came back with a new seq (rare): use REPLACE.
        if upserts and _upsert_rows(conn, upserts) != len(upserts):
            conn.executemany(REPLACE_JOB, upserts)
        if queues:
            conn.executemany(UPSERT_QUEUE, queues)
        if next_seq > 0:
            conn.execute(UPSERT_NEXT_SEQ, (next_seq,))
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            try:
                conn.execute("ROLLBACK")
            except sqlite3.Error as exc:
                _log.error("journal_rollback_failed", error=str(exc))
        raise


def _chunks(total: int) -> Iterator[tuple[int, int]]:
    """``(start, end)`` of each multi-row statement: the fewest ``UPSERT_CHUNKS`` sizes."""
    start = 0
    for size in UPSERT_CHUNKS:
        while total - start >= size:
            yield start, start + size
            start += size


def _upsert_rows(conn: sqlite3.Connection, rows: list[tuple[Any, ...]]) -> int:
    """Upsert ``rows`` with multi-row statements; return the number of rows changed."""
    changed = 0
    for start, end in _chunks(len(rows)):
        sql = upsert_jobs_sql(end - start)
        changed += conn.execute(sql, list(_chain(rows[start:end]))).rowcount
    return changed


def _delete_rows(conn: sqlite3.Connection, ids: list[tuple[str]]) -> None:
    """Delete the rows of ``ids`` with multi-row ``DELETE ... IN (...)`` statements."""
    for start, end in _chunks(len(ids)):
        conn.execute(delete_jobs_sql(end - start), [row[0] for row in ids[start:end]])


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


class Journal:
    """The SQLite journal. Create with ``await Journal.open(path, sync=...)``.

    Attributes:
        transactions: write transactions committed since open (a statistic).
        checkpoints: checkpoints run since open (a statistic).
    """

    def __init__(
        self, db: aiosqlite.Connection, path: Path, sync: SyncMode, checkpoint_bytes: int
    ) -> None:
        self._db: aiosqlite.Connection | None = db
        self._path = path
        self._wal_path = Path(f"{path}-wal")
        self._shm_path = Path(f"{path}-shm")
        self._shm_fd: int | None = None
        self.sync = sync
        self._checkpoint_bytes = checkpoint_bytes
        self._lock = asyncio.Lock()
        self._encoder = RowEncoder()
        self._page_size = 4096
        self._default_max_pages = 0
        self.transactions = 0
        self.checkpoints = 0

    # ----------------------------------------------------------------------------- opening

    @classmethod
    async def open(
        cls,
        path: Path,
        *,
        sync: SyncMode = SyncMode.FULL,
        checkpoint_bytes: int = DEFAULT_CHECKPOINT_BYTES,
    ) -> Journal:
        """Open (creating if needed) the journal at ``path``, check its pragmas and schema.

        Args:
            path: the database file; its directory must exist.
            sync: the durability of each commit.
            checkpoint_bytes: WAL size past which a commit is followed by a PASSIVE checkpoint.

        Returns:
            The open journal.

        Raises:
            JournalError: the file cannot be opened, is not a jobwire journal, was written by a
                newer jobwire (an unknown schema version), or a pragma did not take effect.
        """
        if not path.parent.is_dir():
            raise JournalError(f"cannot open the journal {path}: {path.parent} is not a directory")
        try:
            db = await aiosqlite.connect(path, isolation_level=None)
        except sqlite3.Error as exc:
            raise JournalError(f"cannot open the journal {path}: {exc}") from exc
        journal = cls(db, path, SyncMode(sync), checkpoint_bytes)
        try:
            await journal._configure(db)
        except BaseException:
            await db.close()
            raise
        return journal

    async def _configure(self, db: aiosqlite.Connection) -> None:
        try:
            await self._set_pragma(db, "busy_timeout", BUSY_TIMEOUT_MS, BUSY_TIMEOUT_MS)
            new = await self._scalar(db, "SELECT count(*) FROM sqlite_schema") == 0
            if new:
                # Only possible before the first table exists: lets checkpoint() shrink the file.
                await self._set_pragma(
                    db, "auto_vacuum", "INCREMENTAL", _AUTO_VACUUM_INCREMENTAL
                )
            await self._set_pragma(db, "journal_mode", "WAL", "wal")
            await self._set_pragma(db, "synchronous", self.sync.upper(), _SYNCHRONOUS[self.sync])
            self._page_size = int(await self._scalar(db, "PRAGMA page_size"))
            autocheckpoint_pages = max(
                1, AUTOCHECKPOINT_FACTOR * self._checkpoint_bytes // self._page_size
            )
            await self._set_pragma(db, "wal_autocheckpoint", autocheckpoint_pages,
                                   autocheckpoint_pages)
            await self._set_pragma(db, "journal_size_limit", self._checkpoint_bytes,
                                   self._checkpoint_bytes)
            await self._set_pragma(db, "cache_size", -CACHE_KIB, -CACHE_KIB)
            await self._set_pragma(db, "temp_store", "MEMORY", 2)
            self._default_max_pages = int(await self._scalar(db, "PRAGMA max_page_count"))
            if new:
                await self._create_schema(db)
            await self._check_schema(db)
        except sqlite3.Error as exc:
            raise JournalError(f"cannot set up the journal {self._path}: {exc}") from exc

    async def _set_pragma(
        self, db: aiosqlite.Connection, name: str, value: object, expected: object
    ) -> None:
        await db.execute(f"PRAGMA {name} = {value}")
        actual = await self._scalar(db, f"PRAGMA {name}")
        if actual != expected:
            raise JournalError(
                f"PRAGMA {name} = {value} did not take effect on {self._path}: it is {actual!r}, "
                f"expected {expected!r}"
            )

    @staticmethod
    async def _scalar(db: aiosqlite.Connection, sql: str) -> Any:
        async with db.execute(sql) as cursor:
            row = await cursor.fetchone()
        return None if row is None else row[0]

    async def _create_schema(self, db: aiosqlite.Connection) -> None:
        await db.execute("BEGIN IMMEDIATE")
        try:
            for statement in CREATE_STATEMENTS:
                await db.execute(statement)
            await db.execute(f"PRAGMA application_id = {APPLICATION_ID}")
            await db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            await db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:
                await db.execute("ROLLBACK")
            raise

    async def _check_schema(self, db: aiosqlite.Connection) -> None:
        application_id = await self._scalar(db, "PRAGMA application_id")
        version = await self._scalar(db, "PRAGMA user_version")
        if application_id != APPLICATION_ID:
            raise JournalError(
                f"{self._path} is not a jobwire journal (application_id {application_id:#x}); "
                "point --data-dir at a new directory or at a jobwire data directory"
            )
        if version > SCHEMA_VERSION:
            raise JournalError(
                f"{self._path} has schema version {version}, written by a newer jobwire; this "
                f"version reads schema version {SCHEMA_VERSION}: upgrade jobwire"
            )
        if version != SCHEMA_VERSION:
            raise JournalError(
                f"{self._path} has unknown schema version {version} (expected {SCHEMA_VERSION})"
            )

    async def describe(self) -> dict[str, Any]:
        """The journal connection's SQLite settings as they are now (for logs and checks).

        Returns:
            Pragma name -> value, e.g. ``{"journal_mode": "wal", "synchronous": 2, ...}``.

        Raises:
            JournalError: the journal is closed or a pragma cannot be read.
        """
        async with self._lock:
            db = self._require_open()
            try:
                return {name: await self._scalar(db, f"PRAGMA {name}") for name in _DESCRIBED}
            except sqlite3.Error as exc:
                raise JournalError(f"cannot read the journal settings: {exc}") from exc

    def _require_open(self) -> aiosqlite.Connection:
        if self._db is None:
            raise JournalError(f"the journal {self._path} is closed")
        return self._db

    # ----------------------------------------------------------------------------- reading

    async def load(self) -> Snapshot:
        """Read every job and queue.

        Returns:
            All persisted jobs (in ``seq`` order, ACTIVE ones as they were written), queues, and
            ``next_seq``: the largest persisted ``next_seq``, and above every loaded ``seq``.

        Raises:
            JournalError: the database cannot be read, or holds a row that is not a valid job.
        """
        jobs: list[Job] = []
        decoder = RowDecoder()
        async with self._lock:
            db = self._require_open()
            # Millions of new container objects would trigger a full collection again and again
            # (each one traversing every job built so far); nothing built here is garbage.
            gc_was_enabled = gc.isenabled()
            gc.disable()
            try:
                async with db.execute(SELECT_JOBS) as cursor:
                    while rows := await cursor.fetchmany(LOAD_CHUNK):
                        decoder.jobs_from_rows(rows, jobs)
                async with db.execute(SELECT_QUEUES) as cursor:
                    queue_rows = await cursor.fetchall()
                stored_next_seq = await self._scalar(db, SELECT_NEXT_SEQ)
                await db.execute("PRAGMA shrink_memory")  # the scan's pages are of no more use
            except sqlite3.Error as exc:
                raise JournalError(f"cannot read the journal {self._path}: {exc}") from exc
            except SchemaError as exc:
                raise JournalError(f"the journal {self._path} is corrupt: {exc}") from exc
            finally:
                if gc_was_enabled:
                    gc.enable()
        queues = [
            QueueMeta(sys.intern(name), bool(paused), completed, failed)
            for name, paused, completed, failed in queue_rows
        ]
        next_seq = max(stored_next_seq or 0, jobs[-1].seq + 1 if jobs else 0)
        return Snapshot(jobs=jobs, queues=queues, next_seq=next_seq)

    # ----------------------------------------------------------------------------- writing

    async def write(
        self, changes: Changes, *, dispatched: Callable[[], None] | None = None
    ) -> None:
        """Persist ``changes`` in one transaction.

        The rows are built before this coroutine first yields, from the jobs as they are now; a
        job changed later goes into a later write. The transaction is handed to the SQLite
        thread before the first yield too (unless another journal operation holds the lock);
        once handed over it runs to its end even if the caller is cancelled.

        Args:
            changes: jobs to upsert (the live ``Job``) or delete (``None``), queue metadata, and
                the core's ``next_seq`` (stored if above the stored one; 0 means unknown).
            dispatched: scheduled with ``call_soon`` just as the transaction is handed to the
                SQLite thread (not called when there is nothing to write or the journal is
                closed; the caller covers those cases).

        Raises:
            JournalError: the transaction failed and was rolled back (the cause is chained), or
                the journal is closed.
        """
        job_row = self._encoder.job_row
        upserts: list[tuple[Any, ...]] = []
        deletes: list[tuple[str]] = []
        for job_id, job in changes.jobs.items():
            if job is None:
                deletes.append((job_id,))
            else:
                upserts.append(job_row(job))
        queues = [
            (meta.name, int(meta.paused), meta.total_completed, meta.total_failed)
            for meta in changes.queues.values()
        ]
        next_seq = changes.next_seq
        if not (upserts or deletes or queues):
            return
        # Handed to the SQLite thread in this task's own step: a task created for it would only
        # start after the next I/O poll, behind every data_received that poll brings (measured:
        # 300-500 us during which the SQLite thread sat idle).
        async with self._lock:
            db = self._require_open()
            loop = asyncio.get_running_loop()
            if _sched_yield is not None:
                # Let the SQLite thread, just woken by the hop below, have this CPU now: with
                # every core busy (the bench's 2 cores, producers and workers included) it
                # otherwise waits for the scheduler while this loop parses more requests
                # (measured: median 300-680 us from hand-over to start, 40-55 us with this).
                loop.call_soon(_sched_yield)
            if dispatched is not None:
                # Runs at the next loop turn, after the hop below has been queued.
                loop.call_soon(dispatched)
            # One trip to the SQLite thread for the whole transaction (rolled back there if it
            # fails): awaiting each statement cost a thread hand-off and a loop wake-up per
            # statement. ``_execute`` and ``_conn`` are aiosqlite's own way to run a function
            # in its thread (>= 0.17). If this caller is cancelled, the queued transaction still
            # runs to its end in the thread, before any later journal operation.
            in_thread = cast(Callable[..., Awaitable[None]], db._execute)
            try:
                await in_thread(_write_rows, db._conn, upserts, deletes, queues, next_seq)
            except (sqlite3.Error, OverflowError) as exc:
                raise JournalError(f"journal write failed: {exc}") from exc
            self.transactions += 1

    async def set_size_limit(self, max_bytes: int | None) -> int:
        """Cap the database file's size (``PRAGMA max_page_count``), or lift the cap (``None``).

        Writes that would grow the file past the cap fail as on a full disk. SQLite never sets
        the cap below the file's current size.

        Args:
            max_bytes: the largest size in bytes, or ``None`` for SQLite's maximum.

        Returns:
            The cap in effect, in bytes.

        Raises:
            JournalError: the journal is closed or the pragma failed.
        """
        pages = (
            self._default_max_pages
            if max_bytes is None
            else max(1, -(-max_bytes // self._page_size))
        )
        async with self._lock:
            db = self._require_open()
            try:
                effective = int(await self._scalar(db, f"PRAGMA max_page_count = {pages}"))
            except sqlite3.Error as exc:
                raise JournalError(f"cannot set the journal size limit: {exc}") from exc
        return effective * self._page_size

    # ----------------------------------------------------------------------------- checkpoints

    def wal_bytes(self) -> int:
        """The bytes of WAL content not yet reset by a checkpoint (0 if unknown or empty).

        Read from the wal-index header (``mxFrame``, see sqlite.org/walformat.html), which unlike
        the WAL file's size falls back to zero when a checkpoint lets the WAL restart.
        """
        try:
            # Kept open: this runs after every commit. The file lives as long as our connection.
            if self._shm_fd is None:
                self._shm_fd = os.open(self._shm_path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
            header = os.pread(self._shm_fd, 20, 0)
            frames = _SHM_MXFRAME.unpack_from(header, 16)[0] if len(header) == 20 else 0
        except OSError:
            self._close_shm()
            try:
                return os.path.getsize(self._wal_path)
            except OSError:
                return 0
        if frames == 0:
            return 0
        return _WAL_HEADER_BYTES + frames * (self._page_size + _WAL_FRAME_HEADER_BYTES)

    def _close_shm(self) -> None:
        fd, self._shm_fd = self._shm_fd, None
        if fd is not None:
            with contextlib.suppress(OSError):
                os.close(fd)

    def checkpoint_due(self) -> bool:
        """Whether the WAL holds more than ``checkpoint_bytes`` (time for a PASSIVE checkpoint)."""
        return self.wal_bytes() > self._checkpoint_bytes

    async def checkpoint(self, *, truncate: bool = False) -> None:
        """Copy the WAL into the database file, and return free pages when they are many.

        Args:
            truncate: TRUNCATE mode (also empties the WAL file) rather than PASSIVE.

        Raises:
            JournalError: the journal is closed or the checkpoint failed.
        """
        async with self._lock:
            await self._checkpoint(self._require_open(), truncate)

    async def _checkpoint(self, db: aiosqlite.Connection, truncate: bool) -> None:
        try:
            free = int(await self._scalar(db, "PRAGMA freelist_count"))
            if free >= VACUUM_MIN_FREE_PAGES:
                pages = int(await self._scalar(db, "PRAGMA page_count"))
                if free * 4 >= pages:
                    # executescript steps the pragma to its end; execute() frees one page.
                    await db.executescript(
                        f"PRAGMA incremental_vacuum({min(free, VACUUM_STEP_PAGES)});"
                    )
            mode = "TRUNCATE" if truncate else "PASSIVE"
            async with db.execute(f"PRAGMA wal_checkpoint({mode})") as cursor:
                row = await cursor.fetchone()
        except sqlite3.Error as exc:
            raise JournalError(f"checkpoint failed: {exc}") from exc
        self.checkpoints += 1
        if row is not None and row[0]:
            _log.warning("checkpoint_incomplete", mode=mode, wal_frames=row[1],
                         checkpointed=row[2])

    # ----------------------------------------------------------------------------- closing

    async def close(self) -> None:
        """Wait for a running write, checkpoint (TRUNCATE) and close. Safe to call twice.

        A failing final checkpoint is logged, not raised: the WAL is replayed on the next open.
        """
        async with self._lock:
            db = self._db
            if db is None:
                return
            self._db = None
            self._close_shm()
            try:
                await self._checkpoint(db, truncate=True)
            except JournalError as exc:
                _log.warning("final_checkpoint_failed", error=str(exc), path=str(self._path))
            finally:
                with contextlib.suppress(sqlite3.Error):
                    await db.close()
