"""A journal written by the previous schema (2) opens through a real ``jobwire serve`` process:
migrated in one transaction on start, with every job kept, and per-queue ids work on it."""

from __future__ import annotations

import contextlib
import shutil
import sqlite3
from collections.abc import Callable
from pathlib import Path

from client import Client, JobState, NotFoundError
from tests.conftest import BrokerProcess

V2_JOURNAL = Path(__file__).parent.parent / "data" / "journal-v2.db"
"""See ``tests/tcp/test_journal_schema.py``: 305 jobs of schema 2 (304 in queue ``q``, one with
the user id ``nightly-report`` in ``reports``)."""


async def test_jobwire_serve_migrates_a_schema_2_journal_and_keeps_every_job(
    spawn_broker: Callable[..., BrokerProcess], tmp_path: Path
) -> None:
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    shutil.copy(V2_JOURNAL, data_dir / "jobwire.db")

    broker = spawn_broker(data_dir=data_dir)
    migrated = [e for e in broker.log_lines() if e.get("event") == "journal_migrated"]
    assert [(e["from_version"], e["to_version"], e["jobs"]) for e in migrated] == [(2, 7, 305)]
    async with Client(f"jobwire://{broker.host}:{broker.port}") as client:
        stats = await client.stats()
        assert stats["q"].paused and (stats["q"].total_completed, stats["q"].total_failed) == (
            17, 3)
        found: dict[str, str] = {}
        for seq in range(1, 305):
            with contextlib.suppress(NotFoundError):
                found[str(seq)] = (await client.get_job(str(seq))).queue
        # Every job came through; the completed and the failed one (3, 4) finished in 2023 and
        # the default retention (1 day, 7 days) prunes them by age as the broker starts.
        assert set(found) == {str(seq) for seq in range(1, 305)} - {"3", "4"}
        assert found["1"] == "émails ✉" and set(found.values()) == {"émails ✉", "q"}
        named = await client.queue("reports").get_job("nightly-report")
        assert named.state is JobState.WAITING
        twin = await client.queue("other").add("t", "twin", job_id="nightly-report")
        assert not twin.duplicate  # ids are unique per queue now
        assert (await client.get_job("nightly-report", queue="reports")).queue == "reports"
    broker.terminate()

    with sqlite3.connect(data_dir / "jobwire.db") as db:
        assert db.execute("PRAGMA user_version").fetchone() == (7,)
        assert db.execute("SELECT count(*) FROM jobs").fetchone() == (304,)  # 305 - 3, 4 + twin
        # Schema 6: one payload row per job, deleted with it.
        assert db.execute("SELECT count(*) FROM payloads").fetchone() == (304,)
