"""The core's state: its types, its indexes, and the methods that keep the indexes consistent.

``CoreState`` is what ``broker.core.Core`` operates on; the operations themselves live in the
concern modules (``core_producer``, ``core_worker``, ``core_admin``, ``core_recovery``) as
functions of a ``CoreState``. The indexes, rules and invariants are described once, in the
theory of operation in ``broker/core``.
"""

from __future__ import annotations

import heapq
import random
import sys
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Final, Protocol

from broker import backoff as backoff_policy
from broker.core_config import CoreConfig
from broker.events import PendingEvents
from broker.heaps import DeadlineHeap, ReadyQueue
from broker.jobs import Job, JobKey
from broker.metrics import QueueMetrics
from broker.ratelimit import SlidingWindow
from broker.retention import FinishedList
from broker.schedule import ScheduleBook, Scheduler, SchedulerKey
from protocol.errors import ErrorCode
from protocol.model import JobState
from protocol.observing import EventKind


class ListingIndex(Protocol):
    """The view of ``broker.core_lists.WaitingIndex`` the core needs: the lazy order-statistic
    index of a queue's waiting jobs, kept current while it exists."""

    used_at: int

    def __len__(self) -> int: ...

    def add(self, job: Job) -> None: ...

    def remove(self, job: Job) -> None: ...

    def take_first(self, job: Job) -> None: ...

    def add_all(self, jobs: Iterable[Job]) -> None: ...

WAITING: Final = JobState.WAITING
DELAYED: Final = JobState.DELAYED
ACTIVE: Final = JobState.ACTIVE
COMPLETED: Final = JobState.COMPLETED
FAILED: Final = JobState.FAILED

_MAX_INTERNED_NAMES: Final = 65_536


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


@dataclass(slots=True)
class QueueMeta:
    """A queue's persisted metadata."""

    name: str
    paused: bool = False
    total_completed: int = 0
    total_failed: int = 0
    rate_max: int | None = None
    """Flow control (``broker/core_flow``): at most ``rate_max`` starts per ``rate_period_ms``."""
    rate_period_ms: int | None = None
    concurrency: int | None = None
    """At most this many active jobs at once."""
    paused_until: int | None = None
    """No reservations before this time (a worker's "not now" with ``pause_queue``)."""

    @property
    def limited(self) -> bool:
        """Any flow control set (reserve then asks ``core_flow.room``)."""
        return (self.rate_max is not None or self.concurrency is not None
                or self.paused_until is not None)


@dataclass(slots=True)
class Changes:
    """Everything changed since the last ``take_changes``: what the journal must write.

    ``next_seq`` is the next sequence number the core will use; persisting it keeps broker ids
    unique across restarts even when the job with the highest id was deleted.
    """

    jobs: dict[int, Job | None]
    """By ``seq`` (the journal's row key): the live job to write, or ``None`` to delete."""
    queues: dict[str, QueueMeta | None]
    """By name: the metadata to write, or ``None`` to delete the queue's row (obliterate)."""
    next_seq: int = 0
    schedules: dict[SchedulerKey, Scheduler | None] = field(default_factory=dict)
    """By ``(queue, key)``: the scheduler to write, or ``None`` to delete its row."""
    new_from: int = 0
    """Jobs of ``seq >= new_from`` were created since the changes taken before (the journal
    writes their payload row with them, once; ``seq`` only grows). 0: any job may be new."""

    def __bool__(self) -> bool:
        return bool(self.jobs) or bool(self.queues) or bool(self.schedules)


@dataclass(slots=True)
class Snapshot:
    """The journal's persisted state, from which ``Core.restore`` rebuilds the core."""

    jobs: list[Job]
    queues: list[QueueMeta]
    next_seq: int = 0
    schedules: list[Scheduler] = field(default_factory=list)


@dataclass(slots=True)
class QueueState:
    """One queue: its metadata, ready structure, finished lists, live counts per state and
    metrics (rates and durations since the broker started; not journaled)."""

    name: str
    meta: QueueMeta
    ready: ReadyQueue
    completed: FinishedList
    failed: FinishedList
    waiting: int = 0
    delayed: int = 0
    active: int = 0
    limited: bool = False
    """``meta.limited``, kept here for the reserve hot path (``core_flow`` keeps it current)."""
    window: SlidingWindow | None = None
    """The rate limit's start log, while ``meta.rate_max`` is set."""
    wake_at: int | None = None
    """When the flow timer next looks at this queue (``core_flow.schedule_wake``)."""
    listing: ListingIndex | None = None
    """The waiting jobs in run order, once a ``list_jobs`` asked for them (``core_lists``)."""
    metrics: QueueMetrics = field(default_factory=QueueMetrics)

    @property
    def unfinished(self) -> int:
        return self.waiting + self.delayed + self.active


class CoreState:
    """The core's indexes (see "Indexes" in ``broker/core``) and the methods that keep them
    consistent. Only the core's modules use it; everything else goes through ``Core``."""

    __slots__ = (
        "changed_jobs", "changed_queues", "config", "delayed", "events", "finished_ids",
        "flow_wakes",
        "gone_at_finish", "gone_last", "jobs", "leases", "names", "owned", "prune_counter",
        "prunes", "queues", "ready_names", "rng", "schedules", "seq", "shared", "taken_seq",
        "token",
        "unfinished",
    )

    def __init__(self, config: CoreConfig, *, rng: random.Random, token_base: int) -> None:
        """Create the state of an empty core.

        Args:
            config: defaults and limits.
            rng: the random source for backoff jitter.
            token_base: lease tokens are ``token_base + counter``; pass a fresh random 62-bit
                number per boot so a token from before a restart never matches a lease after it.
        """
        self.config = config
        self.rng = rng
        self.token = token_base + 1
        self.seq = 1
        self.taken_seq = 1
        """``seq`` when the changes were last taken: later jobs are new (``Changes.new_from``)."""
        self.jobs: dict[JobKey, Job] = {}
        self.shared: dict[str, dict[str, None]] = {}
        """User id -> the queues whose job of that id is keyed ``(queue, id)`` in ``jobs``
        (``add``); empty unless one user id is live in several queues."""
        self.queues: dict[str, QueueState] = {}
        self.names: dict[str, str] = {}
        self.delayed = DeadlineHeap()
        self.leases = DeadlineHeap()
        self.prunes: list[tuple[int, int, FinishedList, QueueState]] = []
        self.prune_counter = 0
        self.flow_wakes: list[tuple[int, str]] = []
        """``(time, queue)``: when a rate-limited or paused-for queue may have room again."""
        self.owned: dict[int, dict[Job, None]] = {}
        self.schedules = ScheduleBook()
        """Repeatable jobs' schedulers (``broker/core_schedules``)."""
        self.unfinished = 0
        self.changed_jobs: dict[int, Job | None] = {}
        self.changed_queues: dict[str, QueueMeta | None] = {}
        self.ready_names: set[str] = set()
        self.finished_ids: set[tuple[str, str]] = set()
        """``(queue, id)`` of jobs that finished or were deleted since ``take_finished``."""
        self.gone_at_finish: dict[tuple[str, str], Job] = {}
        """Jobs deleted the moment they finished (retention keeping none), by ``(queue, id)``,
        since the last ``take_finished``: what a parked ``wait`` for them is answered with."""
        self.gone_last: dict[tuple[str, str], Job] = {}
        self.events: PendingEvents | None = None
        """Where job events are recorded while someone subscribes (``broker/events``); ``None``
        otherwise, which every operation tests before building an event."""

    def queue(self, name: str) -> QueueState:
        """The queue named ``name``, created (and recorded for the journal) on first use."""
        queue = self.queues.get(name)
        if queue is None:
            name = sys.intern(name)
            config = self.config
            meta = QueueMeta(name)
            queue = QueueState(
                name, meta, ReadyQueue(),
                FinishedList(COMPLETED, config.keep_completed),
                FinishedList(FAILED, config.keep_failed),
            )
            self.queues[name] = queue
            self.changed_queues[name] = meta
        return queue

    def intern(self, name: str) -> str:
        """Share one string object per job name (names repeat; ids do not)."""
        cached = self.names.get(name)
        if cached is not None:
            return cached
        if len(self.names) < _MAX_INTERNED_NAMES:
            self.names[name] = name
        return name

    # ------------------------------------------------------------------ the job index

    def add(self, job: Job) -> None:
        """File a new job in ``jobs`` (its id is not in its queue yet: ``find``).

        Key: the id, unless a live job of another queue holds that key; then ``(queue, id)``,
        noted in ``shared``. Broker-assigned ids are unique and never take the second form.
        """
        job_id = job.id
        if job_id in self.jobs:
            key = job.key = (job.queue, job_id)
            self.shared.setdefault(job_id, {})[job.queue] = None
            self.jobs[key] = job
        else:
            job.key = job_id  # a job restored from a snapshot may carry the form of before
            self.jobs[job_id] = job

    def find(self, queue: str, job_id: str) -> Job | None:
        """The live job ``job_id`` of ``queue``, or ``None``."""
        job = self.jobs.get(job_id)
        if job is not None and job.queue == queue:
            return job
        queues = self.shared.get(job_id)
        if queues is not None and queue in queues:
            return self.jobs[(queue, job_id)]
        return None

    def lookup(self, job_id: str, queue: str | None) -> Job | None:
        """The job a ``get``/``wait``/``cancel`` names: by ``(queue, id)``, or by id alone.

        Raises:
            CoreError: ``AMBIGUOUS_ID`` when no queue is given and the id is live in several.
        """
        if queue is not None:
            return self.find(queue, job_id)
        queues = self.shared.get(job_id)
        if queues is None:
            return self.jobs.get(job_id)
        found = [self.jobs[(name, job_id)] for name in queues]
        first = self.jobs.get(job_id)
        if first is not None:
            found.append(first)
        if len(found) == 1:
            return found[0]
        names = ", ".join(sorted(repr(job.queue) for job in found))
        raise CoreError(
            ErrorCode.AMBIGUOUS_ID,
            f"job id {job_id!r} is in {len(found)} queues ({names}): give the queue",
        )

    def leased(self, job_id: str, token: int) -> Job | None:
        """The job ``job_id`` whose lease token is ``token`` (tokens are unique, so this is never
        ambiguous); else some live job of that id, for the error, or ``None``."""
        job = self.jobs.get(job_id)
        if job is not None and job.lease_token == token:
            return job
        queues = self.shared.get(job_id)
        if queues is not None:
            for name in queues:
                other = self.jobs[(name, job_id)]
                if other.lease_token == token:
                    return other
                if job is None:
                    job = other
        return job

    def is_live(self, job: Job) -> bool:
        return self.jobs.get(job.key) is job

    def is_waiting(self, job: Job) -> bool:
        return job.state is WAITING and self.jobs.get(job.key) is job

    @staticmethod
    def lease_entry_live(entry: tuple[int, int, Job]) -> bool:
        # Tokens are unique and a lease's token is cleared whenever the lease ends (ack, fail,
        # expiry, cancel, release), so the token alone tells a live lease entry.
        return entry[2].lease_token == entry[1]

    def delayed_entry_live(self, entry: tuple[int, int, Job]) -> bool:
        job = entry[2]
        return job.state is DELAYED and job.run_at == entry[0] and self.is_live(job)

    def delete(self, job: Job) -> None:
        """Remove ``job`` from the index; the caller fixes counters and structures."""
        key = job.key
        del self.jobs[key]
        if type(key) is tuple:
            queues = self.shared[job.id]
            del queues[job.queue]
            if not queues:
                del self.shared[job.id]
        self.changed_jobs[job.seq] = None
        self.finished_ids.add((job.queue, job.id))

    def make_waiting(self, job: Job, queue: QueueState, run_at: int) -> None:
        job.move_to(WAITING)
        job.run_at = run_at
        queue.waiting += 1
        queue.ready.push(job)
        # push files the job in the ready queue's seq index too (for clean); its stale entries
        # are dropped here, so the index stays within a margin of the waiting jobs.
        queue.ready.maybe_compact(queue.waiting, self.is_waiting)
        if queue.listing is not None:
            queue.listing.add(job)
        if not queue.meta.paused:
            self.ready_names.add(queue.name)

    def make_delayed(self, job: Job, queue: QueueState, run_at: int) -> None:
        job.move_to(DELAYED)
        job.run_at = run_at
        queue.delayed += 1
        self.delayed.push(run_at, job.seq, job)

    def promote_due(self, now: int) -> None:
        """Move every delayed job due by ``now`` to waiting, in ``(run_at, seq)`` order."""
        delayed = self.delayed
        entries = delayed.entries
        if not entries or entries[0][0] > now:
            return
        while (entry := delayed.pop_due(now)) is not None:
            run_at, _, job = entry
            if job.state is not DELAYED or job.run_at != run_at or not self.is_live(job):
                delayed.stale -= 1
                continue
            queue = self.queues[job.queue]
            queue.delayed -= 1
            self.make_waiting(job, queue, run_at)
            self.changed_jobs[job.seq] = job
            if self.events is not None:
                self.events.record(EventKind.WAITING, now, job.queue, job.id, job.name)

    def end_lease(self, job: Job, queue: QueueState, *, entry_popped: bool) -> None:
        """Clear an active job's lease (before it moves on or is deleted)."""
        if job.owner is not None:
            owned = self.owned.get(job.owner)
            if owned is not None:
                owned.pop(job, None)
        job.lease_token = job.lease_deadline = job.owner = None
        queue.active -= 1
        meta = queue.meta
        if meta.concurrency is not None and queue.waiting and not meta.paused:
            self.ready_names.add(queue.name)  # a concurrency slot freed
        if not entry_popped:
            leases = self.leases
            leases.stale += 1
            leases.maybe_compact(self.lease_entry_live)

    def finish(self, job: Job, queue: QueueState, finished: FinishedList, now: int) -> None:
        """File a job that just completed or failed (state already set) under retention."""
        self.unfinished -= 1
        self.finished_ids.add((job.queue, job.id))
        if finished.add(job, self.jobs, self.delete):
            self.changed_jobs[job.seq] = job
        elif self.jobs.get(job.key) is not job:
            self.gone_at_finish[(job.queue, job.id)] = job
        if finished.scheduled is None:
            self.schedule_prune(finished, queue)

    def schedule_prune(self, finished: FinishedList, queue: QueueState) -> None:
        expiry = finished.next_expiry(self.jobs)
        finished.scheduled = expiry
        if expiry is not None:
            self.prune_counter += 1
            heapq.heappush(self.prunes, (expiry, self.prune_counter, finished, queue))

    def reschedule(self, queue: QueueState) -> None:
        """After finished jobs were taken out by hand, make sure age pruning is scheduled for the
        new oldest entries (a list whose old head was kept forever has nothing scheduled)."""
        for finished in (queue.completed, queue.failed):
            if finished.scheduled is None:
                self.schedule_prune(finished, queue)

    def forget(self, job: Job, queue: QueueState) -> None:
        """Fix counters for a deleted job (its lease, if any, already ended)."""
        state = job.state
        if state is WAITING:
            queue.waiting -= 1
            queue.ready.stale += 1
            if queue.listing is not None:
                queue.listing.remove(job)
        elif state is DELAYED:
            queue.delayed -= 1
            self.delayed.stale += 1
        elif state is COMPLETED:
            queue.completed.forget()
        elif state is FAILED:
            queue.failed.forget()
        if state is WAITING or state is DELAYED or state is ACTIVE:
            self.unfinished -= 1

    def fail_attempt(
        self, job: Job, queue: QueueState, error: str, retry: bool, delay_ms: int | None, now: int,
        *, entry_popped: bool = False, expired: bool = False,
    ) -> JobState:
        """Count a failed attempt of an active job: failed, or retried after a delay.

        ``expired``: the attempt ended without an outcome (lease expiry, lost connection), which
        its event and the queue's ``expired`` counter tell apart from a worker's ``fail``.
        """
        self.end_lease(job, queue, entry_popped=entry_popped)
        job.error = error
        self.changed_jobs[job.seq] = job
        metrics = queue.metrics
        if expired:
            metrics.expired.add(now)
        if not retry or job.attempts >= job.max_attempts:
            job.move_to(FAILED)
            job.finished_at = now
            queue.meta.total_failed += 1
            self.changed_queues[queue.name] = queue.meta
            self.finish(job, queue, queue.failed, now)
            metrics.failed.add(now)
            self._record_failure(job, error, expired, None, now)
            return FAILED
        metrics.retried.add(now)
        if delay_ms is None:
            policy = job.options.backoff or self.config.default_backoff
            delay_ms = backoff_policy.delay(max(job.attempts, 1), policy, self.rng)
        if delay_ms <= 0:
            self.make_waiting(job, queue, now)
            self._record_failure(job, error, expired, now, now)
            return WAITING
        self.make_delayed(job, queue, now + delay_ms)
        self._record_failure(job, error, expired, now + delay_ms, now)
        return DELAYED

    def _record_failure(
        self, job: Job, error: str, expired: bool, retry_at: int | None, now: int
    ) -> None:
        """The events of a failed attempt: ``failed`` or ``lease_expired``, then ``delayed``
        when the retry waits."""
        events = self.events
        if events is None:
            return
        kind = EventKind.LEASE_EXPIRED if expired else EventKind.FAILED
        events.record(kind, now, job.queue, job.id, job.name,
                      (job.attempts, error, retry_at is not None, retry_at, job.max_attempts))
        if retry_at is not None and retry_at > now:
            events.record(EventKind.DELAYED, now, job.queue, job.id, job.name, (retry_at,))

