"""The core's administrative operations: cancel, get, queue control, stats, clean, the failed
set, and rebuilding from a snapshot.

These are not on the hot path. ``list_failed``, ``retry_failed`` and ``clean`` scan the one
queue and state they name (completed and failed lists are bounded by retention); ``clean`` of
delayed jobs scans the one global delayed heap, filtering by queue. ``_load`` (used by
``Core.restore``) is the only operation that visits every job. Everything else stays O(log n)
per job.
"""

from __future__ import annotations

import heapq
from collections import deque
from collections.abc import Iterator, Sequence
from operator import attrgetter
from typing import Any

from broker.core_state import (
    ACTIVE,
    COMPLETED,
    DELAYED,
    FAILED,
    RESTARTED,
    WAITING,
    CoreError,
    CoreState,
    QueueState,
    Snapshot,
)
from broker.jobs import Job
from protocol.errors import ErrorCode
from protocol.messages import JobInfo, JobState, QueueStats

_EMPTY_STATS = QueueStats(0, 0, 0, 0, 0, False, None, 0, 0)


class CoreAdmin(CoreState):
    """Administrative operations over the core's state."""

    # ------------------------------------------------------------------ one job

    def cancel(self, job_id: str, now: int) -> JobState:
        """Delete a job in any state. An active job's lease is revoked: the worker's later
        ack/fail/extend gets ``NOT_FOUND``.

        Args:
            job_id: the job.
            now: the current time.

        Returns:
            The state the job was in.

        Raises:
            CoreError: ``NOT_FOUND``.
        """
        job = self._jobs.get(job_id)
        if job is None:
            raise CoreError(ErrorCode.NOT_FOUND, f"no job {job_id!r}")
        queue = self._queues[job.queue]
        state = job.state
        if state is ACTIVE:
            self._end_lease(job, queue, entry_popped=False)
        self._delete(job)
        self._forget(job, queue)
        if state is WAITING:
            queue.ready.maybe_compact(queue.waiting, self._is_waiting)
        elif state is DELAYED:
            self._delayed.maybe_compact(self._delayed_entry_live)
        elif state is COMPLETED or state is FAILED:
            self._reschedule(queue)
        return state

    def _reschedule(self, queue: QueueState) -> None:
        """After finished jobs were taken out by hand, make sure age pruning is scheduled for the
        new oldest entries (a list whose old head was kept forever has nothing scheduled)."""
        for finished in (queue.completed, queue.failed):
            if finished.scheduled is None:
                self._schedule_prune(finished, queue)

    def _forget(self, job: Job, queue: QueueState) -> None:
        """Fix counters for a deleted job (its lease, if any, already ended)."""
        state = job.state
        if state is WAITING:
            queue.waiting -= 1
            queue.ready.stale += 1
        elif state is DELAYED:
            queue.delayed -= 1
            self._delayed.stale += 1
        elif state is COMPLETED:
            queue.completed.count -= 1
        elif state is FAILED:
            queue.failed.count -= 1
        if state is WAITING or state is DELAYED or state is ACTIVE:
            self._unfinished -= 1

    def get(self, job_id: str) -> JobInfo | None:
        """Describe a job, or ``None`` if there is no such job (never was, or removed)."""
        job = self._jobs.get(job_id)
        return None if job is None else job_info(job)

    def iter_jobs(self) -> Iterator[Job]:
        """Every live job, in no particular order (for tests and diagnostics; O(n))."""
        return iter(self._jobs.values())

    # ------------------------------------------------------------------ queues

    def pause(self, queue: str, now: int) -> None:
        """Stop handing out the queue's jobs (reserve skips it). Creates the queue if new."""
        state = self._queue(queue)
        state.meta.paused = True
        self._changed_queues[state.name] = state.meta

    def resume(self, queue: str, now: int) -> None:
        """Hand out the queue's jobs again. Creates the queue if new."""
        state = self._queue(queue)
        state.meta.paused = False
        self._changed_queues[state.name] = state.meta
        if state.waiting:
            self._ready.add(state.name)

    def stats(self, queue: str | None, now: int) -> dict[str, QueueStats]:
        """Counters of one queue (zeros if it does not exist), or of every queue if ``None``.

        ``oldest_waiting_ms`` is ``now`` minus the earliest ``run_at`` (the time it became due)
        among the queue's waiting jobs. O(priorities in use) per queue.
        """
        if queue is not None:
            state = self._queues.get(queue)
            if state is None:
                return {queue: _EMPTY_STATS}
            return {queue: self._stats(state, now)}
        return {name: self._stats(state, now) for name, state in self._queues.items()}

    def _stats(self, queue: QueueState, now: int) -> QueueStats:
        oldest: int | None = None
        if queue.waiting:
            queue.ready.drop_stale_heads(self._is_waiting)
            earliest = min(job.run_at for job in queue.ready.heads())
            oldest = max(0, now - earliest)
        meta = queue.meta
        return QueueStats(
            queue.waiting, queue.delayed, queue.active, queue.completed.count,
            queue.failed.count, meta.paused, oldest, meta.total_completed, meta.total_failed,
        )

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
        if state is ACTIVE:
            raise CoreError(ErrorCode.BAD_ARGUMENT, "state: active jobs cannot be cleaned")
        target = self._queues.get(queue)
        if target is None:
            return 0
        cutoff = now - older_than_ms
        victims: list[Job] = []
        if state is COMPLETED or state is FAILED:
            finished = target.completed if state is COMPLETED else target.failed
            for job in finished.live(self._jobs):
                if limit is not None and len(victims) >= limit:
                    break
                if job.finished_at is None or job.finished_at > cutoff:
                    break  # finish order: the rest are younger
                victims.append(job)
        else:
            if state is WAITING:
                candidates: Iterator[Job] = (j for j in target.ready if self._is_waiting(j))
            else:
                candidates = (
                    entry[2] for entry in self._delayed.entries
                    if entry[2].queue == target.name and self._delayed_entry_live(entry)
                )
            victims = sorted((j for j in candidates if j.created_at <= cutoff),
                             key=lambda j: j.seq)
            if limit is not None:
                victims = victims[:limit]
        for job in victims:
            self._delete(job)
            self._forget(job, target)
        if victims:
            if state is WAITING:
                target.ready.rebuild(self._is_waiting)
            elif state is DELAYED:
                self._delayed.maybe_compact(self._delayed_entry_live)
            else:
                (target.completed if state is COMPLETED else target.failed).rebuild(self._jobs)
                self._reschedule(target)
        return len(victims)

    # ------------------------------------------------------------------ the failed set

    def list_failed(self, queue: str, limit: int, offset: int) -> tuple[list[JobInfo], int]:
        """The queue's failed jobs, newest first.

        Returns:
            ``(jobs[offset:offset + limit], total failed in the queue)``.
        """
        target = self._queues.get(queue)
        if target is None:
            return [], 0
        newest_first = list(target.failed.live(self._jobs))[::-1]
        page = newest_first[offset:offset + limit]
        return [job_info(job) for job in page], target.failed.count

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
        self._promote_due(now)
        target = self._queues.get(queue)
        not_failed: list[str] = []
        chosen: dict[Job, None] = {}
        if job_ids is None:
            if target is not None:
                for failed_job in target.failed.live(self._jobs):
                    if limit is not None and len(chosen) >= limit:
                        break
                    chosen[failed_job] = None
        else:
            for job_id in job_ids:
                job = self._jobs.get(job_id)
                if job is None or job.queue != queue or job.state is not FAILED:
                    not_failed.append(job_id)
                else:
                    chosen[job] = None
        if target is None or not chosen:
            return 0, not_failed
        target.failed.remove(chosen.keys(), self._jobs)
        for job in chosen:
            job.attempts = 0
            job.finished_at = None
            job.result = None
            self._make_waiting(job, target, now)
            self._changed_jobs[job.id] = job
        self._unfinished += len(chosen)
        self._reschedule(target)
        return len(chosen), not_failed

    # ------------------------------------------------------------------ restore

    def _load(self, snapshot: Snapshot, now: int) -> None:
        """Rebuild every index from a snapshot (an empty core only). O(n log n).

        A job that was active counts that attempt as failed ("broker restarted during the
        attempt"); those changes are recorded for the next commit. Retention is applied.
        """
        for meta in snapshot.queues:
            known = self._queue(meta.name)
            known.meta = meta
            meta.name = known.name
        self._changed_queues.clear()
        jobs = sorted(snapshot.jobs, key=attrgetter("seq"))
        self._seq = max(snapshot.next_seq, jobs[-1].seq + 1 if jobs else 1, 1)
        waiting: list[Job] = []
        delayed: list[tuple[int, int, Job]] = []
        finished: list[Job] = []
        restarted: list[Job] = []
        index = self._jobs
        names = self._names
        queue: QueueState | None = None
        for job in jobs:
            if queue is None or job.queue != queue.name:
                queue = self._queue(job.queue)
            job.queue = queue.name
            name = names.get(job.name)
            job.name = self._intern(job.name) if name is None else name
            index[job.id] = job
            state = job.state
            if state is WAITING:
                waiting.append(job)
                queue.waiting += 1
            elif state is DELAYED:
                delayed.append((job.run_at, job.seq, job))
                queue.delayed += 1
            elif state is ACTIVE:
                restarted.append(job)
                queue.active += 1
            else:
                finished.append(job)
        self._unfinished = len(waiting) + len(delayed) + len(restarted)
        # Already in seq order: stable sorts by run_at, then priority, then queue give the order
        # (queue, priority, run_at, seq) without building a key tuple per job (memory at 1M).
        waiting.sort(key=attrgetter("run_at"))
        waiting.sort(key=attrgetter("priority"))
        waiting.sort(key=attrgetter("queue"))
        lane_key: tuple[str, int] | None = None
        lane: deque[Job] | None = None
        for job in waiting:
            if lane is None or lane_key != (job.queue, job.priority):
                lane_key = (job.queue, job.priority)
                lane = self._queues[job.queue].ready.lane(job.priority)
            lane.append(job)
        self._delayed.entries = delayed
        heapq.heapify(delayed)
        finished.sort(key=lambda job: (job.finished_at or 0, job.seq))  # retained: few
        for job in finished:
            queue = self._queues[job.queue]
            finished_list = queue.completed if job.state is COMPLETED else queue.failed
            finished_list.append(job, finished_list.limit_of(job))
        for job in restarted:
            job.lease_token = job.lease_deadline = job.owner = None
            self._fail_attempt(
                job, self._queues[job.queue], RESTARTED, True, None, now, entry_popped=True
            )
        for queue in self._queues.values():
            for kept in (queue.completed, queue.failed):
                kept.prune(now, self._jobs, self._delete)
                self._schedule_prune(kept, queue)
            if queue.waiting and not queue.meta.paused:
                self._ready.add(queue.name)


def job_info(job: Job) -> JobInfo:
    """The wire description of a job."""
    return JobInfo(
        job.id, job.queue, job.name, job.state, job.priority, job.attempts, job.max_attempts,
        job.payload, job.progress, job.result, job.error, job.created_at, job.run_at,
        job.started_at, job.finished_at, job.lease_deadline,
    )


def packed_size(value: Any) -> int:
    """The msgpack size of a progress value, in bytes."""
    import msgpack

    return len(msgpack.packb(value, use_bin_type=True))
