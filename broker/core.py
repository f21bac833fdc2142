"""The broker's core: a pure, deterministic, synchronous job state machine (``Core``).

Theory of operation
-------------------
No I/O, no clock reads, no asyncio: every operation takes ``now`` (integer ms since the epoch) and
randomness (backoff jitter) comes from an injected ``random.Random``, so the same calls give the
same results. The I/O layer (``broker/server``) calls the operations, persists ``take_changes()``
through the journal, wakes reservers for ``take_ready()`` and ``wait``-ers for
``take_finished()``, and keeps one timer armed for ``next_deadline()``, which fires ``tick(now)``.
``docs/internals.md`` is the contract.

``Core`` is the one public class. It owns a ``CoreState`` (``broker/core_state``: the types, the
indexes and the methods that keep them consistent) and each operation is a function of that state
in the module for its concern: ``core_producer`` (enqueue), ``core_worker`` (reserve, ack, fail,
extend, release, progress, a lost connection, ``tick``), ``core_admin`` (cancel, get, queue
control, stats, clean, the failed set), ``core_flow`` (rate and concurrency limits and the
"not now" pause, checked by reserve), ``core_schedules`` (repeatable jobs: ``Core.schedules``)
and ``core_recovery`` (``restore``). The defaults and limits are ``CoreConfig``.

Indexes, each O(1) or O(log n) per job (see ``broker/heaps`` and ``broker/retention``):

* ``jobs``: job id -> ``Job``; the single index of live jobs. A job object not in it is dead,
  and entries for it elsewhere are stale and skipped when met (lazy deletion).
* per queue (``QueueState``): a ``ReadyQueue`` of waiting jobs (priority, then the order they became
  waiting), ``FinishedList`` s of completed and failed jobs (finish order), and counters per state.
* ``delayed``: one global heap ``(run_at, seq, job)``; ``leases``: one heap
  ``(deadline, token, job)``; ``prunes``: when each finished list's oldest entry expires by age.
* ``owned``: connection id -> its active jobs in reservation order, for ``release_owner``.

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
counters equal the number of live jobs per state; ``unfinished`` is the sum of waiting, delayed
and active over all queues.
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Sequence
from typing import Any

from broker import (
    core_admin,
    core_flow,
    core_lists,
    core_obliterate,
    core_producer,
    core_recovery,
    core_worker,
)
from broker.core_config import CoreConfig
from broker.core_flow import QueueLimits
from broker.core_schedules import Schedules
from broker.core_state import Changes, CoreError, CoreState, QueueMeta, Snapshot
from broker.events import PendingEvents
from broker.jobs import Job
from broker.metrics import QueueMetrics
from broker.replysize import job_info
from protocol.model import AckItem, ExtendItem, FailItem, JobSpec, JobState, ReleaseItem
from protocol.replies import EnqueueResult, JobInfo, Outcome, QueueStats, ReservedJob

__all__ = ["Changes", "Core", "CoreConfig", "CoreError", "QueueLimits", "QueueMeta", "Snapshot"]


class Core:
    """The job state machine (see the theory of operation above and ``docs/internals.md``)."""

    __slots__ = ("_state",)

    def __init__(self, config: CoreConfig, *, rng: random.Random, token_base: int) -> None:
        """Create an empty core.

        Args:
            config: defaults and limits.
            rng: the random source for backoff jitter.
            token_base: lease tokens are ``token_base + counter``; pass a fresh random 62-bit
                number per boot so a token from before a restart never matches a lease after it.
        """
        self._state = CoreState(config, rng=rng, token_base=token_base)

    @classmethod
    def restore(
        cls, config: CoreConfig, snapshot: Snapshot, now: int, *, rng: random.Random,
        token_base: int,
    ) -> Core:
        """Rebuild a core from the journal's snapshot.

        A job that was active counts that attempt as failed ("broker restarted during the
        attempt"): delayed with backoff, or failed if none are left. Those changes, and
        retention pruning, are recorded so the next commit persists them. Waiting jobs are
        ordered by ``(priority, run_at, seq)``.

        Args:
            config: defaults and limits.
            snapshot: every persisted job and queue (the jobs are adopted, not copied).
            now: the current time.
            rng: the random source for jitter.
            token_base: the lease token base for this boot (see ``__init__``).

        Returns:
            The rebuilt core.
        """
        core = cls(config, rng=rng, token_base=token_base)
        core_recovery.load(core._state, snapshot, now)
        return core

    @property
    def config(self) -> CoreConfig:
        """The defaults and limits this core enforces."""
        return self._state.config

    # ------------------------------------------------------------------ producer (core_producer)

    def enqueue(self, queue: str, specs: Sequence[JobSpec], now: int) -> EnqueueResult:
        """Add a batch of jobs to ``queue``, all or nothing.

        A spec with a ``job_id`` that already exists in ``queue`` (in any state, until retention
        or a cancel removes it; the same id in another queue is another job) creates nothing:
        its index is reported in ``duplicates`` and its id is returned. ``run_at_ms`` wins over
        ``delay_ms``; a job due by ``now`` starts waiting.

        Args:
            queue: the queue name (created on first use).
            specs: the jobs; ``None`` fields take ``CoreConfig`` defaults.
            now: the current time.

        Returns:
            The id of each spec, in order, and the indexes of the duplicates.

        Raises:
            CoreError: ``PAYLOAD_TOO_LARGE`` (a payload above ``max_payload``) or ``QUEUE_FULL``
                (the new jobs would exceed ``max_queue_jobs`` or ``max_total_jobs``); nothing
                is created.
        """
        return core_producer.enqueue(self._state, queue, specs, now)

    # ------------------------------------------------------------------ workers, time (core_worker)

    def reserve(
        self, queues: Sequence[str], max_jobs: int, lease_ms: int | None, owner: int, now: int,
        max_bytes: int | None = None,
    ) -> list[ReservedJob]:
        """Lease up to ``max_jobs`` waiting jobs to a worker.

        Queues are tried in the given order; within a queue the lowest priority comes first,
        then the job that became waiting first. Paused and unknown queues give nothing; a queue
        with flow control gives at most what its rate and concurrency limits and its "not now"
        pause allow (``broker/core_flow``), and the next queue is tried. The lease
        lasts the job's own ``lease_ms`` if it has one, else ``lease_ms``, else the default;
        a job with a timeout also gets its attempt deadline (``broker/timeouts``).

        Args:
            queues: queue names, most preferred first.
            max_jobs: the most jobs to hand out.
            lease_ms: the lease length the worker asks for, or ``None``.
            owner: the connection id (see ``release_owner``).
            now: the current time.
            max_bytes: the room for the reply's jobs (``broker.replysize``), or ``None`` for no
                limit. A job whose size (``broker.replysize.reserve_budget``) would take the total
                past it is not taken, nor is any after it; the first job is always taken.

        Returns:
            The reserved jobs (possibly none), each with its lease token and deadline.
        """
        return core_worker.reserve(
            self._state, queues, max_jobs, lease_ms, owner, now, max_bytes
        )

    def ack(self, items: Sequence[AckItem], now: int) -> list[Outcome]:
        """Complete active jobs.

        Args:
            items: ``(job_id, token, result)`` per job.
            now: the current time.

        Returns:
            Per item ``Outcome("OK", "completed")``, or ``NOT_FOUND`` (no such job),
            ``STALE_LEASE`` (not active, or another token) or ``PAYLOAD_TOO_LARGE`` (result above
            ``max_payload``), each of which changed nothing.
        """
        return core_worker.ack(self._state, items, now)

    def fail(self, items: Sequence[FailItem], now: int) -> list[Outcome]:
        """Fail attempts of active jobs (rule 2 of the theory of operation above).

        Args:
            items: ``(job_id, token, error, retry, delay_ms)`` per job; ``retry=False`` fails the
                job for good, ``delay_ms`` replaces the backoff delay.
            now: the current time.

        Returns:
            Per item ``Outcome("OK", new_state)`` with new_state ``"delayed"``, ``"waiting"``
            (a zero delay) or ``"failed"``; or ``NOT_FOUND`` / ``STALE_LEASE``, changing nothing.
        """
        return core_worker.fail(self._state, items, now)

    def extend(self, items: Sequence[ExtendItem], now: int) -> list[Outcome]:
        """Extend leases to ``now + lease_ms`` (the job's own lease length if ``None``).

        Returns:
            Per item ``Outcome("OK", new_deadline_ms)``, or ``NOT_FOUND`` / ``STALE_LEASE``,
            changing nothing.
        """
        return core_worker.extend(self._state, items, now)

    def release(self, items: Sequence[ReleaseItem], now: int) -> list[Outcome]:
        """Hand leased jobs back without counting their attempt (a worker that stops early).

        The lease ends and ``attempts`` goes back down by one (the reservation counted it), so a
        job on its last attempt is not failed; progress, the last error and ``started_at`` stay.
        A ``delay_ms`` of 0 or ``None`` makes the job waiting at once (its queue is reported by
        ``take_ready``), else delayed until ``now + delay_ms``; with ``pause_queue`` the job's
        queue also hands out no job until then ("not now": the downstream is rate limited).

        Args:
            items: ``(job_id, token, delay_ms, pause_queue)`` per job.
            now: the current time.

        Returns:
            Per item ``Outcome("OK", "waiting")`` or ``Outcome("OK", "delayed")``; or
            ``NOT_FOUND`` / ``STALE_LEASE`` (as ``ack``), changing nothing.
        """
        return core_worker.release(self._state, items, now)

    def progress(self, job_id: str, token: int, value: Any, now: int) -> None:
        """Record an active job's progress (any small msgpack value).

        Raises:
            CoreError: ``NOT_FOUND``, ``STALE_LEASE``, or ``PAYLOAD_TOO_LARGE`` if the value
                packs to more than ``max_payload`` bytes.
        """
        core_worker.progress(self._state, job_id, token, value, now)

    def release_owner(self, owner: int, now: int) -> int:
        """A connection closed: fail one attempt of each job it held ("worker connection lost").

        Returns:
            How many jobs it held.
        """
        return core_worker.release_owner(self._state, owner, now)

    def tick(self, now: int) -> None:
        """Promote due delayed jobs, expire leases (one failed attempt, "lease expired"), fail
        attempts past their job's timeout (``broker/timeouts``: "timed out after N ms", however
        the lease was extended) and prune finished jobs by age.

        Leases expire in ``(deadline, token)`` order (the deadline: the earlier of the two).
        """
        core_worker.tick(self._state, now)

    def next_deadline(self) -> int | None:
        """The earliest time at which ``tick`` has work, or ``None``.

        Stale entries at the top of the heaps are dropped first, so an idle core (say, after
        acks) arms no timer; the answer may still be early (an extended lease), never late.
        """
        return core_worker.next_deadline(self._state)

    # ------------------------------------------------------------------ administration (core_admin)

    def cancel(self, job_id: str, now: int, queue: str | None = None) -> JobState:
        """Delete a job in any state. An active job's lease is revoked: the worker's later
        ack/fail/extend gets ``NOT_FOUND``.

        Args:
            job_id: the job.
            now: the current time.
            queue: the job's queue; needed only when the user id is live in several queues.

        Returns:
            The state the job was in.

        Raises:
            CoreError: ``NOT_FOUND``, or ``AMBIGUOUS_ID`` (no ``queue`` and the id is live in
                several queues).
        """
        return core_admin.cancel(self._state, job_id, queue, now)

    def get(self, job_id: str, queue: str | None = None) -> JobInfo | None:
        """Describe a job, or ``None`` if there is no such job (never was, or removed).

        Job ids are unique per queue: ``queue`` picks one; without it the id must be live in
        one queue at most (broker-assigned ids always are).

        Raises:
            CoreError: ``AMBIGUOUS_ID`` (no ``queue`` and the id is live in several queues).
        """
        return core_admin.get(self._state, job_id, queue)

    def iter_jobs(self) -> Iterator[Job]:
        """Every live job, in no particular order (for tests and diagnostics; O(n))."""
        return core_admin.iter_jobs(self._state)

    def pause(self, queue: str, now: int, for_ms: int | None = None) -> None:
        """Stop handing out the queue's jobs (reserve skips it), until ``resume`` or, with
        ``for_ms``, until ``now + for_ms`` (a "not now" pause). Creates the queue if new."""
        core_admin.pause(self._state, queue, now, for_ms)

    def resume(self, queue: str, now: int) -> None:
        """Hand out the queue's jobs again (also lifting a "not now" pause). Creates the queue
        if new."""
        core_admin.resume(self._state, queue, now)

    def limit(
        self, queue: str, rate: tuple[int, int] | bool | None, concurrency: int | bool | None,
        now: int,
    ) -> QueueLimits:
        """Set, change or clear a queue's rate and concurrency limits (``broker/core_flow``);
        with both ``None``, only report them. A change creates the queue if new (a read does
        not).

        Args:
            queue: the queue.
            rate: ``(max, period_ms)`` (at most ``max`` starts in any window of ``period_ms``),
                ``False`` to clear it, ``None`` to leave it.
            concurrency: at most this many active jobs, ``False`` to clear, ``None`` to leave.
            now: the current time.

        Returns:
            The queue's limits after the change, with its "not now" pause if one is running.
        """
        return core_flow.set_limits(self._state, queue, rate, concurrency, now)

    def stats(self, queue: str | None, now: int) -> dict[str, QueueStats]:
        """Counters of one queue (zeros if it does not exist), or of every queue if ``None``.

        ``oldest_waiting_ms`` is ``now`` minus the earliest ``run_at`` (the time it became due)
        among the queue's waiting jobs. O(1) per queue, plus O(log k) for each of its k
        priorities in use whose first job changed since (``ReadyQueue.earliest_run_at``).
        """
        return core_admin.stats(self._state, queue, now)

    def stats_page(self, offset: int, limit: int, now: int) -> tuple[dict[str, QueueStats], int]:
        """Counters of the queues from the ``offset``-th in creation order, at most ``limit``.

        Returns:
            ``(stats by queue name, how many queues there are)``.
        """
        queues, total = core_lists.stats_page(self._state, offset, limit)
        return core_admin.stats_of(self._state, queues, now), total

    def list_jobs(
        self, queue: str, states: Sequence[JobState], offset: int, limit: int, now: int
    ) -> tuple[list[Job], int]:
        """A page of the queue's jobs in ``states`` (see ``broker/core_lists`` for the orders).

        The states' jobs follow one another in the order ``states`` names them. Waiting jobs
        are paged through an order-statistic index (O(log n + limit)), built on the first call
        for the queue and kept up to date while lists read it (``core_lists.kept``).

        Args:
            queue: the queue (an unknown one has no jobs).
            states: distinct states, in the order to list them.
            offset: jobs to skip.
            limit: the most jobs to return.
            now: the current time (keeps the waiting index alive).

        Returns:
            ``(the jobs, how many jobs the queue has in those states)``.
        """
        return core_lists.list_jobs(self._state, queue, states, offset, limit, now)

    def clean(
        self, queue: str, state: JobState, older_than_ms: int, limit: int | None, now: int
    ) -> int:
        """Delete jobs of one state in one queue that finished (completed, failed) or were
        created (waiting, delayed) at or before ``now - older_than_ms``, oldest first.

        Args:
            queue: the queue.
            state: waiting, delayed, completed or failed.
            older_than_ms: only jobs at least this old.
            limit: the most jobs to delete, or ``None`` for all.
            now: the current time.

        Returns:
            How many jobs were deleted.

        Raises:
            CoreError: ``BAD_ARGUMENT`` for ``active`` (cancel active jobs one by one).
        """
        return core_admin.clean(self._state, queue, state, older_than_ms, limit, now)

    def list_failed(self, queue: str, limit: int, offset: int) -> tuple[list[JobInfo], int]:
        """The queue's failed jobs, newest first.

        Returns:
            ``(jobs[offset:offset + limit], total failed in the queue)``.
        """
        return core_admin.list_failed(self._state, queue, limit, offset)

    def retry_failed(
        self, queue: str, job_ids: Sequence[str] | None, limit: int | None, now: int
    ) -> tuple[int, list[str]]:
        """Move failed jobs back to waiting with ``attempts`` reset to 0 (the last error stays).

        Args:
            queue: the queue.
            job_ids: the jobs to retry, or ``None`` for all of the queue's failed jobs.
            limit: with ``job_ids=None``, retry at most this many (oldest failure first);
                ignored when ids are given.
            now: the current time (becomes the jobs' ``run_at``).

        Returns:
            ``(how many were retried, the given ids that are not failed jobs of this queue)``.
        """
        return core_admin.retry_failed(self._state, queue, job_ids, limit, now)

    def obliterate(self, queue: str, force: bool, now: int) -> int:
        """Delete ``queue`` and every job in it; ``stats`` no longer lists it, and the journal
        deletes its rows in the same commit. A queue that does not exist removes nothing.

        Args:
            queue: the queue.
            force: also delete active jobs, revoking their leases (as ``cancel`` does: the
                worker's later ack/fail/extend gets ``NOT_FOUND``).
            now: the current time.

        Returns:
            How many jobs were deleted.

        Raises:
            CoreError: ``CONFLICT`` when the queue has active jobs and ``force`` is false;
                nothing is changed.
        """
        return core_obliterate.obliterate(self._state, queue, force, now)

    @property
    def schedules(self) -> Schedules:
        """Repeatable jobs' schedulers: upsert, remove, list (``broker/core_schedules``);
        ``tick`` makes their occurrences and ``next_deadline`` wakes for them."""
        return Schedules(self._state)

    # ------------------------------------------------------------------ hand-offs to the I/O layer

    def take_changes(self) -> Changes:
        """Everything changed since the last call (the journal writes it as one transaction).

        ``Changes.jobs`` maps each changed job's ``seq`` to the live ``Job`` (or ``None``:
        deleted);
        the journal must read the job's fields when it builds the transaction.
        """
        state = self._state
        changes = Changes(state.changed_jobs, state.changed_queues, state.seq,
                          state.schedules.take_changes(), state.taken_seq)
        state.taken_seq = state.seq
        state.changed_jobs = {}
        state.changed_queues = {}
        return changes

    def take_ready(self) -> set[str]:
        """Names of queues that gained reservable jobs since the last call."""
        state = self._state
        ready, state.ready_names = state.ready_names, set()
        return ready

    def take_finished(self) -> set[tuple[str, str]]:
        """``(queue, id)`` of jobs that completed, failed or were deleted since the last call."""
        state = self._state
        finished, state.finished_ids = state.finished_ids, set()
        state.gone_last, state.gone_at_finish = state.gone_at_finish, {}
        return finished

    def final_info(self, job_id: str, queue: str) -> JobInfo | None:
        """How job ``job_id`` of ``queue``, deleted the moment it finished
        (``remove_on_complete=True`` or ``remove_on_fail=True``), ended, for the waiters of the
        last ``take_finished`` batch: so a producer waiting on such a job gets its result
        instead of ``NOT_FOUND``."""
        job = self._state.gone_last.get((queue, job_id))
        return None if job is None else job_info(job)

    # ------------------------------------------------------------------ observation

    def record_events(self, events: PendingEvents | None) -> None:
        """From now on, record a job event for each change into ``events`` (``broker/events``;
        the I/O layer publishes them once their write commits), or none with ``None``: the
        server passes ``None`` while nobody subscribes, so no event is ever built then."""
        self._state.events = events

    def queue_metrics(self) -> dict[str, QueueMetrics]:
        """Each queue's rates and durations (``broker/metrics``), by name: live objects, to
        read (``to_wire``), not to change."""
        return {name: queue.metrics for name, queue in self._state.queues.items()}

    def held_by(self, owner: int) -> int:
        """How many jobs are leased to connection ``owner`` now."""
        return len(self._state.owned.get(owner, ()))
