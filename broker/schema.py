"""The journal's SQLite schema and the conversion between ``Job`` objects and table rows.

Layout (``SCHEMA_VERSION`` 6, stored in ``PRAGMA user_version``; ``PRAGMA application_id`` marks
the file as a jobwire journal):

* ``jobs``: one row per job, keyed by ``seq`` alone: the ``INTEGER PRIMARY KEY`` (the rowid), so
  inserts of new jobs append to the table's B-tree, a full scan returns jobs in enqueue order,
  and the upsert's conflict target and the key of deletes is the rowid. ``seq`` never repeats (the
  core's ``next_seq`` only grows), so a job deleted and enqueued again under the same id is a new
  row. ``id`` has no index: user ids are unique per queue, not per broker (schema 4), and nothing
  reads a row by id (the core loads every row at start); without the UNIQUE index each row costs
  one B-tree instead of two. ``state`` is a small integer (``STATE_CODES``); ``options`` is NULL
  for ``NO_OPTIONS`` and otherwise a msgpack array (see ``encode_options``); ``progress`` is
  msgpack, NULL when there is none. Lease fields (``lease_token``, ``lease_deadline``,
  ``owner``) are never stored: a lease does not survive a restart, and the core's recovery turns
  ACTIVE rows into failed attempts. ``crc`` is ``row_checksum`` of the row's other columns,
  checked on load (``broker.integrity``).
* ``payloads`` (schema 6): each job's payload, keyed by the job's ``seq``, written once with the
  job's first row and deleted with it. A payload never changes, and every state change rewrites
  the job's row: SQLite rewrites a whole record (overflow pages included) when its size changes,
  so a payload in ``jobs`` was written again on every reserve and ack (and checksummed again).
  ``crc`` is ``payload_checksum(seq, payload)``: a payload moved to another row fails it too.
* ``queues``: queue metadata keyed by name, with its flow control (schema 3): ``rate_max`` starts
  per ``rate_period_ms``, ``concurrency``, ``paused_until`` (a "not now" pause); NULL: not set.
* ``meta``: broker-wide integers; ``next_seq`` (the core's next sequence number, which only
  grows, so broker-assigned ids stay unique after the newest job was deleted).
* ``schedules``: repeatable jobs' schedulers (schema 5; ``broker/schema_schedules``).

History: schema 1 had no ``crc``; 2 added it and kept a UNIQUE index on ``id``; 3 added the
queues' flow control columns; 4 dropped the index on ``id``; 5 added ``schedules``; 6 moved
payloads to their own table. ``broker.migrations`` brings an older journal to
``SCHEMA_VERSION`` in one transaction.

Invariants: ``job_row`` and ``JOB_COLUMNS`` list the same columns in the same order, and
``jobs_from_rows`` reads them in that order (``SELECT_JOBS``: the job's columns, then its
payload and the payload's ``crc``); changing any of them means a new schema version.
"""

from __future__ import annotations

import struct
import sys
import zlib
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Final

import msgpack

from broker.jobs import NO_OPTIONS, Job, JobOptions
from broker.schema_schedules import CREATE_SCHEDULES
from protocol.model import Backoff, BackoffKind, JobState, Retention

SCHEMA_VERSION: Final = 6
APPLICATION_ID: Final = 0x6A627772  # "jbwr": tells a jobwire journal from any other SQLite file

JOB_COLUMNS: Final = (
    "seq",
    "id",
    "queue",
    "name",
    "priority",
    "run_at",
    "max_attempts",
    "options",
    "state",
    "created_at",
    "attempts",
    "started_at",
    "finished_at",
    "progress",
    "result",
    "error",
    "crc",
)
DATA_COLUMNS: Final = len(JOB_COLUMNS) - 1
"""Every column but ``crc``, which is the checksum of the others (``row_checksum``)."""

CREATE_JOBS: Final = """
    CREATE TABLE {table} (
        seq          INTEGER PRIMARY KEY,
        id           TEXT    NOT NULL,
        queue        TEXT    NOT NULL,
        name         TEXT    NOT NULL,
        priority     INTEGER NOT NULL,
        run_at       INTEGER NOT NULL,
        max_attempts INTEGER NOT NULL,
        options      BLOB,
        state        INTEGER NOT NULL,
        created_at   INTEGER NOT NULL,
        attempts     INTEGER NOT NULL,
        started_at   INTEGER,
        finished_at  INTEGER,
        progress     BLOB,
        result       BLOB,
        error        TEXT,
        crc          INTEGER NOT NULL DEFAULT 0
    )
    """
"""The ``jobs`` table of the current schema (``{table}`` is its name: a migration builds it under
another name first)."""

CREATE_PAYLOADS: Final = """
    CREATE TABLE payloads (
        seq     INTEGER PRIMARY KEY,
        payload BLOB    NOT NULL,
        crc     INTEGER NOT NULL
    )
    """

CREATE_STATEMENTS: Final = (
    CREATE_JOBS.format(table="jobs"),
    CREATE_PAYLOADS,
    """
    CREATE TABLE queues (
        name            TEXT    PRIMARY KEY,
        paused          INTEGER NOT NULL,
        total_completed INTEGER NOT NULL,
        total_failed    INTEGER NOT NULL,
        rate_max        INTEGER,
        rate_period_ms  INTEGER,
        concurrency     INTEGER,
        paused_until    INTEGER
    ) WITHOUT ROWID
    """,
    """
    CREATE TABLE meta (
        key   TEXT    PRIMARY KEY,
        value INTEGER NOT NULL
    ) WITHOUT ROWID
    """,
    CREATE_SCHEDULES,
)

_INSERT_JOB: Final = (
    f"INTO jobs ({', '.join(JOB_COLUMNS)}) VALUES ({', '.join('?' * len(JOB_COLUMNS))})"
)
UPSERT_JOB: Final = (
    f"INSERT {_INSERT_JOB} ON CONFLICT (seq) DO UPDATE SET "
    + ", ".join(f"{column} = excluded.{column}" for column in JOB_COLUMNS if column != "seq")
)
"""Insert a job, or update its row in place (the rowid is the conflict target: one B-tree)."""
_UPSERT_SET: Final = UPSERT_JOB[UPSERT_JOB.index(" ON CONFLICT"):]
_ROW_PARAMS: Final = f"({', '.join('?' * len(JOB_COLUMNS))})"
UPSERT_CHUNKS: Final = (256, 128, 64, 32, 16, 8, 4, 2, 1)
"""Rows per multi-row upsert statement: a batch is written as the fewest statements of these
sizes (43 rows: 32 + 8 + 2 + 1); 256 rows bind 4,608 parameters (SQLite allows 32,766). One
statement binds all its rows at once and steps once, where ``executemany`` steps once per row;
each step gives up the GIL, and taking it back waits for the event loop's current callback to
end (the SQLite thread spent about 40% of its time in that)."""


def upsert_jobs_sql(rows: int) -> str:
    """``UPSERT_JOB`` for ``rows`` rows in one statement (``rows`` in ``UPSERT_CHUNKS``)."""
    return _UPSERT_MANY[rows]


_UPSERT_MANY: Final = {
    rows: f"INSERT INTO jobs ({', '.join(JOB_COLUMNS)}) VALUES "
    + ", ".join([_ROW_PARAMS] * rows) + _UPSERT_SET
    for rows in UPSERT_CHUNKS
}
_INSERT_PAYLOADS: Final = {
    rows: "INSERT INTO payloads (seq, payload, crc) VALUES "
    + ", ".join(["(?, ?, ?)"] * rows) + " ON CONFLICT (seq) DO NOTHING"
    for rows in UPSERT_CHUNKS
}
_DELETE_MANY: Final = {
    rows: (f"DELETE FROM jobs WHERE seq IN ({', '.join('?' * rows)})",
           f"DELETE FROM payloads WHERE seq IN ({', '.join('?' * rows)})")
    for rows in UPSERT_CHUNKS
}


def insert_payloads_sql(rows: int) -> str:
    """Insert ``rows`` payload rows in one statement (``rows`` in ``UPSERT_CHUNKS``); a row
    already there is left as it is (a payload never changes; a retried batch rewrites)."""
    return _INSERT_PAYLOADS[rows]


def delete_jobs_sql(rows: int) -> tuple[str, str]:
    """Delete the jobs of ``rows`` seqs and their payloads: two statements (``rows`` in
    ``UPSERT_CHUNKS``)."""
    return _DELETE_MANY[rows]

QUEUE_COLUMNS: Final = (
    "name", "paused", "total_completed", "total_failed", "rate_max", "rate_period_ms",
    "concurrency", "paused_until",
)
UPSERT_QUEUE: Final = (
    f"INSERT INTO queues ({', '.join(QUEUE_COLUMNS)}) "
    f"VALUES ({', '.join('?' * len(QUEUE_COLUMNS))}) ON CONFLICT (name) DO UPDATE SET "
    + ", ".join(f"{column} = excluded.{column}" for column in QUEUE_COLUMNS[1:])
)
DELETE_QUEUE: Final = "DELETE FROM queues WHERE name = ?"
UPSERT_NEXT_SEQ: Final = (
    "INSERT INTO meta (key, value) VALUES ('next_seq', ?) "
    "ON CONFLICT (key) DO UPDATE SET value = max(value, excluded.value)"
)
SELECT_NEXT_SEQ: Final = "SELECT value FROM meta WHERE key = 'next_seq'"
SELECT_JOBS: Final = (
    f"SELECT {', '.join(f'jobs.{column}' for column in JOB_COLUMNS)}, payloads.payload, "
    "payloads.crc FROM jobs LEFT JOIN payloads ON payloads.seq = jobs.seq ORDER BY jobs.seq"
)
"""Every job in ``seq`` order (the rowid: a plain scan, no sort step), with its payload (NULL if
its payload row is missing: damage)."""
SELECT_QUEUES: Final = f"SELECT {', '.join(QUEUE_COLUMNS)} FROM queues"

STATES: Final[tuple[JobState, ...]] = (
    JobState.WAITING,
    JobState.DELAYED,
    JobState.ACTIVE,
    JobState.COMPLETED,
    JobState.FAILED,
)
"""Stored state code -> state (the code is the index). Append only: codes are on disk."""

STATE_CODES: Final[dict[JobState, int]] = {state: code for code, state in enumerate(STATES)}

_packb = msgpack.packb
_crc32 = zlib.crc32
_unpackb = msgpack.unpackb


class SchemaError(ValueError):
    """A stored row cannot be turned back into a job (corrupt or foreign data)."""


# --------------------------------------------------------------------------- options


def _retention_to_wire(retention: Retention | None) -> list[int | None] | None:
    return None if retention is None else [retention.count, retention.age_ms]


def _retention_from_wire(value: Any) -> Retention | None:
    return None if value is None else Retention(value[0], value[1])


def encode_options(options: JobOptions) -> bytes | None:
    """A job's overrides as stored: NULL (``None``) when it has none.

    The stored form is the msgpack array ``[backoff, lease_ms, keep_completed, keep_failed,
    timeout_ms?]`` with ``backoff`` as ``[kind, base_ms, cap_ms, jitter]`` and each retention as
    ``[count, age_ms]``; ``nil`` means "use the default". ``timeout_ms`` is appended only when
    set, so rows without one keep the 4-item form of before (no schema version change).
    """
    if options is NO_OPTIONS or options == NO_OPTIONS:
        return None
    backoff = options.backoff
    stored = [
        None if backoff is None
        else [str(backoff.kind), backoff.base_ms, backoff.cap_ms, backoff.jitter],
        options.lease_ms,
        _retention_to_wire(options.keep_completed),
        _retention_to_wire(options.keep_failed),
    ]
    if options.timeout_ms is not None:
        stored.append(options.timeout_ms)
    encoded: bytes = _packb(stored, use_bin_type=True)
    return encoded


def decode_options(data: bytes) -> JobOptions:
    """The inverse of ``encode_options`` for a non-NULL value.

    Raises:
        SchemaError: the bytes are not a stored options array.
    """
    try:
        stored = _unpackb(data, raw=False, use_list=False)
        if len(stored) not in (4, 5):  # 4 items: written before timeout_ms existed
            raise ValueError(f"{len(stored)} items")
        backoff, lease_ms, keep_completed, keep_failed, timeout_ms = (*stored, None)[:5]
        return JobOptions(
            backoff=None
            if backoff is None
            else Backoff(BackoffKind(backoff[0]), backoff[1], backoff[2], backoff[3]),
            lease_ms=lease_ms,
            keep_completed=_retention_from_wire(keep_completed),
            keep_failed=_retention_from_wire(keep_failed),
            timeout_ms=timeout_ms,
        )
    except (ValueError, TypeError, IndexError, msgpack.UnpackException) as exc:
        raise SchemaError(f"stored job options {data!r} are not valid: {exc}") from exc


# --------------------------------------------------------------------------- job rows


def row_checksum(values: Sequence[Any], pack: Callable[[Any], bytes] | None = None) -> int:
    """The ``crc`` of a row: CRC-32 of its other columns (``DATA_COLUMNS``) as one msgpack array.

    Every column counts, so a flipped byte anywhere in a job's stored values is caught on load.
    ``pack`` is a ``msgpack.Packer(use_bin_type=True).pack`` to reuse (a new one otherwise).
    """
    if pack is None:
        pack = msgpack.Packer(use_bin_type=True).pack
    return zlib.crc32(pack(tuple(values[:DATA_COLUMNS])))


_SEQ: Final = struct.Struct("<q")


def payload_checksum(seq: int, payload: bytes) -> int:
    """The ``crc`` of a ``payloads`` row: CRC-32 of the seq (8 bytes, little-endian) followed by
    the payload, so a payload found under another job's seq fails it as well."""
    return _crc32(payload, _crc32(_SEQ.pack(seq)))


class RowEncoder:
    """Builds ``jobs`` rows from live ``Job`` objects, caching the encoding of shared options.

    Jobs with equal overrides usually share one ``JobOptions`` instance, so the cache (bounded by
    ``max_cached``) turns option encoding into one dict lookup per job.
    """

    __slots__ = ("_cache", "_max_cached", "_pack")

    def __init__(self, max_cached: int = 1024) -> None:
        self._cache: dict[JobOptions, bytes | None] = {}
        self._max_cached = max_cached
        self._pack = msgpack.Packer(use_bin_type=True).pack

    def _options(self, options: JobOptions) -> bytes | None:
        if options is NO_OPTIONS:
            return None
        try:
            return self._cache[options]
        except KeyError:
            encoded = encode_options(options)
            if len(self._cache) >= self._max_cached:
                self._cache.clear()
            self._cache[options] = encoded
            return encoded

    def job_row(self, job: Job) -> tuple[Any, ...]:
        """The row for ``job`` as it is now, columns in ``JOB_COLUMNS`` order (``crc`` last)."""
        progress = job.progress
        options = job.options
        row = (
            job.seq,
            job.id,
            job.queue,
            job.name,
            job.priority,
            job.run_at,
            job.max_attempts,
            None if options is NO_OPTIONS else self._options(options),
            STATE_CODES[job.state],
            job.created_at,
            job.attempts,
            job.started_at,
            job.finished_at,
            None if progress is None else _packb(progress, use_bin_type=True),
            job.result,
            job.error,
        )
        # row_checksum, inlined: this runs per job (a tuple concatenation costs half a
        # (*row, crc) display)
        return row + (_crc32(self._pack(row)),)  # noqa: RUF005

    @staticmethod
    def payload_row(job: Job) -> tuple[int, bytes, int]:
        """The ``payloads`` row of ``job``: ``(seq, payload, crc)``."""
        seq = job.seq
        payload = job.payload
        return seq, payload, _crc32(payload, _crc32(_SEQ.pack(seq)))  # payload_checksum


class RowDecoder:
    """Turns ``jobs`` rows back into ``Job`` objects, as fast as Python allows.

    Queue and handler names are shared (one ``str`` per distinct name, interned), and equal stored
    options decode to one shared ``JobOptions``, so a million loaded jobs cost no more memory than
    a million enqueued ones.

    Attributes:
        damaged: ``(seq, id)`` of each row whose ``crc`` does not match its columns; such rows
            are not turned into jobs.
    """

    __slots__ = ("_names", "_options", "_pack", "damaged")

    def __init__(self) -> None:
        self._names: dict[str, str] = {}
        self._options: dict[bytes, JobOptions] = {}
        self._pack = msgpack.Packer(use_bin_type=True).pack
        self.damaged: list[tuple[Any, Any]] = []

    def _name(self, text: str) -> str:
        shared = sys.intern(text)
        self._names[shared] = shared
        return shared

    def _decode_options(self, data: bytes) -> JobOptions:
        options = self._options.get(data)
        if options is None:
            options = self._options[data] = decode_options(data)
        return options

    def jobs_from_rows(self, rows: Iterable[Sequence[Any]], out: list[Job]) -> None:
        """Append one ``Job`` per row (``SELECT_JOBS``: the ``JOB_COLUMNS``, then the payload and
        its ``crc``) to ``out``.

        A row whose checksum does not match, or whose payload is missing or fails its own
        checksum, goes to ``damaged`` instead.

        Raises:
            SchemaError: a row holds an unknown state code or unreadable options or progress.
        """
        names = self._names
        intern_name = self._name
        decode_options = self._decode_options
        states = STATES
        no_options = NO_OPTIONS
        unpackb = _unpackb
        append = out.append
        pack = self._pack
        crc32 = _crc32
        columns = DATA_COLUMNS
        seq_bytes = _SEQ.pack
        damaged = self.damaged
        # Jobs of one enqueue batch share their timestamps; share the int objects too, as the
        # core does for a batch it enqueues (64 bytes a job otherwise).
        last_created = last_run_at = -1
        for row in rows:
            payload = row[-2]
            try:
                intact = crc32(pack(row[:columns])) == row[columns] and payload is not None and (
                    crc32(payload, crc32(seq_bytes(row[0]))) == row[-1])  # payload_checksum
            except (ValueError, TypeError):  # text that was not UTF-8; a payload not a BLOB
                intact = False
            if not intact:
                damaged.append((row[0], row[1]))
                continue
            (
                seq,
                job_id,
                queue,
                name,
                priority,
                run_at,
                max_attempts,
                options,
                state,
                created_at,
                attempts,
                started_at,
                finished_at,
                progress,
                result,
                error,
                _,
                _,
                _,
            ) = row
            if created_at == last_created:
                created_at = last_created
            else:
                last_created = created_at
            if run_at == created_at:
                run_at = created_at
            elif run_at == last_run_at:
                run_at = last_run_at
            else:
                last_run_at = run_at
            shared_queue = names.get(queue)
            if shared_queue is None:
                shared_queue = intern_name(queue)
            shared_name = names.get(name)
            if shared_name is None:
                shared_name = intern_name(name)
            try:
                job = Job(
                    seq,
                    job_id,
                    shared_queue,
                    shared_name,
                    payload,
                    priority=priority,
                    run_at=run_at,
                    max_attempts=max_attempts,
                    options=no_options if options is None else decode_options(options),
                    state=states[state],
                    created_at=created_at,
                    attempts=attempts,
                    started_at=started_at,
                    finished_at=finished_at,
                    progress=None
                    if progress is None
                    else unpackb(progress, raw=False, use_list=False, strict_map_key=False),
                    result=result,
                    error=error,
                )
            except (IndexError, ValueError, msgpack.UnpackException) as exc:
                raise SchemaError(f"stored job {job_id!r} is not valid: {exc}") from exc
            append(job)
