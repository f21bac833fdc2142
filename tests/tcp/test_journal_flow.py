"""Schema 3: the queues' flow control columns, migrated in from schema 2 (via the schema 1
fixture) and round-tripped through a real journal file."""

from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path

from broker.core import Changes, QueueMeta
from broker.journal import Journal
from broker.schema import QUEUE_COLUMNS, SCHEMA_VERSION

V1_JOURNAL = Path(__file__).parent.parent / "data" / "journal-v1.db"


async def test_an_old_journal_gains_the_flow_columns_with_no_limits(tmp_path: Path) -> None:
    path = tmp_path / "jobwire.db"
    shutil.copy(V1_JOURNAL, path)
    journal = await Journal.open(path)  # 1 -> 2 (checksums) -> 3 (flow control) -> 4 (no id index)
    try:
        snapshot = await journal.load()
    finally:
        await journal.close()
    assert snapshot.queues == [QueueMeta("q", True, 17, 3)]  # no limits, no pause
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA user_version").fetchone() == (SCHEMA_VERSION,) == (7,)
        columns = [row[1] for row in db.execute("PRAGMA table_info(queues)")]
    assert columns == list(QUEUE_COLUMNS)


async def test_limits_and_pause_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "jobwire.db"
    journal = await Journal.open(path)
    limited = QueueMeta("sms", False, 5, 1, rate_max=10, rate_period_ms=1_000, concurrency=3,
                        paused_until=1_700_000_000_000)
    try:
        await journal.write(Changes(jobs={}, queues={"sms": limited, "plain": QueueMeta("plain")}))
        cleared = QueueMeta("sms", False, 6, 1, concurrency=3)
        await journal.write(Changes(jobs={}, queues={"sms": cleared}))
    finally:
        await journal.close()
    reopened = await Journal.open(path)
    try:
        queues = {meta.name: meta for meta in (await reopened.load()).queues}
    finally:
        await reopened.close()
    assert queues == {"sms": cleared, "plain": QueueMeta("plain")}
