"""The journal's ``schedules`` table (schema 5): one row per repeatable-job scheduler.

Columns: ``queue`` and ``key`` (the primary key), ``definition`` (msgpack: ``[every_ms, cron,
tz, start_ms, end_ms, limit, anchor_ms, job]`` with ``job`` the template in its enqueue wire
form, ``protocol.model.job_to_wire``), ``count`` and ``next_at`` (the scheduler's progress,
NULL when it has no more occurrences), ``created_at``, and ``crc``: CRC-32 of the other columns
packed as one msgpack array, as the ``jobs`` rows have. A row that fails its checksum or cannot
be read stops the start (``SchemaError``): a scheduler silently lost or altered would make or
miss runs.

A scheduler's row is written in the same transaction as the job of the occurrence that changed
it (``broker/core_schedules``): the two never disagree after a crash.

``migrate_v4`` (schema 4 -> 5) only creates the table: its own step, so that another schema
change can be ordered before or after it.
"""

from __future__ import annotations

import sqlite3
import zlib
from collections.abc import Sequence
from typing import Any, Final

import msgpack

from broker.schedule import Rule, Scheduler
from protocol.errors import ProtocolError
from protocol.model import job_to_wire, parse_job

VERSION: Final = 5
"""The schema version that added the table."""

CREATE_SCHEDULES: Final = """
    CREATE TABLE schedules (
        queue      TEXT    NOT NULL,
        key        TEXT    NOT NULL,
        definition BLOB    NOT NULL,
        count      INTEGER NOT NULL,
        next_at    INTEGER,
        created_at INTEGER NOT NULL,
        crc        INTEGER NOT NULL,
        PRIMARY KEY (queue, key)
    ) WITHOUT ROWID
    """
COLUMNS: Final = ("queue", "key", "definition", "count", "next_at", "created_at", "crc")
UPSERT_SCHEDULE: Final = (
    f"INSERT INTO schedules ({', '.join(COLUMNS)}) VALUES ({', '.join('?' * len(COLUMNS))}) "
    "ON CONFLICT (queue, key) DO UPDATE SET "
    + ", ".join(f"{column} = excluded.{column}" for column in COLUMNS[2:])
)
DELETE_SCHEDULE: Final = "DELETE FROM schedules WHERE queue = ? AND key = ?"
SELECT_SCHEDULES: Final = f"SELECT {', '.join(COLUMNS)} FROM schedules ORDER BY queue, key"


class DamagedSchedule(ValueError):
    """A ``schedules`` row fails its checksum or cannot be read."""


def _checksum(values: Sequence[Any]) -> int:
    return zlib.crc32(msgpack.packb(tuple(values), use_bin_type=True))


def schedule_row(scheduler: Scheduler) -> tuple[Any, ...]:
    """The row of ``scheduler`` as it is now (columns in ``COLUMNS`` order, ``crc`` last)."""
    rule = scheduler.rule
    definition = msgpack.packb(
        [rule.every_ms, rule.cron, rule.tz, rule.start_ms, rule.end_ms, rule.limit,
         rule.anchor_ms, job_to_wire(scheduler.template)],
        use_bin_type=True,
    )
    row = (scheduler.queue, scheduler.key, definition, scheduler.count, scheduler.next_at,
           scheduler.created_at)
    return (*row, _checksum(row))


def scheduler_from_row(row: Sequence[Any]) -> Scheduler:
    """The inverse of ``schedule_row``.

    Raises:
        DamagedSchedule: the checksum does not match, or the definition is not readable.
    """
    queue, key, definition, count, next_at, created_at, crc = row
    try:
        intact = _checksum(row[:-1]) == crc
    except ValueError:  # text with surrogates: bytes that were not UTF-8
        intact = False
    if not intact:
        raise DamagedSchedule(f"scheduler {key!r} of queue {queue!r} fails its checksum")
    try:
        (every_ms, cron, tz, start_ms, end_ms, limit, anchor_ms, job) = msgpack.unpackb(
            definition, raw=False, use_list=False)
        template = parse_job(job, 0)
    except (ValueError, TypeError, ProtocolError, msgpack.UnpackException) as exc:
        raise DamagedSchedule(f"scheduler {key!r} of queue {queue!r} is not valid: {exc}") \
            from exc
    rule = Rule(every_ms, cron, tz, start_ms, end_ms, limit, anchor_ms)
    return Scheduler(queue, key, rule, template, created_at, count, next_at)


def migrate_v4(conn: sqlite3.Connection) -> None:
    """Schema 4 -> 5: the ``schedules`` table (empty: no scheduler existed before)."""
    conn.execute(CREATE_SCHEDULES)
    conn.execute(f"PRAGMA user_version = {VERSION}")
