"""The journal's SQLite schema and the conversion between ``Job`` objects and table rows.

Layout (``SCHEMA_VERSION`` 7, stored in ``PRAGMA user_version``; ``PRAGMA application_id`` marks
the file as a jobwire journal):

* ``jobs``: one row per job: ``(seq, record, crc)``. ``seq`` is the ``INTEGER PRIMARY KEY`` (the
  rowid), so inserts of new jobs append to the table's B-tree, a full scan returns jobs in
  enqueue order, and the upsert's conflict target and the key of deletes is the rowid. ``seq``
  never repeats (the core's ``next_seq`` only grows), so a job deleted and enqueued again under
  the same id is a new row. ``record`` is the job as one msgpack array of ``RECORD_FIELDS``
  (``broker.records``): ``seq`` again (a record found under another rowid is damage), ``id``,
  ``queue``, ``name``, ``priority``, ``run_at``, ``max_attempts``, ``options`` (nil for
  ``NO_OPTIONS``, else the msgpack bytes of ``encode_options``), ``state`` (a small integer,
  ``STATE_CODES``), ``created_at``, ``attempts``, ``started_at``, ``finished_at``, ``progress``
  (msgpack bytes or nil), ``result``, ``error``. ``crc`` is the CRC-32 of ``record``'s bytes,
  checked on load (``broker.integrity``). Lease fields (``lease_token``, ``lease_deadline``,
  ``owner``) are never stored: a lease does not survive a restart, and the core's recovery turns
  ACTIVE rows into failed attempts. Nothing reads a job row by any field but ``seq`` (the core
  loads every row at start), so SQLite gets one blob to store rather than sixteen values to bind,
  type and lay out: the write of a batch costs about half (bench/README.md, "Schema 7"), and the
  checksum is one pass over bytes the broker built anyway (it already packed these values to
  checksum them). To look inside a journal, ``broker.records.decode_record`` turns a record back
  into its fields.
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
payloads to their own table; 7 stores each job row as one record (the same bytes schema 6
checksummed, so every schema 6 ``crc`` carries over as it is). ``broker.migrations`` brings an
older journal to ``SCHEMA_VERSION`` in one transaction.

Invariants: ``broker.records`` writes and reads a record's fields in ``RECORD_FIELDS`` order
(``SELECT_JOBS``: seq, record, crc, then the payload and the payload's ``crc``); changing the
fields or their order means a new schema version.
"""

from __future__ import annotations

import struct
import zlib
from typing import Any, Final

import msgpack

from broker.jobs import NO_OPTIONS, JobOptions
from broker.schema_schedules import CREATE_SCHEDULES
from protocol.model import Backoff, BackoffKind, JobState, Retention

SCHEMA_VERSION: Final = 7
APPLICATION_ID: Final = 0x6A627772  # "jbwr": tells a jobwire journal from any other SQLite file

RECORD_FIELDS: Final = (
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
)
"""The fields of a ``jobs`` row's ``record``, in order (schema 6 had one column for each)."""
JOB_COLUMNS: Final = ("seq", "record", "crc")

CREATE_JOBS: Final = """
    CREATE TABLE {table} (
        seq    INTEGER PRIMARY KEY,
        record BLOB    NOT NULL,
        crc    INTEGER NOT NULL
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

UPSERT_JOB: Final = (
    "INSERT INTO jobs (seq, record, crc) VALUES (?, ?, ?) "
    "ON CONFLICT (seq) DO UPDATE SET record = excluded.record, crc = excluded.crc"
)
"""Insert a job, or update its row in place (the rowid is the conflict target: one B-tree)."""
_UPSERT_SET: Final = UPSERT_JOB[UPSERT_JOB.index(" ON CONFLICT"):]
UPSERT_CHUNKS: Final = (256, 128, 64, 32, 16, 8, 4, 2, 1)
"""Rows per multi-row upsert statement: a batch is written as the fewest statements of these
sizes (43 rows: 32 + 8 + 2 + 1); 256 rows bind 768 parameters (SQLite allows 32,766). One
statement binds all its rows at once and steps once, where ``executemany`` steps once per row;
each step gives up the GIL, and taking it back waits for the event loop's current callback to
end (the SQLite thread spent about 40% of its time in that)."""


def upsert_jobs_sql(rows: int) -> str:
    """``UPSERT_JOB`` for ``rows`` rows in one statement (``rows`` in ``UPSERT_CHUNKS``)."""
    return _UPSERT_MANY[rows]


_UPSERT_MANY: Final = {
    rows: "INSERT INTO jobs (seq, record, crc) VALUES "
    + ", ".join(["(?, ?, ?)"] * rows) + _UPSERT_SET
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
    "SELECT jobs.seq, jobs.record, jobs.crc, payloads.payload, payloads.crc "
    "FROM jobs LEFT JOIN payloads ON payloads.seq = jobs.seq ORDER BY jobs.seq"
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


# --------------------------------------------------------------------------- checksums

_SEQ: Final = struct.Struct("<q")


def payload_checksum(seq: int, payload: bytes) -> int:
    """The ``crc`` of a ``payloads`` row: CRC-32 of the seq (8 bytes, little-endian) followed by
    the payload, so a payload found under another job's seq fails it as well."""
    return _crc32(payload, _crc32(_SEQ.pack(seq)))
