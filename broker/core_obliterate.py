"""The core's ``obliterate``: delete a queue and every job in it (a function of a ``CoreState``,
documented on ``broker.core.Core``).

The queue's jobs are found through its own structures, never a scan of the broker's job index:
its ready queue (waiting), its finished lists (completed, failed), and the broker-wide delayed and
lease heaps filtered by queue (their size is the broker's delayed and active jobs, not its total).
Each job is deleted as ``cancel`` deletes one (an active job's lease is revoked first, so the
worker's later ack gets ``NOT_FOUND``); then the queue itself goes: from the index of queues (so
``stats`` no longer lists it), from the ready set, and from the journal (``Changes.queues`` maps
its name to ``None``) in the same commit as its jobs, and so do its schedulers.
"""

from __future__ import annotations

from broker import core_schedules
from broker.core_state import ACTIVE, DELAYED, CoreError, CoreState
from broker.jobs import Job
from protocol.errors import ErrorCode


def obliterate(core: CoreState, name: str, force: bool, now: int) -> int:
    """``Core.obliterate`` (documented there)."""
    queue = core.queues.get(name)
    if queue is None:
        core_schedules.drop_queue(core, name)
        return 0
    if queue.active and not force:
        raise CoreError(
            ErrorCode.CONFLICT,
            f"queue {name!r} has {queue.active} active jobs; pass force to revoke their leases",
        )
    core_schedules.drop_queue(core, name)  # first: no occurrence is made into the queue
    victims: dict[Job, None] = dict.fromkeys(queue.ready.oldest(core.is_waiting))
    for finished in (queue.completed, queue.failed):
        victims.update(dict.fromkeys(finished.live(core.jobs)))
    for _, _, job in core.delayed.entries:
        if job.queue == name and job.state is DELAYED and core.is_live(job):
            victims[job] = None
    for entry in core.leases.entries:
        job = entry[2]
        if job.queue == name and core.lease_entry_live(entry):
            victims[job] = None
    for job in victims:
        if job.state is ACTIVE:
            core.end_lease(job, queue, entry_popped=False)
        core.delete(job)
        core.forget(job, queue)
    core.delayed.maybe_compact(core.delayed_entry_live)
    # Its finished lists' pending prunes find ``scheduled`` changed and are skipped.
    queue.completed.scheduled = queue.failed.scheduled = None
    del core.queues[name]
    core.ready_names.discard(name)
    core.changed_queues[name] = None
    return len(victims)
