"""Recovery: rebuilding the core's state from the journal's snapshot at start (``Core.restore``).

The only operation that visits every job: O(n log n) in the jobs kept.
"""

from __future__ import annotations

import heapq
from collections import deque
from operator import attrgetter
from typing import Final

from broker import core_flow, core_schedules
from broker.core_state import (
    ACTIVE,
    COMPLETED,
    DELAYED,
    WAITING,
    CoreState,
    QueueState,
    Snapshot,
)
from broker.jobs import Job

RESTARTED: Final = "broker restarted during the attempt"


def load(core: CoreState, snapshot: Snapshot, now: int) -> None:
    """Rebuild every index from a snapshot (an empty core only). O(n log n).

    A job that was active counts that attempt as failed ("broker restarted during the
    attempt"); those changes are recorded for the next commit. Retention is applied.
    """
    for meta in snapshot.queues:
        known = core.queue(meta.name)
        known.meta = meta
        meta.name = known.name
    core.changed_queues.clear()
    jobs = sorted(snapshot.jobs, key=attrgetter("seq"))
    core.seq = max(snapshot.next_seq, jobs[-1].seq + 1 if jobs else 1, 1)
    core.taken_seq = core.seq  # restored jobs have their payload rows
    waiting: list[Job] = []
    delayed: list[tuple[int, int, Job]] = []
    finished: list[Job] = []
    restarted: list[Job] = []
    index = core.jobs
    names = core.names
    queue: QueueState | None = None
    for job in jobs:
        if queue is None or job.queue != queue.name:
            queue = core.queue(job.queue)
        job.queue = queue.name
        name = names.get(job.name)
        job.name = core.intern(job.name) if name is None else name
        if job.id in index:  # a user id live in several queues
            core.add(job)
        else:
            job.key = job.id  # a restored record may carry another core's (queue, id) form
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
    core.unfinished = len(waiting) + len(delayed) + len(restarted)
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
            lane = core.queues[job.queue].ready.lane(job.priority, job.run_at)
        lane.append(job)
    core.delayed.entries = delayed
    heapq.heapify(delayed)
    finished.sort(key=lambda job: (job.finished_at or 0, job.seq))  # retained: few
    for job in finished:
        queue = core.queues[job.queue]
        finished_list = queue.completed if job.state is COMPLETED else queue.failed
        finished_list.append(job, finished_list.limit_of(job))
    for job in restarted:
        job.lease_token = job.lease_deadline = job.owner = None
        core.fail_attempt(
            job, core.queues[job.queue], RESTARTED, True, None, now, entry_popped=True
        )
    for queue in core.queues.values():
        # Restored jobs were appended in ready order, not seq order: index them afresh.
        queue.ready.rebuild(core.is_waiting)
        for kept in (queue.completed, queue.failed):
            kept.prune(now, core.jobs, core.delete)
            core.schedule_prune(kept, queue)
        if queue.waiting and not queue.meta.paused:
            core.ready_names.add(queue.name)
    core_flow.restore(core, jobs, now)
    core_schedules.restore(core, snapshot.schedules)
