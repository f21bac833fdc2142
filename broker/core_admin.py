"""The core's administrative operations: cancel, get, queue control, stats, clean and the failed
set (functions of a ``CoreState``, documented on ``broker.core.Core``).

These are not on the hot path, but a client may pipeline them, and the loop serves every
connection: each costs what it returns, not what the queue holds (``docs/internals.md``, "Cost
rules"), except ``clean`` of delayed jobs, which scans the one global delayed heap, and
``retry_failed``, which rebuilds the queue's failed list (bounded by retention).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from broker import core_flow
from broker.core_state import (
    ACTIVE,
    COMPLETED,
    DELAYED,
    FAILED,
    WAITING,
    CoreError,
    CoreState,
    QueueState,
)
from broker.jobs import Job
from broker.replysize import job_info
from protocol.errors import ErrorCode
from protocol.model import JobState
from protocol.observing import EventKind
from protocol.replies import JobInfo, QueueStats

_EMPTY_STATS = QueueStats(0, 0, 0, 0, 0, False, None, 0, 0)


def cancel(core: CoreState, job_id: str, queue_name: str | None, now: int) -> JobState:
    """``Core.cancel`` (documented there)."""
    job = core.lookup(job_id, queue_name)
    if job is None:
        raise CoreError(ErrorCode.NOT_FOUND, f"no job {job_id!r}")
    queue = core.queues[job.queue]
    state = job.state
    if state is ACTIVE:
        core.end_lease(job, queue, entry_popped=False)
    core.delete(job)
    core.forget(job, queue)
    if state is WAITING:
        queue.ready.maybe_compact(queue.waiting, core.is_waiting)
    elif state is DELAYED:
        core.delayed.maybe_compact(core.delayed_entry_live)
    elif state is COMPLETED or state is FAILED:
        (queue.completed if state is COMPLETED else queue.failed).maybe_compact(core.jobs)
        core.reschedule(queue)
    if core.events is not None:
        core.events.record(EventKind.REMOVED, now, job.queue, job_id, job.name, ("cancelled",))
    return state


def get(core: CoreState, job_id: str, queue: str | None = None) -> JobInfo | None:
    """``Core.get`` (documented there)."""
    job = core.lookup(job_id, queue)
    return None if job is None else job_info(job, with_owner=True)


def iter_jobs(core: CoreState) -> Iterator[Job]:
    """``Core.iter_jobs`` (documented there)."""
    return iter(core.jobs.values())


def pause(core: CoreState, queue: str, now: int, for_ms: int | None = None) -> None:
    """``Core.pause`` (documented there)."""
    state = core.queue(queue)
    if for_ms is not None:  # "not now": as release's pause_queue (no event, a later one wins)
        core_flow.pause_for(core, state, now + for_ms)
        return
    if core.events is not None and not state.meta.paused:
        core.events.record(EventKind.PAUSED, now, state.name, None, None)
    state.meta.paused = True
    core.changed_queues[state.name] = state.meta


def resume(core: CoreState, queue: str, now: int) -> None:
    """``Core.resume`` (documented there)."""
    state = core.queue(queue)
    if core.events is not None and state.meta.paused:
        core.events.record(EventKind.RESUMED, now, state.name, None, None)
    state.meta.paused = False
    core.changed_queues[state.name] = state.meta
    core_flow.lift_pause(core, state)
    if state.waiting:
        core.ready_names.add(state.name)


def stats(core: CoreState, queue: str | None, now: int) -> dict[str, QueueStats]:
    """``Core.stats`` (documented there)."""
    if queue is not None:
        state = core.queues.get(queue)
        if state is None:
            return {queue: _EMPTY_STATS}
        return {queue: _stats(core, state, now)}
    return {name: _stats(core, state, now) for name, state in core.queues.items()}


def stats_of(core: CoreState, queues: Sequence[QueueState], now: int) -> dict[str, QueueStats]:
    """The counters of ``queues``, by name (``Core.stats_page``)."""
    return {queue.name: _stats(core, queue, now) for queue in queues}


def _stats(core: CoreState, queue: QueueState, now: int) -> QueueStats:
    oldest: int | None = None
    if queue.waiting:
        earliest = queue.ready.earliest_run_at(core.is_waiting)
        if earliest is not None:
            oldest = max(0, now - earliest)
    meta = queue.meta
    return QueueStats(
        queue.waiting, queue.delayed, queue.active, queue.completed.count,
        queue.failed.count, meta.paused, oldest, meta.total_completed, meta.total_failed,
    )


def clean(
    core: CoreState, queue: str, state: JobState, older_than_ms: int, limit: int | None, now: int
) -> int:
    """``Core.clean`` (documented there)."""
    if state is ACTIVE:
        raise CoreError(ErrorCode.BAD_ARGUMENT, "state: active jobs cannot be cleaned")
    target = core.queues.get(queue)
    if target is None:
        return 0
    cutoff = now - older_than_ms
    if state is WAITING:
        return _clean_waiting(core, target, cutoff, limit, now)
    victims: list[Job] = []
    if state is COMPLETED or state is FAILED:
        finished = target.completed if state is COMPLETED else target.failed
        for job in finished.live(core.jobs):
            if limit is not None and len(victims) >= limit:
                break
            if job.finished_at is None or job.finished_at > cutoff:
                break  # finish order: the rest are younger
            victims.append(job)
    else:
        candidates = (
            entry[2] for entry in core.delayed.entries
            if entry[2].queue == target.name and core.delayed_entry_live(entry)
        )
        victims = sorted((j for j in candidates if j.created_at <= cutoff), key=lambda j: j.seq)
        if limit is not None:
            victims = victims[:limit]
    events = core.events
    for job in victims:
        core.delete(job)
        core.forget(job, target)
        if events is not None:
            events.record(EventKind.REMOVED, now, job.queue, job.id, job.name, ("cleaned",))
    if victims:
        if state is DELAYED:
            core.delayed.maybe_compact(core.delayed_entry_live)
        else:
            # The victims were the oldest live entries: now stale, at the front.
            (target.completed if state is COMPLETED else target.failed).trim(core.jobs)
            core.reschedule(target)
    return len(victims)


def _clean_waiting(
    core: CoreState, queue: QueueState, cutoff: int, limit: int | None, now: int
) -> int:
    """Delete the queue's oldest waiting jobs created at or before ``cutoff``: O(k + limit·log k)
    for k priorities in use, never a scan of the queue.

    Jobs are taken in ``seq`` order, which is creation order, and the first one created after
    ``cutoff`` ends the walk: ``created_at`` grows with ``seq`` since the clock never goes back.
    """
    removed = 0
    if limit == 0:
        return removed
    for job in queue.ready.oldest(core.is_waiting):
        if job.created_at > cutoff:
            break
        core.delete(job)
        core.forget(job, queue)
        if core.events is not None:
            core.events.record(EventKind.REMOVED, now, job.queue, job.id, job.name, ("cleaned",))
        removed += 1
        if removed == limit:
            break
    queue.ready.maybe_compact(queue.waiting, core.is_waiting)
    return removed


def list_failed(
    core: CoreState, queue: str, limit: int, offset: int
) -> tuple[list[JobInfo], int]:
    """``Core.list_failed`` (documented there)."""
    target = core.queues.get(queue)
    if target is None:
        return [], 0
    page = target.failed.newest(core.jobs, offset, limit)
    return [job_info(job) for job in page], target.failed.count


def retry_failed(
    core: CoreState, queue: str, job_ids: Sequence[str] | None, limit: int | None, now: int
) -> tuple[int, list[str]]:
    """``Core.retry_failed`` (documented there)."""
    core.promote_due(now)
    target = core.queues.get(queue)
    not_failed: list[str] = []
    chosen: dict[Job, None] = {}
    if job_ids is None:
        if target is not None:
            for failed_job in target.failed.live(core.jobs):
                if limit is not None and len(chosen) >= limit:
                    break
                chosen[failed_job] = None
    else:
        for job_id in job_ids:
            job = core.find(queue, job_id)
            if job is None or job.state is not FAILED:
                not_failed.append(job_id)
            else:
                chosen[job] = None
    if target is None or not chosen:
        return 0, not_failed
    target.failed.remove(chosen.keys(), core.jobs)
    for job in chosen:
        job.attempts = 0
        job.finished_at = None
        job.result = None
        core.make_waiting(job, target, now)
        core.changed_jobs[job.seq] = job
        if core.events is not None:
            core.events.record(EventKind.WAITING, now, job.queue, job.id, job.name)
    core.unfinished += len(chosen)
    core.reschedule(target)
    return len(chosen), not_failed
