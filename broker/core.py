"""The broker's core: a pure, deterministic, synchronous job state machine (``Core``).

No I/O, no clock reads, no asyncio: every operation takes ``now`` (integer ms since the epoch) and
randomness (backoff jitter) comes from an injected ``random.Random``, so the same calls give the
same results. The I/O layer calls the operations, persists ``take_changes()`` through the
journal, wakes reservers for ``take_ready()`` and ``wait``-ers for ``take_finished()``, and keeps
one timer armed for ``next_deadline()``, which fires ``tick(now)``. ``docs/internals.md`` is the
contract; the indexes, rules and invariants are described in ``broker/core_state``.

This file holds the worker operations (reserve, ack, fail, extend, release, progress), the clock
(``tick``) and the hand-offs to the I/O layer; ``broker/core_enqueue`` holds ``enqueue`` and
``broker/core_admin`` the administrative operations.
"""

from __future__ import annotations

import heapq
import random
from collections.abc import Sequence
from typing import Any

from broker.core_admin import job_info, packed_size
from broker.core_enqueue import CoreProducer
from broker.core_state import (
    _OK_COMPLETED,
    _OUTCOME_OF_STATE,
    ACTIVE,
    COMPLETED,
    CONNECTION_LOST,
    DELAYED,
    LEASE_EXPIRED,
    WAITING,
    Changes,
    CoreConfig,
    CoreError,
    QueueMeta,
    QueueState,
    Snapshot,
    _new_tuple,
)
from broker.jobs import Job
from broker.replysize import RESERVED_JOB_OVERHEAD, UTF8_MAX
from protocol.errors import ErrorCode
from protocol.messages import (
    OK,
    AckItem,
    ExtendItem,
    FailItem,
    Outcome,
    ReleaseItem,
    ReservedJob,
)

__all__ = ["Changes", "Core", "CoreConfig", "CoreError", "QueueMeta", "Snapshot", "job_info"]


class Core(CoreProducer):
    """The job state machine (see ``docs/internals.md`` for the contract)."""

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
        core._load(snapshot, now)
        return core

    # ------------------------------------------------------------------ worker operations

    def reserve(
        self, queues: Sequence[str], max_jobs: int, lease_ms: int | None, owner: int, now: int,
        max_bytes: int | None = None,
    ) -> list[ReservedJob]:
        """Lease up to ``max_jobs`` waiting jobs to a worker.

        Queues are tried in the given order; within a queue the lowest priority comes first,
        then the job that became waiting first. Paused and unknown queues give nothing. The lease
        lasts the job's own ``lease_ms`` if it has one, else ``lease_ms``, else the default.

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
        self._promote_due(now)
        out: list[ReservedJob] = []
        jobs = self._jobs
        changed = self._changed_jobs
        lease_entries = self._leases.entries
        heappush = heapq.heappush
        default_lease = lease_ms or self._config.default_lease_ms
        owned: dict[Job, None] | None = None
        token = self._token
        room = max_bytes
        for name in queues:
            q = self._queues.get(name)
            if q is None or not q.waiting or q.meta.paused:
                continue
            ready = q.ready
            qname = q.name
            fixed = RESERVED_JOB_OVERHEAD + UTF8_MAX * len(qname)
            taken = 0
            while len(out) < max_jobs:
                lane = ready.front()
                if lane is None:
                    break
                while lane and len(out) < max_jobs:
                    job = lane.popleft()
                    job_id = job.id
                    if job.state is not WAITING or jobs.get(job_id) is not job:
                        ready.stale -= 1
                        continue
                    if room is not None:
                        size = fixed + len(job.payload) + UTF8_MAX * (len(job_id) + len(job.name))
                        if job.progress is not None:
                            size += packed_size(job.progress)
                        if size > room and out:
                            lane.appendleft(job)  # stays first in line
                            max_jobs = len(out)
                            break
                        room -= size
                    lease = job.options.lease_ms or default_lease
                    deadline = now + lease
                    # WAITING -> ACTIVE is legal (TRANSITIONS); assigned directly on the hot path.
                    job.state = ACTIVE
                    attempts = job.attempts = job.attempts + 1
                    job.started_at = now
                    job.lease_token = token
                    job.lease_deadline = deadline
                    job.owner = owner
                    heappush(lease_entries, (deadline, token, job))
                    if owned is None:
                        owned = self._owned.get(owner)
                        if owned is None:
                            owned = self._owned[owner] = {}
                    owned[job] = None
                    changed[job_id] = job
                    out.append(_new_tuple(ReservedJob, (
                        job_id, qname, job.name, job.payload, attempts, job.max_attempts, token,
                        lease, deadline, job.created_at, job.progress,
                    )))
                    token += 1
                    taken += 1
            q.waiting -= taken
            q.active += taken
            if len(out) >= max_jobs:
                break
        self._token = token
        return out

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
        out: list[Outcome] = []
        jobs = self._jobs
        queues = self._queues
        owned_by = self._owned
        changed = self._changed_jobs
        finished_ids = self._finished
        max_payload = self._config.max_payload
        leases = self._leases
        delete = self._delete
        done = 0
        q: QueueState | None = None
        for job_id, token, result in items:
            job = jobs.get(job_id)
            if job is None or job.lease_token != token or job.state is not ACTIVE:
                out.append(self._lease_problem(job, job_id))
                continue
            if result is not None and len(result) > max_payload:
                out.append(Outcome(
                    ErrorCode.PAYLOAD_TOO_LARGE.value,
                    f"result of {len(result)} bytes, limit {max_payload}",
                ))
                continue
            if q is None or q.name is not job.queue:
                if q is not None:
                    self._after_completions(q, done)
                    done = 0
                q = queues[job.queue]
            # The lease ends (as in _end_lease, inlined: this is the hot path).
            owned = owned_by.get(job.owner)  # type: ignore[arg-type]
            if owned is not None:
                owned.pop(job, None)
            job.lease_token = job.lease_deadline = job.owner = None
            leases.stale += 1
            # ACTIVE -> COMPLETED is legal (TRANSITIONS); assigned directly on the hot path.
            job.state = COMPLETED
            job.result = result
            job.finished_at = now
            done += 1
            finished_ids.add(job_id)
            if q.completed.add(job, jobs, delete):
                changed[job_id] = job
            out.append(_OK_COMPLETED)
        if q is not None:
            self._after_completions(q, done)
        leases.maybe_compact(self._lease_entry_live)
        return out

    def _after_completions(self, queue: QueueState, done: int) -> None:
        """Counters and bookkeeping after ``done`` of the queue's active jobs completed."""
        queue.active -= done
        self._unfinished -= done
        meta = queue.meta
        meta.total_completed += done
        self._changed_queues[queue.name] = meta
        if queue.completed.scheduled is None:
            self._schedule_prune(queue.completed, queue)

    def fail(self, items: Sequence[FailItem], now: int) -> list[Outcome]:
        """Fail attempts of active jobs (see rule 2 in the module docstring).

        Args:
            items: ``(job_id, token, error, retry, delay_ms)`` per job; ``retry=False`` fails the
                job for good, ``delay_ms`` replaces the backoff delay.
            now: the current time.

        Returns:
            Per item ``Outcome("OK", new_state)`` with new_state ``"delayed"``, ``"waiting"``
            (a zero delay) or ``"failed"``; or ``NOT_FOUND`` / ``STALE_LEASE``, changing nothing.
        """
        self._promote_due(now)
        out: list[Outcome] = []
        for job_id, token, error, retry, delay_ms in items:
            job = self._jobs.get(job_id)
            problem = self._check_lease(job, job_id, token)
            if problem is not None:
                out.append(problem)
                continue
            assert job is not None
            state = self._fail_attempt(job, self._queues[job.queue], error, retry, delay_ms, now)
            out.append(_OUTCOME_OF_STATE[state])
        return out

    def extend(self, items: Sequence[ExtendItem], now: int) -> list[Outcome]:
        """Extend leases to ``now + lease_ms`` (the job's own lease length if ``None``).

        Returns:
            Per item ``Outcome("OK", new_deadline_ms)``, or ``NOT_FOUND`` / ``STALE_LEASE``,
            changing nothing.
        """
        out: list[Outcome] = []
        for job_id, token, lease_ms in items:
            job = self._jobs.get(job_id)
            problem = self._check_lease(job, job_id, token)
            if problem is not None:
                out.append(problem)
                continue
            assert job is not None and job.lease_deadline is not None
            length = lease_ms or job.options.lease_ms or self._config.default_lease_ms
            deadline = now + length
            if deadline < job.lease_deadline:
                # The heap entry is later than the new deadline: add an earlier one.
                self._leases.push(deadline, token, job)
                self._leases.stale += 1
            job.lease_deadline = deadline
            self._changed_jobs[job_id] = job
            out.append(Outcome(OK, deadline))
        return out

    def release(self, items: Sequence[ReleaseItem], now: int) -> list[Outcome]:
        """Hand leased jobs back without counting their attempt (a worker that stops early).

        The lease ends and ``attempts`` goes back down by one (the reservation counted it), so a
        job on its last attempt is not failed; progress, the last error and ``started_at`` stay.
        A ``delay_ms`` of 0 or ``None`` makes the job waiting at once (its queue is reported by
        ``take_ready``), else delayed until ``now + delay_ms``.

        Args:
            items: ``(job_id, token, delay_ms)`` per job.
            now: the current time.

        Returns:
            Per item ``Outcome("OK", "waiting")`` or ``Outcome("OK", "delayed")``; or
            ``NOT_FOUND`` / ``STALE_LEASE`` (as ``ack``), changing nothing.
        """
        self._promote_due(now)
        out: list[Outcome] = []
        for job_id, token, delay_ms in items:
            job = self._jobs.get(job_id)
            problem = self._check_lease(job, job_id, token)
            if problem is not None:
                out.append(problem)
                continue
            assert job is not None
            queue = self._queues[job.queue]
            self._end_lease(job, queue, entry_popped=False)
            job.attempts = max(0, job.attempts - 1)
            self._changed_jobs[job_id] = job
            if delay_ms:
                self._make_delayed(job, queue, now + delay_ms)
                out.append(_OUTCOME_OF_STATE[DELAYED])
            else:
                self._make_waiting(job, queue, now)
                out.append(_OUTCOME_OF_STATE[WAITING])
        return out

    def progress(self, job_id: str, token: int, value: Any, now: int) -> None:
        """Record an active job's progress (any small msgpack value).

        Raises:
            CoreError: ``NOT_FOUND``, ``STALE_LEASE``, or ``PAYLOAD_TOO_LARGE`` if the value
                packs to more than ``max_payload`` bytes.
        """
        job = self._jobs.get(job_id)
        problem = self._check_lease(job, job_id, token)
        if problem is not None:
            raise CoreError(ErrorCode(problem.code), problem.value)
        assert job is not None
        size = packed_size(value)
        if size > self._config.max_payload:
            raise CoreError(
                ErrorCode.PAYLOAD_TOO_LARGE,
                f"progress of {size} bytes, limit {self._config.max_payload}",
            )
        job.progress = value
        self._changed_jobs[job_id] = job

    @staticmethod
    def _check_lease(job: Job | None, job_id: str, token: int) -> Outcome | None:
        """``None`` if ``job`` is active under ``token``, else the per-item error."""
        if job is None or job.state is not ACTIVE or job.lease_token != token:
            return Core._lease_problem(job, job_id)
        return None

    @staticmethod
    def _lease_problem(job: Job | None, job_id: str) -> Outcome:
        if job is None:
            return Outcome(ErrorCode.NOT_FOUND.value, f"no job {job_id!r}")
        return Outcome(
            ErrorCode.STALE_LEASE.value,
            f"job {job_id!r} is {job.state.value}; the lease token is not its current one",
        )

    def release_owner(self, owner: int, now: int) -> int:
        """A connection closed: fail one attempt of each job it held ("worker connection lost").

        Returns:
            How many jobs it held.
        """
        held = self._owned.pop(owner, None)
        if not held:
            return 0
        self._promote_due(now)
        for job in list(held):
            self._fail_attempt(job, self._queues[job.queue], CONNECTION_LOST, True, None, now)
        return len(held)

    # ------------------------------------------------------------------ time

    def tick(self, now: int) -> None:
        """Promote due delayed jobs, expire leases (one failed attempt, "lease expired") and
        prune finished jobs by age.

        Leases expire in ``(deadline, token)`` order.
        """
        self._promote_due(now)
        leases = self._leases
        while (entry := leases.pop_due(now)) is not None:
            deadline, token, job = entry
            if not self._lease_entry_live(entry):
                leases.stale -= 1
                continue
            assert job.lease_deadline is not None
            if job.lease_deadline > deadline:
                leases.push(job.lease_deadline, token, job)  # extended: expire in its turn
                continue
            self._fail_attempt(
                job, self._queues[job.queue], LEASE_EXPIRED, True, None, now, entry_popped=True
            )
        prunes = self._prunes
        while prunes and prunes[0][0] <= now:
            expiry, _, finished, queue = heapq.heappop(prunes)
            if finished.scheduled != expiry:
                continue
            finished.prune(now, self._jobs, self._delete)
            self._schedule_prune(finished, queue)

    def next_deadline(self) -> int | None:
        """The earliest time at which ``tick`` has work, or ``None``.

        Stale entries at the top of the heaps are dropped first, so an idle core (say, after
        acks) arms no timer; the answer may still be early (an extended lease), never late.
        """
        leases = self._leases
        entries = leases.entries
        while entries and entries[0][2].lease_token != entries[0][1]:
            heapq.heappop(entries)
            leases.stale -= 1
        delayed = self._delayed
        entries = delayed.entries
        while entries and not self._delayed_entry_live(entries[0]):
            heapq.heappop(entries)
            delayed.stale -= 1
        times = [
            time for time in (
                delayed.peek_time(),
                leases.peek_time(),
                self._prunes[0][0] if self._prunes else None,
            )
            if time is not None
        ]
        return min(times) if times else None

    # ------------------------------------------------------------------ hand-offs to the I/O layer

    def take_changes(self) -> Changes:
        """Everything changed since the last call (the journal writes it as one transaction).

        ``Changes.jobs`` maps each changed job id to the live ``Job`` (or ``None``: deleted);
        the journal must read the job's fields when it builds the transaction.
        """
        changes = Changes(self._changed_jobs, self._changed_queues, self._seq)
        self._changed_jobs = {}
        self._changed_queues = {}
        return changes

    def take_ready(self) -> set[str]:
        """Names of queues that gained reservable jobs since the last call."""
        ready, self._ready = self._ready, set()
        return ready

    def take_finished(self) -> set[str]:
        """Ids of jobs that completed, failed or were deleted since the last call."""
        finished, self._finished = self._finished, set()
        return finished
