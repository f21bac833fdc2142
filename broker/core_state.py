"""The core's state: its types, indexes and the helpers that keep the indexes consistent.

``broker/core`` (the public ``Core``) builds on this; ``broker/core_admin`` holds the
administrative operations. The types here are re-exported by ``broker/core``.

Theory of operation
-------------------
No I/O, no clock reads, no asyncio: every operation takes ``now`` (integer ms) and randomness
(jitter) comes from an injected ``random.Random``, so the same calls give the same results. The
I/O layer (``broker/server``) calls the operations, persists ``take_changes()`` through the
journal, wakes reservers for ``take_ready()`` and ``wait``-ers for ``take_finished()``, and keeps
one timer armed for ``next_deadline()``, which fires ``tick(now)``.

Indexes, each O(1) or O(log n) per job (see ``broker/heaps`` and ``broker/retention``):

* ``_jobs``: job id -> ``Job``; the single index of live jobs. A job object not in it is dead,
  and entries for it elsewhere are stale and skipped when met (lazy deletion).
* per queue (``QueueState``): a ``ReadyQueue`` of waiting jobs (priority, then the order they became
  waiting), ``FinishedList`` s of completed and failed jobs (finish order), and counters per state.
* ``_delayed``: one global heap ``(run_at, seq, job)``; ``_leases``: one heap
  ``(deadline, token, job)``; ``_prunes``: when each finished list's oldest entry expires by age.
* ``_owned``: connection id -> its active jobs in reservation order, for ``release_owner``.

Rules:

1. Every operation that can make jobs waiting first promotes delayed jobs due by ``now``, so jobs
   become waiting in ``run_at`` order and a reserve never misses a job that is due.
2. A job's attempt is counted when it is reserved. A failed attempt (``fail``, an expired lease,
   a lost connection, a restart) goes to ``failed`` when retry is off or attempts are used up,
   else to ``delayed`` for the backoff (or the given delay; ``waiting`` at once if it is 0).
   ``release`` is not a failure: it takes the attempt back (``attempts - 1``) and makes the job
   waiting (or delayed for the given delay).
3. Ready order after ``restore`` is ``(priority, run_at, seq)``, which is the live order except
   for jobs that became waiting in the same millisecond.

Invariants: a job is in exactly one place for its state (ready structure, delayed heap, lease
heap and owner map, or a finished list) plus possibly stale entries elsewhere; the per-queue
counters equal the number of live jobs per state; ``_unfinished`` is the sum of waiting, delayed
and active over all queues.
"""

from __future__ import annotations

import heapq
import random
import sys
from dataclasses import dataclass
from typing import Final

from broker import backoff as backoff_policy
from broker.heaps import DeadlineHeap, ReadyQueue
from broker.jobs import Job
from broker.retention import FinishedList
from protocol.errors import ErrorCode
from protocol.messages import (
    OK,
    Backoff,
    BackoffKind,
    JobState,
    Outcome,
    Retention,
)

WAITING: Final = JobState.WAITING
DELAYED: Final = JobState.DELAYED
ACTIVE: Final = JobState.ACTIVE
COMPLETED: Final = JobState.COMPLETED
FAILED: Final = JobState.FAILED

LEASE_EXPIRED: Final = "lease expired"
CONNECTION_LOST: Final = "worker connection lost"
RESTARTED: Final = "broker restarted during the attempt"
_MAX_INTERNED_NAMES: Final = 65_536
_new_tuple = tuple.__new__
_OK_COMPLETED: Final = Outcome(OK, COMPLETED.value)
_OUTCOME_OF_STATE: Final = {state: Outcome(OK, state.value) for state in JobState}


DEFAULT_BACKOFF: Final = Backoff(BackoffKind.EXPONENTIAL, 1_000, 3_600_000, 0.0)
"""From 1 s, doubling, capped at 1 h, no jitter."""
DEFAULT_KEEP_COMPLETED: Final = Retention(1_000, 86_400_000)
"""Per queue: the last 1,000 completed jobs, at most 1 day old."""
DEFAULT_KEEP_FAILED: Final = Retention(10_000, 7 * 86_400_000)
"""Per queue: the last 10,000 failed jobs, at most 7 days old."""


class CoreError(Exception):
    """The core's one exception; the session maps it to an ERROR reply.

    Attributes:
        code: the wire error code.
        message: a human-readable explanation.
    """

    def __init__(self, code: ErrorCode, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


@dataclass(frozen=True, slots=True)
class CoreConfig:
    """Broker-wide defaults and limits the core enforces."""

    default_max_attempts: int = 3
    default_backoff: Backoff = DEFAULT_BACKOFF
    default_lease_ms: int = 30_000
    keep_completed: Retention = DEFAULT_KEEP_COMPLETED
    keep_failed: Retention = DEFAULT_KEEP_FAILED
    max_payload: int = 1 << 20
    max_queue_jobs: int | None = None
    max_total_jobs: int | None = None


@dataclass(slots=True)
class QueueMeta:
    """A queue's persisted metadata."""

    name: str
    paused: bool = False
    total_completed: int = 0
    total_failed: int = 0


@dataclass(slots=True)
class Changes:
    """Everything changed since the last ``take_changes``: what the journal must write.

    ``next_seq`` is the next sequence number the core will use; persisting it keeps broker ids
    unique across restarts even when the job with the highest id was deleted.
    """

    jobs: dict[str, Job | None]
    queues: dict[str, QueueMeta]
    next_seq: int = 0

    def __bool__(self) -> bool:
        return bool(self.jobs) or bool(self.queues)


@dataclass(slots=True)
class Snapshot:
    """The journal's persisted state, from which ``Core.restore`` rebuilds the core."""

    jobs: list[Job]
    queues: list[QueueMeta]
    next_seq: int = 0


@dataclass(slots=True)
class QueueState:
    """One queue: its metadata, ready structure, finished lists and live counts per state."""

    name: str
    meta: QueueMeta
    ready: ReadyQueue
    completed: FinishedList
    failed: FinishedList
    waiting: int = 0
    delayed: int = 0
    active: int = 0

    @property
    def unfinished(self) -> int:
        return self.waiting + self.delayed + self.active


class CoreState:
    """The core's indexes and the helpers that keep them consistent (see the module docstring)."""

    def __init__(self, config: CoreConfig, *, rng: random.Random, token_base: int) -> None:
        """Create an empty core.

        Args:
            config: defaults and limits.
            rng: the random source for backoff jitter.
            token_base: lease tokens are ``token_base + counter``; pass a fresh random 62-bit
                number per boot so a token from before a restart never matches a lease after it.
        """
        self._config = config
        self._rng = rng
        self._token = token_base + 1
        self._seq = 1
        self._jobs: dict[str, Job] = {}
        self._queues: dict[str, QueueState] = {}
        self._names: dict[str, str] = {}
        self._delayed = DeadlineHeap()
        self._leases = DeadlineHeap()
        self._prunes: list[tuple[int, int, FinishedList, QueueState]] = []
        self._prune_counter = 0
        self._owned: dict[int, dict[Job, None]] = {}
        self._unfinished = 0
        self._changed_jobs: dict[str, Job | None] = {}
        self._changed_queues: dict[str, QueueMeta] = {}
        self._ready: set[str] = set()
        self._finished: set[str] = set()

    # ------------------------------------------------------------------ helpers

    def _queue(self, name: str) -> QueueState:
        """The queue named ``name``, created (and recorded for the journal) on first use."""
        queue = self._queues.get(name)
        if queue is None:
            name = sys.intern(name)
            config = self._config
            meta = QueueMeta(name)
            queue = QueueState(
                name, meta, ReadyQueue(),
                FinishedList(COMPLETED, config.keep_completed),
                FinishedList(FAILED, config.keep_failed),
            )
            self._queues[name] = queue
            self._changed_queues[name] = meta
        return queue

    def _intern(self, name: str) -> str:
        """Share one string object per job name (names repeat; ids do not)."""
        cached = self._names.get(name)
        if cached is not None:
            return cached
        if len(self._names) < _MAX_INTERNED_NAMES:
            self._names[name] = name
        return name

    def _is_live(self, job: Job) -> bool:
        return self._jobs.get(job.id) is job

    def _is_waiting(self, job: Job) -> bool:
        return job.state is WAITING and self._jobs.get(job.id) is job

    @staticmethod
    def _lease_entry_live(entry: tuple[int, int, Job]) -> bool:
        # Tokens are unique and a lease's token is cleared whenever the lease ends (ack, fail,
        # expiry, cancel, release), so the token alone tells a live lease entry.
        return entry[2].lease_token == entry[1]

    def _delayed_entry_live(self, entry: tuple[int, int, Job]) -> bool:
        job = entry[2]
        return job.state is DELAYED and job.run_at == entry[0] and self._is_live(job)

    def _delete(self, job: Job) -> None:
        """Remove ``job`` from the index; the caller fixes counters and structures."""
        del self._jobs[job.id]
        self._changed_jobs[job.id] = None
        self._finished.add(job.id)

    def _make_waiting(self, job: Job, queue: QueueState, run_at: int) -> None:
        job.move_to(WAITING)
        job.run_at = run_at
        queue.waiting += 1
        queue.ready.push(job)
        if not queue.meta.paused:
            self._ready.add(queue.name)

    def _make_delayed(self, job: Job, queue: QueueState, run_at: int) -> None:
        job.move_to(DELAYED)
        job.run_at = run_at
        queue.delayed += 1
        self._delayed.push(run_at, job.seq, job)

    def _promote_due(self, now: int) -> None:
        """Move every delayed job due by ``now`` to waiting, in ``(run_at, seq)`` order."""
        delayed = self._delayed
        entries = delayed.entries
        if not entries or entries[0][0] > now:
            return
        while (entry := delayed.pop_due(now)) is not None:
            run_at, _, job = entry
            if job.state is not DELAYED or job.run_at != run_at or not self._is_live(job):
                delayed.stale -= 1
                continue
            queue = self._queues[job.queue]
            queue.delayed -= 1
            self._make_waiting(job, queue, run_at)
            self._changed_jobs[job.id] = job

    def _end_lease(self, job: Job, queue: QueueState, *, entry_popped: bool) -> None:
        """Clear an active job's lease (before it moves on or is deleted)."""
        if job.owner is not None:
            owned = self._owned.get(job.owner)
            if owned is not None:
                owned.pop(job, None)
        job.lease_token = job.lease_deadline = job.owner = None
        queue.active -= 1
        if not entry_popped:
            leases = self._leases
            leases.stale += 1
            leases.maybe_compact(self._lease_entry_live)

    def _finish(self, job: Job, queue: QueueState, finished: FinishedList, now: int) -> None:
        """File a job that just completed or failed (state already set) under retention."""
        self._unfinished -= 1
        self._finished.add(job.id)
        if finished.add(job, self._jobs, self._delete):
            self._changed_jobs[job.id] = job
        if finished.scheduled is None:
            self._schedule_prune(finished, queue)

    def _schedule_prune(self, finished: FinishedList, queue: QueueState) -> None:
        expiry = finished.next_expiry(self._jobs)
        finished.scheduled = expiry
        if expiry is not None:
            self._prune_counter += 1
            heapq.heappush(self._prunes, (expiry, self._prune_counter, finished, queue))

    def _fail_attempt(
        self, job: Job, queue: QueueState, error: str, retry: bool, delay_ms: int | None, now: int,
        *, entry_popped: bool = False,
    ) -> JobState:
        """Count a failed attempt of an active job: failed, or retried after a delay."""
        self._end_lease(job, queue, entry_popped=entry_popped)
        job.error = error
        self._changed_jobs[job.id] = job
        if not retry or job.attempts >= job.max_attempts:
            job.move_to(FAILED)
            job.finished_at = now
            queue.meta.total_failed += 1
            self._changed_queues[queue.name] = queue.meta
            self._finish(job, queue, queue.failed, now)
            return FAILED
        if delay_ms is None:
            policy = job.options.backoff or self._config.default_backoff
            delay_ms = backoff_policy.delay(max(job.attempts, 1), policy, self._rng)
        if delay_ms <= 0:
            self._make_waiting(job, queue, now)
            return WAITING
        self._make_delayed(job, queue, now + delay_ms)
        return DELAYED

