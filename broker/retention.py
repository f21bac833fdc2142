"""Retention of finished jobs: which completed and failed jobs to keep, pruned from the oldest end.

Theory of operation
-------------------
Each queue has two ``FinishedList`` s, one for completed and one for failed jobs, holding the jobs
in the order they finished. A job's retention is its own override (``JobOptions.keep_completed``
/ ``keep_failed``) or else the broker default (``CoreConfig``). Pruning looks only at the oldest
entry and removes it while

* the list holds more live jobs than that entry's ``count`` allows, or
* the entry finished at least ``age_ms`` ago,

then stops at the first entry it keeps. Count pruning runs when a job is added (``add``); age
pruning runs from ``Core.tick`` at the time the core scheduled from the oldest entry's expiry
(``scheduled``), and on restore. Each job is appended once and removed once, so pruning costs
O(1) amortized per finished job and never scans. The price of looking only at the oldest end
is that a job kept longer by its own override (say ``keep_completed=True``) holds back the pruning
of jobs that finished after it until it goes itself; with uniform retention (the common case)
the order of finishing is also the order of expiry and nothing is held back.
``Retention(0, None)`` (remove at once) never reaches a list: the core deletes the job as it
finishes.

Entries whose job left the list by other means (cancel, clean: the job is gone from the index)
are skipped lazily when they reach the front; ``stale`` counts them, and ``maybe_compact``
rebuilds the list once they outnumber the live ones by ``COMPACT_MARGIN``, so a walk from
either end (``live``, ``newest``) passes O(1) stale entries per live one, amortized. A job moved
out of ``failed`` by ``retry_failed`` is taken out of the list eagerly (``remove``), so a job is
never in a list twice.

Invariants:
- ``count`` is the number of live entries (jobs in the index, in this list's state), and
  ``count + stale`` the number of entries.
- ``tightest`` is at most the count limit of every live entry, so ``count <= tightest`` proves
  no count pruning is due (the hot path's one comparison).
- entries are in nondecreasing ``finished_at`` order (the clock passed in never goes back).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Collection, Iterator
from typing import Final

from broker.heaps import COMPACT_MARGIN
from broker.jobs import NO_OPTIONS, Job, JobKey
from protocol.model import JobState, Retention

NO_LIMIT: Final = 1 << 62
"""Stands for "no count limit" where an int is handier than ``None``."""


def retention_of(job: Job, state: JobState, default: Retention) -> Retention:
    """The retention that applies to ``job`` once finished in ``state`` (completed or failed)."""
    override = (
        job.options.keep_completed if state is JobState.COMPLETED else job.options.keep_failed
    )
    return default if override is None else override


def expires_at(finished_at: int, retention: Retention) -> int | None:
    """When a job finished at ``finished_at`` becomes too old to keep, or ``None`` (never)."""
    return None if retention.age_ms is None else finished_at + retention.age_ms


class FinishedList:
    """The finished jobs of one queue in one state (completed or failed), oldest first."""

    __slots__ = (
        "_completed", "_default_limit", "_entries", "count", "default", "scheduled", "stale",
        "state", "tightest",
    )

    def __init__(self, state: JobState, default: Retention) -> None:
        self.state = state
        self.default = default
        self._default_limit = NO_LIMIT if default.count is None else default.count
        """The count limit of a job without options (``NO_OPTIONS``: most jobs)."""
        self._completed = state is JobState.COMPLETED
        self._entries: deque[Job] = deque()
        self.count = 0
        self.stale = 0
        """Entries whose job was deleted by hand (``forget``) and that are still in the list."""
        self.tightest = NO_LIMIT
        """A lower bound of the count limits of the live entries: no count pruning is due
        while ``count <= tightest``. Reset when the list empties or is rebuilt."""
        self.scheduled: int | None = None
        """The age-pruning time the owner has scheduled for this list, if any."""

    def limit_of(self, job: Job) -> int:
        """The count limit that applies to ``job`` in this list (``NO_LIMIT`` for none)."""
        options = job.options
        keep = (options.keep_completed if self._completed else options.keep_failed) or self.default
        return NO_LIMIT if keep.count is None else keep.count

    def append(self, job: Job, limit: int) -> None:
        """Add a job that has just finished (its ``finished_at`` is the latest so far).

        Args:
            job: the job, already in this list's state.
            limit: ``limit_of(job)`` (the caller has usually computed it already).
        """
        if self.count == 0 or limit < self.tightest:
            self.tightest = limit
        self._entries.append(job)
        self.count += 1

    def add(self, job: Job, live: dict[JobKey, Job], remove: Callable[[Job], None]) -> bool:
        """File a job that has just finished, then prune by count (the hot path's one call).

        Returns:
            ``False`` if the job's retention removes it at once (``remove(job)`` was called and
            the job is not in the list), else ``True``.
        """
        options = job.options
        if options is NO_OPTIONS:  # the hot path: no NamedTuple field reads
            limit = self._default_limit
        else:
            keep = options.keep_completed if self._completed else options.keep_failed
            if keep is None:
                keep = self.default
            limit = NO_LIMIT if keep.count is None else keep.count
        if limit == 0:
            remove(job)
            return False
        if self.count == 0 or limit < self.tightest:
            self.tightest = limit
        entries = self._entries
        entries.append(job)
        self.count += 1
        if self.count > self.tightest:
            # The common step of prune_count inlined (a full list of jobs without options
            # drops its oldest); prune_count does the rest, if any.
            head = entries[0]
            if (head.options is NO_OPTIONS and self.count > self._default_limit
                    and head.state is self.state and live.get(head.key) is head):
                entries.popleft()
                self.count -= 1
                remove(head)
            if self.count > self.tightest:
                self.prune_count(live, remove)
        return True

    def prune_count(self, live: dict[JobKey, Job], remove: Callable[[Job], None]) -> None:
        """Remove entries from the oldest end while the list holds more than their count limit.

        Args:
            live: the core's job index, to recognise entries whose job is already gone.
            remove: called with each job pruned (the core deletes it); ``count`` is already
                decremented when it is called.
        """
        entries = self._entries
        state = self.state
        completed = self._completed
        default = self.default
        while self.count > self.tightest:
            head = entries[0]
            if head.state is not state or live.get(head.key) is not head:
                entries.popleft()
                self.stale -= 1
                continue
            options = head.options
            if options is NO_OPTIONS:
                limit = self._default_limit
            else:
                keep = (options.keep_completed if completed else options.keep_failed) or default
                limit = NO_LIMIT if keep.count is None else keep.count
            if self.count <= limit:
                return  # the oldest job's own retention keeps it, and so the rest
            entries.popleft()
            self.count -= 1
            remove(head)

    def prune(self, now: int, live: dict[JobKey, Job], remove: Callable[[Job], None]) -> None:
        """Remove entries from the oldest end while their count or age limit says so.

        Args:
            now: the current time.
            live: the core's job index, to recognise entries whose job is already gone.
            remove: called with each job pruned (the core deletes it); ``count`` is already
                decremented when it is called.
        """
        entries = self._entries
        state = self.state
        completed = self._completed
        while entries:
            head = entries[0]
            if head.state is not state or live.get(head.key) is not head:
                entries.popleft()
                self.stale -= 1
                continue
            options = head.options
            keep = (options.keep_completed if completed else options.keep_failed) or self.default
            finished_at = head.finished_at
            if (keep.count is not None and self.count > keep.count) or (
                keep.age_ms is not None
                and finished_at is not None
                and finished_at + keep.age_ms <= now
            ):
                entries.popleft()
                self.count -= 1
                remove(head)
                continue
            return

    def next_expiry(self, live: dict[JobKey, Job]) -> int | None:
        """When the oldest live entry expires by age, or ``None`` (empty or kept forever)."""
        entries = self._entries
        while entries:
            head = entries[0]
            if live.get(head.key) is not head or head.state is not self.state:
                entries.popleft()
                self.stale -= 1
                continue
            if head.finished_at is None:
                return None
            return expires_at(head.finished_at, retention_of(head, self.state, self.default))
        return None

    def live(self, live: dict[JobKey, Job]) -> Iterator[Job]:
        """The live entries, oldest first."""
        state = self.state
        for job in self._entries:
            if live.get(job.key) is job and job.state is state:
                yield job

    def newest(self, live: dict[JobKey, Job], offset: int, limit: int) -> list[Job]:
        """The live entries newest first, from the ``offset``-th, at most ``limit`` of them.

        Stale entries at the newest end are dropped first (each once), so the cost is
        O(offset + limit) entries visited plus the stale ones among them (see ``stale``).
        """
        page: list[Job] = []
        if limit <= 0:
            return page
        entries = self._entries
        state = self.state
        while entries:
            tail = entries[-1]
            if live.get(tail.key) is tail and tail.state is state:
                break
            entries.pop()
            self.stale -= 1
        skip = offset
        for job in reversed(entries):
            if live.get(job.key) is not job or job.state is not state:
                continue
            if skip:
                skip -= 1
                continue
            page.append(job)
            if len(page) >= limit:
                break
        return page

    def trim(self, live: dict[JobKey, Job]) -> None:
        """Drop the stale entries at the oldest end (each once)."""
        entries = self._entries
        state = self.state
        while entries:
            head = entries[0]
            if live.get(head.key) is head and head.state is state:
                return
            entries.popleft()
            self.stale -= 1

    def forget(self) -> None:
        """One live entry's job was deleted by hand (cancel, clean); its entry is now stale."""
        self.count -= 1
        self.stale += 1

    def maybe_compact(self, live: dict[JobKey, Job]) -> None:
        """Rebuild when stale entries outnumber live ones by more than ``COMPACT_MARGIN``."""
        if self.stale > self.count + COMPACT_MARGIN:
            self.rebuild(live)

    def remove(self, jobs: Collection[Job], live: dict[JobKey, Job]) -> None:
        """Take ``jobs`` (live entries) out of the list, and drop stale entries. O(len(list)).

        The caller changes those jobs' state (or deletes them) afterwards or has already.
        """
        state = self.state
        self._entries = deque(
            job for job in self._entries
            if job not in jobs and live.get(job.key) is job and job.state is state
        )
        self.count = len(self._entries)
        self.stale = 0
        self.tightest = min(map(self.limit_of, self._entries), default=NO_LIMIT)

    def rebuild(self, live: dict[JobKey, Job]) -> None:
        """Drop stale entries. O(len(list))."""
        self.remove((), live)
