"""Bringing an older journal to ``broker.schema.SCHEMA_VERSION``, one step per version.

``migrate`` runs every step from the journal's version on; the caller (``journal_sql``) runs it
in one transaction, so a failure leaves the file as it was. Each step ends by setting
``PRAGMA user_version`` to the version it produced.

1 -> 2 (``_migrate_v1``): add ``crc`` and fill it in. 2 -> 3 (``migrate_v2``): the queues' flow
control columns. 3 -> 4 (``_migrate_v3``): drop the UNIQUE index on ``id`` (a table rebuild).
4 -> 5 (``broker.schema_schedules.migrate_v4``): the ``schedules`` table. 5 -> 6
(``migrate_v5``): payloads move to their own table (``broker.schema``, "payloads"); the
``jobs`` table is rebuilt without them and every row's checksum is computed over its new
columns. A row that failed its checksum before still fails it after (its new ``crc`` is 0), so
a damaged v4 journal is refused as it would have been. 6 -> 7 (``migrate_v6``): each job row
becomes one record, the msgpack array of its columns: exactly the bytes its schema 6 ``crc``
was computed over, so every ``crc`` is copied as it is, and a damaged row stays damaged.
"""

from __future__ import annotations

import sqlite3
import zlib
from collections.abc import Callable, Sequence
from typing import Any, Final

import msgpack

from broker.schema import (
    CREATE_JOBS,
    CREATE_PAYLOADS,
    QUEUE_COLUMNS,
    RECORD_FIELDS,
    SCHEMA_VERSION,
    payload_checksum,
)
from broker.schema_schedules import migrate_v4 as add_schedules

MIGRATE_BATCH: Final = 10_000

V6_COLUMNS: Final = (*RECORD_FIELDS, "crc")
"""The ``jobs`` columns of schema 6: one per record field, then ``crc``."""
V4_COLUMNS: Final = (*V6_COLUMNS[:4], "payload", *V6_COLUMNS[4:])
"""The ``jobs`` columns of schemas 2 to 4: the payload was the fifth."""
_V4_DATA: Final = len(V4_COLUMNS) - 1
_V4_PAYLOAD: Final = V4_COLUMNS.index("payload")

CREATE_JOBS_V4: Final = """
    CREATE TABLE {table} (
        seq          INTEGER PRIMARY KEY,
        id           TEXT    NOT NULL,
        queue        TEXT    NOT NULL,
        name         TEXT    NOT NULL,
        payload      BLOB    NOT NULL,
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
"""The ``jobs`` table of schemas 4 and 5 (``_migrate_v3`` builds it)."""

CREATE_JOBS_V6: Final = CREATE_JOBS_V4.format(table="jobs_v6").replace(
    "        payload      BLOB    NOT NULL,\n", "")
"""The ``jobs`` table of schema 6 (``migrate_v5`` builds it)."""


def v4_checksum(values: Sequence[Any], pack: Callable[[Any], bytes] | None = None) -> int:
    """The ``crc`` of a schema 2-4 ``jobs`` row: CRC-32 of its other columns as one msgpack
    array (the payload among them)."""
    if pack is None:
        pack = msgpack.Packer(use_bin_type=True).pack
    return zlib.crc32(pack(tuple(values[:_V4_DATA])))


def migrate(conn: sqlite3.Connection, version: int) -> int:
    """Bring a journal of schema ``version`` (1 to 6) to ``SCHEMA_VERSION``, step by step.

    Returns:
        The number of job rows.
    """
    if version == 1:
        _migrate_v1(conn)
    if version <= 2:
        migrate_v2(conn)
    if version <= 3:
        _migrate_v3(conn)
    if version <= 4:
        add_schedules(conn)
    if version <= 5:
        migrate_v5(conn)
    return migrate_v6(conn)


def _migrate_v1(conn: sqlite3.Connection) -> None:
    """Schema 1 -> 2: add ``crc`` and fill it in for every row."""
    conn.execute("ALTER TABLE jobs ADD COLUMN crc INTEGER NOT NULL DEFAULT 0")
    pack = msgpack.Packer(use_bin_type=True).pack
    select = (f"SELECT {', '.join(V4_COLUMNS[:_V4_DATA])} FROM jobs WHERE seq > ? "
              f"ORDER BY seq LIMIT {MIGRATE_BATCH}")
    last = -(1 << 63)
    # Batches by seq, each SELECT finished before its UPDATEs (no update under a running scan).
    while rows := conn.execute(select, (last,)).fetchall():
        conn.executemany("UPDATE jobs SET crc = ? WHERE seq = ?",
                         [(v4_checksum(row, pack), row[0]) for row in rows])
        last = rows[-1][0]
    conn.execute("PRAGMA user_version = 2")


def migrate_v2(conn: sqlite3.Connection) -> int:
    """Schema 2 -> 3: the queues' flow control columns (all NULL: no limits).

    Returns:
        The number of queue rows.
    """
    for column in QUEUE_COLUMNS[4:]:
        conn.execute(f"ALTER TABLE queues ADD COLUMN {column} INTEGER")
    conn.execute("PRAGMA user_version = 3")
    return int(conn.execute("SELECT count(*) FROM queues").fetchone()[0])


def _migrate_v3(conn: sqlite3.Connection) -> int:
    """Schema 3 -> 4: drop the UNIQUE index on ``id``. SQLite cannot drop a column constraint,
    so the table is rebuilt (rows copied as they are, in ``seq`` order: the checksums stay
    valid, since the columns are the same)."""
    conn.execute(CREATE_JOBS_V4.format(table="jobs_v4"))
    columns = ", ".join(V4_COLUMNS)
    count = conn.execute(
        f"INSERT INTO jobs_v4 ({columns}) SELECT {columns} FROM jobs ORDER BY seq"
    ).rowcount
    _replace_jobs(conn, "jobs_v4", 4)
    return int(count)


def migrate_v5(conn: sqlite3.Connection) -> int:
    """Schema 5 -> 6: each payload into ``payloads``, the ``jobs`` table rebuilt without it,
    every checksum computed anew (a row that failed its v4 checksum gets ``crc`` 0: it stays
    damaged).

    Returns:
        The number of job rows.
    """
    conn.execute(CREATE_PAYLOADS)
    conn.execute(CREATE_JOBS_V6)
    pack = msgpack.Packer(use_bin_type=True).pack
    insert_job = (f"INSERT INTO jobs_v6 ({', '.join(V6_COLUMNS)}) "
                  f"VALUES ({', '.join('?' * len(V6_COLUMNS))})")
    insert_payload = "INSERT INTO payloads (seq, payload, crc) VALUES (?, ?, ?)"
    select = (f"SELECT {', '.join(V4_COLUMNS)} FROM jobs WHERE seq > ? "
              f"ORDER BY seq LIMIT {MIGRATE_BATCH}")
    kept = ", ".join(RECORD_FIELDS)
    count = 0
    last = -(1 << 63)
    text_factory = conn.text_factory
    conn.text_factory = _lenient  # damaged text is read, found damaged, and copied as it is
    try:
        while rows := conn.execute(select, (last,)).fetchall():
            jobs: list[tuple[Any, ...]] = []
            payloads: list[tuple[int, bytes, int]] = []
            damaged: list[int] = []
            for row in rows:
                try:
                    intact = v4_checksum(row, pack) == row[_V4_DATA]
                except ValueError:  # text that was not UTF-8
                    intact = False
                if not intact or not isinstance(row[_V4_PAYLOAD], bytes):
                    damaged.append(row[0])
                    continue
                values = (*row[:_V4_PAYLOAD], *row[_V4_PAYLOAD + 1:_V4_DATA])
                jobs.append((*values, zlib.crc32(pack(values))))
                payloads.append((row[0], row[_V4_PAYLOAD],
                                 payload_checksum(row[0], row[_V4_PAYLOAD])))
            conn.executemany(insert_job, jobs)
            conn.executemany(insert_payload, payloads)
            for seq in damaged:  # copied in SQL, values untouched, checksums 0
                conn.execute(f"INSERT INTO jobs_v6 ({kept}, crc) SELECT {kept}, 0 FROM jobs "
                             "WHERE seq = ?", (seq,))
                conn.execute("INSERT INTO payloads (seq, payload, crc) SELECT seq, payload, 0 "
                             "FROM jobs WHERE seq = ?", (seq,))
            count += len(rows)
            last = rows[-1][0]
    finally:
        conn.text_factory = text_factory
    _replace_jobs(conn, "jobs_v6", 6)
    return count


def migrate_v6(conn: sqlite3.Connection) -> int:
    """Schema 6 -> 7: each job row becomes ``(seq, record, crc)``, ``record`` the msgpack array
    of its columns (the bytes its ``crc`` was computed over: the ``crc`` is copied). Text that is
    not UTF-8 (damage) is packed as its bytes, so that row keeps failing its checksum.

    Returns:
        The number of job rows.
    """
    conn.execute(CREATE_JOBS.format(table="jobs_v7"))
    pack = msgpack.Packer(use_bin_type=True).pack
    fields = len(RECORD_FIELDS)
    select = (f"SELECT {', '.join(V6_COLUMNS)} FROM jobs WHERE seq > ? "
              f"ORDER BY seq LIMIT {MIGRATE_BATCH}")
    insert = "INSERT INTO jobs_v7 (seq, record, crc) VALUES (?, ?, ?)"
    count = 0
    last = -(1 << 63)
    text_factory = conn.text_factory
    conn.text_factory = _lenient
    try:
        while rows := conn.execute(select, (last,)).fetchall():
            out: list[tuple[Any, bytes, Any]] = []
            for row in rows:
                values = row[:fields]
                try:
                    record = pack(values)
                except ValueError:  # a str with surrogates: text that was not UTF-8
                    record = pack(tuple(_lenient_bytes(value) for value in values))
                out.append((row[0], record, row[fields]))
            conn.executemany(insert, out)
            count += len(rows)
            last = rows[-1][0]
    finally:
        conn.text_factory = text_factory
    _replace_jobs(conn, "jobs_v7", SCHEMA_VERSION)
    return count


def _replace_jobs(conn: sqlite3.Connection, table: str, version: int) -> None:
    """The rebuilt ``table`` becomes ``jobs``; the journal is now of schema ``version``."""
    conn.execute("DROP TABLE jobs")
    conn.execute(f"ALTER TABLE {table} RENAME TO jobs")
    conn.execute(f"PRAGMA user_version = {version}")


def _lenient(data: bytes) -> str:
    return data.decode("utf-8", "surrogateescape")


def _lenient_bytes(value: Any) -> Any:
    return value.encode("utf-8", "surrogateescape") if isinstance(value, str) else value
