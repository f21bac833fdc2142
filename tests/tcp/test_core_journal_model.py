"""Crash and replay through the real SQLite journal: the core model machine on a temp file.

``JournalCoreMachine`` is ``CoreMachine`` (tests/pure/test_core_model.py: the core against a
plain-Python model with a fake clock) with its commits going to a real ``broker.journal.Journal``
on a temp SQLite file, the way the broker's committer writes them (``journal.write`` of
``core.take_changes()``). After every step everything is committed: that is the broker's promise
(a reply to a write leaves only after its commit), so the model holds exactly what was committed.

A crash (the inherited ``restore`` rule, and ``crash_with_uncommitted_work``) drops the ``Core``
and the open ``Journal`` and rebuilds from the file: a second
connection opens the same file (the WAL as the dead process left it), ``load()``s, and
``Core.restore`` rebuilds the core, while the model applies the documented recovery rule (an
active job's attempt counts as failed, "broker restarted during the attempt": delayed with
backoff, waiting, or failed when no attempts remain; completed and failed jobs stay; retention
by age applies; every acknowledged enqueue is present). The shared ``agree`` invariant then
checks every job, every queue's stats, every scheduler and the next id.

``crash_with_uncommitted_work`` crashes with work that never reached the journal (an enqueue, a
reservation and an ack taken by the core, never written): the model rolls back to the last
commit. The journal's own snapshot is also compared with an in-memory copy of every committed
change, so a field the journal fails to persist is named directly.

The async journal runs on one ``asyncio.Runner`` per machine, closed (with the journal's
SQLite thread) in ``teardown``.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import shutil
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import rule

from broker.core import CoreError, Snapshot
from broker.journal import Journal, SyncMode
from protocol.model import AckItem, JobSpec
from tests.pure.test_core_model import CoreMachine
from tests.tools.journaltools import as_tuple

# Durability against power loss is SQLite's business; a crash of the broker process keeps
# whatever reached the WAL in every sync mode. OFF keeps the many small commits cheap.
SYNC = SyncMode.OFF


class JournalCoreMachine(CoreMachine):
    """The core model machine, committing to and recovering from a real SQLite journal."""

    def __init__(self) -> None:
        super().__init__()
        self.crashes = 0
        self.runner = asyncio.Runner()
        self.directory = Path(tempfile.mkdtemp(prefix="jobwire-model-"))
        self.path = self.directory / "jobwire.db"
        self.disk: Journal | None = None
        try:
            self.disk = self.runner.run(Journal.open(self.path, sync=SYNC))
        except BaseException:
            self.teardown()  # hypothesis calls teardown only for a machine it built
            raise

    def teardown(self) -> None:
        try:
            if self.disk is not None:
                self.runner.run(self.disk.close())
        finally:
            self.runner.close()
            shutil.rmtree(self.directory, ignore_errors=True)

    # ------------------------------------------------------------------ the journal

    def commit(self) -> None:
        """Write the core's changes in one transaction, as the committer does."""
        assert self.disk is not None
        changes = self.core.take_changes()
        self.runner.run(self.disk.write(changes))
        self.journal.apply_changes(changes)  # the in-memory copy, compared at each crash

    def recovered_snapshot(self) -> Snapshot:
        """Crash: forget the open journal, re-open the file and load it."""
        dead, self.disk = self.disk, None
        assert dead is not None
        try:
            # Opened while the dead connection still holds the file, so the new one sees the
            # WAL exactly as it was left; the old connection is closed only afterwards.
            self.disk = self.runner.run(Journal.open(self.path, sync=SYNC))
            loaded = self.runner.run(self.disk.load())
        finally:
            self.runner.run(dead.close())
        self.crashes += 1
        expected = self.journal.snapshot()
        assert sorted(map(as_tuple, loaded.jobs)) == sorted(map(as_tuple, expected.jobs))
        assert all(job.lease_token is None and job.owner is None for job in loaded.jobs)
        assert sorted(loaded.queues, key=lambda q: q.name) == sorted(
            expected.queues, key=lambda q: q.name)
        assert sorted(loaded.schedules, key=lambda s: (s.queue, s.key)) == sorted(
            expected.schedules, key=lambda s: (s.queue, s.key))
        # A commit of nothing but next_seq writes nothing: before any job, 0 (unknown) means 1.
        assert max(loaded.next_seq, 1) == max(expected.next_seq, 1)
        return loaded

    # ------------------------------------------------------------------ crashes

    @rule(count=st.integers(0, 4), reserve=st.integers(1, 4), owner=st.sampled_from((1, 2)))
    def crash_while_leased(self, count: int, reserve: int, owner: int) -> None:
        """Enqueue, reserve and commit (checked against the model), then crash with the jobs
        active: their attempts count as failed on recovery."""
        if count:
            self.enqueue_plain(count, 0)
        self.reserve(["a", "b", "c"], reserve, None, owner)
        self.commit()
        self.restart()

    @rule(count=st.integers(1, 3), ack=st.booleans())
    def crash_with_uncommitted_work(self, count: int, ack: bool) -> None:
        """The core takes an enqueue, a reservation and maybe an ack; none is written."""
        committed = copy.deepcopy(self.model)
        now = self.now
        with contextlib.suppress(CoreError):  # QUEUE_FULL: nothing was created
            self.core.enqueue("a", [JobSpec(None, "task", b"u")] * count, now)
        leased = self.core.reserve(["a", "b"], count, None, 1, now)
        if ack and leased:
            self.core.ack([AckItem(job.job_id, job.token, None) for job in leased], now)
        self.model = committed
        self.restart()


JournalCoreMachine.TestCase.settings = settings(
    max_examples=80, stateful_step_count=50, deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
TestCoreJournalModel = JournalCoreMachine.TestCase
