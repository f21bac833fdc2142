"""The write-ahead journal: the core's state persisted to SQLite (WAL mode).

Theory of operation:

* ``Journal`` owns one SQLite connection on a thread of its own (``broker.dbthread``). ``open``
  sets every pragma and reads it back (a pragma SQLite silently ignores is an error, as litestream
  does), then creates or checks the schema (``broker.schema``). ``write`` turns a ``Changes`` into
  rows *at once*, in the event loop, from the live ``Job`` objects, then runs one transaction for
  all of them in the SQLite thread, in one hop. ``load`` reads everything back as a ``Snapshot``
  for ``Core.restore``.
* ``GroupCommitter`` (``broker/committer.py``) is the only writer while the broker runs: many
  requests per transaction.
* Checkpoints are chosen, not automatic: after a commit, when the WAL holds more than
  ``checkpoint_bytes`` (read from the wal-index: ``broker.walformat``), the committer runs a
  PASSIVE checkpoint (SQLite's own auto-checkpoint is set far higher, only as a safety net);
  ``close`` runs a TRUNCATE checkpoint. Incremental vacuum returns free pages once they are a
  large share of the file, so the files stay proportional to the live and retained jobs.

Invariants:

1. Every journal operation holds ``Journal._lock`` for its whole duration, and a write runs in
   the SQLite thread to its end even if its caller is cancelled: a transaction is never left open
   between calls.
2. A failed write rolls back and raises ``JournalError``; the connection stays usable, so writes
   resume once the fault (full disk, I/O error, a busy lock) clears.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import sqlite3
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final

from broker.core import Changes, QueueMeta, Snapshot
from broker.dbthread import SQLiteThread
from broker.jobs import Job
from broker.journal_sql import (
    JournalError,
    SyncMode,
    checkpoint,
    close_cursor,
    configure,
    describe,
    drop_rows,
    explain,
    fetch,
    lenient_text,
    load_rest,
    open_jobs,
    scalar,
    transaction,
    write_rows,
)
from broker.log import get_logger
from broker.records import RowDecoder, RowEncoder
from broker.schema import SchemaError
from broker.schema_schedules import DamagedSchedule, schedule_row, scheduler_from_row
from broker.walformat import WalIndex

__all__ = ["DEFAULT_CHECKPOINT_BYTES", "DamagedRows", "Journal", "JournalError", "SyncMode"]

_log = get_logger("journal")

DEFAULT_CHECKPOINT_BYTES: Final = 16 << 20
"""Run a PASSIVE checkpoint after a commit once the WAL holds more than this."""
LOAD_CHUNK: Final = 20_000
"""Rows fetched per round trip to the SQLite thread while loading."""
_sched_yield: Final[Callable[[], None] | None] = getattr(os, "sched_yield", None)



class DamagedRows(JournalError):
    """Job rows that fail their checksum or sit under another seq (``broker.records``).

    Attributes:
        rows: ``(seq, id)`` of each such row, in ``seq`` order.
    """

    def __init__(self, path: Path, rows: list[tuple[Any, Any]]) -> None:
        super().__init__(f"{len(rows)} job rows of {path} fail their checksum")
        self.rows = rows


class Journal:
    """The SQLite journal. Create with ``await Journal.open(path, sync=...)``.

    Attributes:
        transactions: write transactions committed since open (a statistic).
        checkpoints: checkpoints run since open (a statistic).
    """

    def __init__(
        self, db: SQLiteThread, path: Path, sync: SyncMode, checkpoint_bytes: int
    ) -> None:
        self._db: SQLiteThread | None = db
        self._path = path
        self._wal_index = WalIndex(path)
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
            db = await SQLiteThread.connect(path)
        except sqlite3.Error as exc:
            raise JournalError(
                f"cannot open the journal {path}: {explain(exc, path.parent)}"
            ) from exc
        journal = cls(db, path, SyncMode(sync), checkpoint_bytes)
        try:
            journal._page_size, journal._default_max_pages = await db.run(
                configure, path, journal.sync, checkpoint_bytes
            )
        except sqlite3.Error as exc:
            await db.close()
            raise JournalError(
                f"cannot set up the journal {path}: {explain(exc, path.parent)}"
            ) from exc
        except BaseException:
            await db.close()
            raise
        return journal

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
                return await db.run(describe)
            except sqlite3.Error as exc:
                raise JournalError(f"cannot read the journal settings: {exc}") from exc

    def _require_open(self) -> SQLiteThread:
        if self._db is None:
            raise JournalError(f"the journal {self._path} is closed")
        return self._db

    # ----------------------------------------------------------------------------- reading

    async def load(self, *, skip_damaged: bool = False) -> Snapshot:
        """Read every job and queue.

        Args:
            skip_damaged: leave out rows that fail their checksum rather than raise.

        Returns:
            All persisted jobs (in ``seq`` order, ACTIVE ones as they were written), queues, and
            ``next_seq``: the largest persisted ``next_seq``, and above every loaded ``seq``.

        Raises:
            DamagedRows: rows fail their checksum (unless ``skip_damaged``).
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
                try:
                    await self._scan_jobs(db, decoder, jobs)
                except sqlite3.OperationalError as exc:
                    if "decode" not in str(exc):
                        raise
                    # Text that is not UTF-8 (a damaged row): read again with text decoded
                    # leniently, so that the checksums name the rows.
                    jobs.clear()
                    decoder = RowDecoder()
                    await db.run(lenient_text, True)
                    try:
                        await self._scan_jobs(db, decoder, jobs)
                    finally:
                        await db.run(lenient_text, False)
                queue_rows, stored_next_seq, schedule_rows = await db.run(load_rest)
                schedulers = [scheduler_from_row(row) for row in schedule_rows]
            except sqlite3.Error as exc:
                raise JournalError(f"cannot read the journal {self._path}: {exc}") from exc
            except (SchemaError, DamagedSchedule) as exc:
                raise JournalError(f"the journal {self._path} is corrupt: {exc}") from exc
            finally:
                if gc_was_enabled:
                    gc.enable()
        if decoder.damaged and not skip_damaged:
            raise DamagedRows(self._path, decoder.damaged)
        queues = [
            QueueMeta(sys.intern(name), bool(paused), completed, failed, *flow)
            for name, paused, completed, failed, *flow in queue_rows
        ]
        next_seq = max(stored_next_seq or 0, jobs[-1].seq + 1 if jobs else 0)
        return Snapshot(jobs=jobs, queues=queues, next_seq=next_seq, schedules=schedulers)

    @staticmethod
    async def _scan_jobs(db: SQLiteThread, decoder: RowDecoder, out: list[Job]) -> None:
        cursor = await db.run(open_jobs)
        try:
            while rows := await db.run(fetch, cursor, LOAD_CHUNK):
                decoder.jobs_from_rows(rows, out)
        finally:
            await db.run(close_cursor, cursor)  # an open statement would block the checkpoint

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
        payload_row = self._encoder.payload_row
        upserts: list[tuple[Any, ...]] = []
        deletes: list[int] = []
        payloads: list[tuple[int, bytearray, int]] = []
        new_from = changes.new_from
        for seq, job in changes.jobs.items():
            if job is None:
                deletes.append(seq)
            else:
                upserts.append(job_row(job))
                if job.seq >= new_from:  # created since the last batch: its payload, once
                    payloads.append(payload_row(job))
        queues: list[tuple[Any, ...] | str] = [
            name if meta is None  # obliterated: its row goes
            else (meta.name, int(meta.paused), meta.total_completed, meta.total_failed,
                  meta.rate_max, meta.rate_period_ms, meta.concurrency, meta.paused_until)
            for name, meta in changes.queues.items()
        ]
        next_seq = changes.next_seq
        schedules = [ident if scheduler is None else schedule_row(scheduler)
                     for ident, scheduler in changes.schedules.items()]
        if not (upserts or deletes or queues or schedules):
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
            # statement. If this caller is cancelled, the queued transaction still runs to its
            # end in the thread, before any later journal operation.
            try:
                await db.run(transaction, write_rows, upserts, deletes, queues, next_seq,
                             schedules, payloads)
            except (sqlite3.Error, OverflowError) as exc:
                raise JournalError(f"journal write failed: {exc}") from exc
            self.transactions += 1

    async def drop_rows(self, seqs: list[int]) -> None:
        """Delete the job rows of ``seqs`` in one transaction (damaged rows, once set aside).

        Raises:
            JournalError: the transaction failed, or the journal is closed.
        """
        async with self._lock:
            db = self._require_open()
            try:
                await db.run(transaction, drop_rows, seqs)
            except sqlite3.Error as exc:
                raise JournalError(f"cannot delete damaged rows: {exc}") from exc

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
                effective = int(await db.run(scalar, f"PRAGMA max_page_count = {pages}"))
            except sqlite3.Error as exc:
                raise JournalError(f"cannot set the journal size limit: {exc}") from exc
        return effective * self._page_size

    # ----------------------------------------------------------------------------- checkpoints

    def wal_bytes(self) -> int:
        """The bytes of WAL content not yet reset by a checkpoint (0 if unknown or empty)."""
        return self._wal_index.wal_bytes(self._page_size)

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

    async def _checkpoint(self, db: SQLiteThread, truncate: bool) -> None:
        # Debug lines: the kill test (tests/tools/killtest.py) kills between them.
        mode = "TRUNCATE" if truncate else "PASSIVE"
        _log.debug("checkpoint_started", mode=mode)
        started = time.perf_counter()
        try:
            row = await db.run(checkpoint, truncate)
        except sqlite3.Error as exc:
            raise JournalError(f"checkpoint failed: {exc}") from exc
        self.checkpoints += 1
        _log.debug("checkpoint_complete", mode=mode,
                   seconds=round(time.perf_counter() - started, 4))
        if row is not None and row[0]:
            _log.warning("checkpoint_incomplete", mode="TRUNCATE" if truncate else "PASSIVE",
                         wal_frames=row[1], checkpointed=row[2])

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
            self._wal_index.close()
            try:
                await self._checkpoint(db, truncate=True)
            except JournalError as exc:
                _log.warning("final_checkpoint_failed", error=str(exc), path=str(self._path))
            finally:
                with contextlib.suppress(sqlite3.Error):
                    await db.close()
