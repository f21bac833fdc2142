"""The start-up check: refuse a damaged journal rather than silently start without part of it.

Theory of operation. SQLite recovers a WAL by reading frames from its start and keeping every
transaction up to the first frame whose checksum or salts do not match; everything after that
point is dropped without a word, and the first write then overwrites it. A crash can only tear
the last transaction (frames are written in order, its commit frame last), so what recovery drops
after a crash is at most one unfinished transaction. Damage (a flipped byte, a zeroed header) can
sit anywhere, and recovery then drops every transaction after it. Before the journal is opened for
writing, ``open_journal``:

1. reads the WAL's header itself (``broker.walformat``): a WAL that can hold a frame but whose
   header SQLite would reject is damage (every commit in it would be dropped);
2. lets SQLite recover the WAL through a read-only connection (which never writes the WAL or the
   database, and never checkpoints on close), reads how many frames it kept (``WalIndex``), and
   counts the frames after those that were written since the WAL last restarted (they carry the
   header's salts; frames left from before a restart do not). Two or more commit frames among
   them are transactions that recovery would drop although they were written whole: damage;
3. opens the journal and loads it; every job row carries a checksum of its record
   (``broker.records``) and every payload row one of its seq and payload (``payload_checksum``),
   and a job whose row or payload fails its checksum (or whose record sits under another seq, or
   whose payload row is missing) is damage (SQLite has no page checksums: a flipped byte in the
   database file otherwise changes a payload or a state in silence).

On damage the files (``jobwire.db`` and its ``-wal``; the ``-shm`` is an index SQLite rebuilds)
are copied into a ``damaged-<UTC time>`` folder beside them, the originals are left as they are,
and the broker refuses to start
(``JournalDamaged``: one ``fatal`` log line, exit status 3), start after start, until someone
looks. With ``--accept-journal-loss`` it logs what is lost and starts: SQLite's recovery stands,
and rows that failed their checksum are deleted (the copy keeps them).

Not detected: damage inside the WAL's last transaction (it looks like a crash during that commit,
and is dropped as one); a WAL cut short (what is left is a valid, shorter WAL); damage in the
database file outside job rows (SQLite reports what it notices in its own structures as an I/O or
"malformed" error); a row rewritten with a matching checksum. After a power loss in ``--sync
normal`` or ``off`` the OS may have written the WAL out of order, which can look like damage:
that is a refusal to start that ``--accept-journal-loss`` answers, never a silent loss.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import time
from pathlib import Path

from broker.core import Snapshot
from broker.journal import (
    DEFAULT_CHECKPOINT_BYTES,
    DamagedRows,
    Journal,
    JournalError,
    SyncMode,
)
from broker.log import get_logger
from broker.walformat import WAL_HEADER_BYTES, WalIndex, frames_after, read_wal_header

_log = get_logger("journal")

EXIT_DAMAGED = 3
"""``jobwire serve``'s exit status when it refuses a damaged journal."""
_SIDE_FILES = ("", "-wal")  # the -shm is an index SQLite rebuilds from these
_SHOWN_IDS = 20


class JournalDamaged(JournalError):
    """The journal's files are damaged; the broker refuses to start on them.

    Attributes:
        set_aside: the folder holding a copy of the files (``None`` if the copy failed).
    """

    def __init__(self, message: str, set_aside: Path | None) -> None:
        super().__init__(message)
        self.set_aside = set_aside


def wal_damage(db_path: Path) -> str | None:
    """What is wrong with the WAL of the journal at ``db_path``, or ``None`` if nothing is.

    Neither the WAL nor the database is written; only the ``-shm`` file is rebuilt.
    """
    wal = Path(f"{db_path}-wal")
    try:
        with wal.open("rb") as file:
            size = os.fstat(file.fileno()).st_size
            head = file.read(WAL_HEADER_BYTES)
    except FileNotFoundError:
        return None
    except OSError as exc:
        return f"the WAL {wal} cannot be read: {exc}"
    if size <= WAL_HEADER_BYTES:
        return None  # no room for a frame: nothing to lose
    header = read_wal_header(head)
    if header is None:
        return (f"the WAL {wal} ({size:,} bytes) has no valid header, so SQLite would drop "
                "every commit in it")
    recovered = _recovered_frames(db_path)
    if recovered is None:
        return None  # SQLite cannot read the database: Journal.open says why
    try:
        frames, commits = frames_after(wal, header, recovered)
    except OSError as exc:
        return f"the WAL {wal} cannot be read: {exc}"
    if commits < 2:
        return None
    return (f"the WAL {wal} is damaged after frame {recovered}: SQLite's recovery would drop "
            f"{commits} transactions ({frames} frames, {size:,} bytes of WAL) written after it")


def _recovered_frames(db_path: Path) -> int | None:
    """How many WAL frames SQLite's own recovery keeps (``None`` if it cannot open the file)."""
    if not db_path.exists():
        return None
    try:
        conn = sqlite3.connect(f"{db_path.absolute().as_uri()}?mode=ro", uri=True)
    except sqlite3.Error:
        return None
    try:
        conn.execute("SELECT count(*) FROM sqlite_schema").fetchone()  # runs the recovery
        index = WalIndex(db_path)
        frames = index.frames()
        index.close()
        return frames
    except sqlite3.Error:
        return None
    finally:
        conn.close()


def set_aside(db_path: Path) -> Path:
    """Copy the journal's files into a new ``damaged-<UTC time>`` folder beside them.

    If the newest such folder already holds these very files (same sizes and modification
    times: a restart loop), no new copy is made and that folder is returned.

    Raises:
        OSError: the copy failed (a partial folder is left).
    """
    files = [Path(f"{db_path}{suffix}") for suffix in _SIDE_FILES]
    files = [path for path in files if path.exists() and path.stat().st_size > 0]
    previous = sorted(db_path.parent.glob("damaged-*"))
    if previous and all(_same_file(path, previous[-1] / path.name) for path in files):
        return previous[-1]
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    folder = db_path.parent / f"damaged-{stamp}"
    suffix = 1
    while folder.exists():
        folder = db_path.parent / f"damaged-{stamp}-{suffix}"
        suffix += 1
    folder.mkdir()
    for path in files:
        shutil.copy2(path, folder / path.name)
    return folder


def _same_file(path: Path, copy: Path) -> bool:
    try:
        a, b = path.stat(), copy.stat()
    except OSError:
        return False
    return a.st_size == b.st_size and a.st_mtime_ns == b.st_mtime_ns


def _damaged(db_path: Path, problem: str, accept_loss: bool) -> None:
    """Set the files aside; raise ``JournalDamaged``, or log the accepted loss and return."""
    try:
        folder: Path | None = set_aside(db_path)
    except OSError as exc:
        folder = None
        problem = f"{problem} (and copying the files aside failed: {exc})"
    if not accept_loss:
        where = f"a copy of the files is in {folder}; " if folder is not None else ""
        raise JournalDamaged(
            f"{problem}. {where}jobwire refuses to start on a damaged journal: restore it from "
            "a backup, or start with --accept-journal-loss to go on without what is lost",
            folder,
        )
    _log.warning("journal_loss_accepted", problem=problem,
                 set_aside=None if folder is None else str(folder))


async def open_journal(
    db_path: Path, *, sync: SyncMode, accept_loss: bool,
    checkpoint_bytes: int = DEFAULT_CHECKPOINT_BYTES,
) -> tuple[Journal, Snapshot]:
    """Check, open and load the journal at ``db_path`` (the steps in this module's docstring).

    Returns:
        The open journal and what it holds (without rows that failed their checksum, which are
        deleted, when ``accept_loss`` is set).

    Raises:
        JournalDamaged: the journal is damaged and ``accept_loss`` is not set.
        JournalError: the journal cannot be opened or read.
    """
    problem = wal_damage(db_path)
    if problem is not None:
        _damaged(db_path, problem, accept_loss)
    journal = await Journal.open(db_path, sync=sync, checkpoint_bytes=checkpoint_bytes)
    try:
        try:
            snapshot = await journal.load()
        except DamagedRows as exc:
            shown = ", ".join(repr(job_id) if job_id is not None else f"(unreadable, seq {seq})"
                              for seq, job_id in exc.rows[:_SHOWN_IDS])
            more = f" and {len(exc.rows) - _SHOWN_IDS} more" if len(exc.rows) > _SHOWN_IDS else ""
            _damaged(db_path, f"{exc} (job ids {shown}{more})", accept_loss)
            snapshot = await journal.load(skip_damaged=True)
            await journal.drop_rows([seq for seq, _ in exc.rows])
    except BaseException:
        await journal.close()
        raise
    return journal, snapshot
