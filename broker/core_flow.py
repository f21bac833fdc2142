"""Flow control: a queue's rate limit, concurrency limit and "not now" pause, checked when
``reserve`` hands out jobs (functions of a ``CoreState``).

Theory of operation
-------------------
A queue is *limited* when its ``QueueMeta`` has a rate limit (``rate_max`` starts per
``rate_period_ms``, enforced by ``broker.ratelimit.SlidingWindow``), a concurrency limit (at most
``concurrency`` active jobs) or a ``paused_until`` time (a worker released a job with
``pause_queue``: no reservations before then). ``reserve`` asks ``room`` how many jobs a limited
queue may start now, takes at most that many, and reports them to ``started``; an unlimited queue
costs the hot path one attribute test.

Wake-ups, so that a parked reserve does not sleep past the moment a queue has room again:

* rate and pause: when a reserve leaves a limited queue with waiting jobs and no room, or a pause
  is set, the queue is *scheduled* (``schedule_wake``) at the time it unblocks; ``next_wake`` is
  folded into ``Core.next_deadline`` (the server's one timer), and ``tick`` calls ``fire``, which
  reports the queue in ``take_ready`` if it has room then (else schedules it again). One entry per
  queue is live at a time (``QueueState.wake_at``, the earliest); others are stale and skipped.
* concurrency: a lease that ends in a queue with a concurrency limit and waiting jobs reports the
  queue in ``take_ready`` (``CoreState.end_lease`` and the ack path).

A queue in ``take_ready`` may still have nothing to hand out (a waiter then stays parked); a
queue with room and waiting jobs is never left out of it for longer than the timer's delay.

After a restart the rate windows are rebuilt from the jobs' ``started_at`` (``restore_windows``):
starts of jobs the journal no longer holds (removed by retention) are not counted.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable
from typing import NamedTuple

from broker.core_state import CoreState, QueueState
from broker.jobs import Job
from broker.ratelimit import SlidingWindow


class QueueLimits(NamedTuple):
    """A queue's flow control as the ``limit`` operation reports it (``None``: not set)."""

    rate_max: int | None
    rate_period_ms: int | None
    concurrency: int | None
    paused_until: int | None
    rate_free_at: int | None = None
    """When the rate limit's window next lets a job start, if not now (``None``: it does now,
    or there is no rate limit)."""

    def to_wire(self) -> dict[str, int | None]:
        return {"rate_max": self.rate_max, "rate_period_ms": self.rate_period_ms,
                "concurrency": self.concurrency, "paused_until": self.paused_until,
                "rate_free_at": self.rate_free_at}


def room(queue: QueueState, now: int) -> int:
    """How many of a limited queue's jobs may start at ``now``."""
    meta = queue.meta
    if meta.paused_until is not None and meta.paused_until > now:
        return 0
    allowed = 1 << 62
    if meta.concurrency is not None:
        allowed = meta.concurrency - queue.active
    window = queue.window
    if window is not None:
        allowed = min(allowed, window.room(now))
    return max(0, allowed)


def blocked_until(queue: QueueState, now: int) -> int:
    """When the rate limit and the pause let the queue start a job again (``now`` if they do
    now; a full concurrency limit is not counted: a lease's end wakes the queue)."""
    meta = queue.meta
    at = now
    if meta.paused_until is not None and meta.paused_until > at:
        at = meta.paused_until
    if queue.window is not None:
        at = max(at, queue.window.next_room(at))
    return at


def started(core: CoreState, queue: QueueState, now: int, count: int) -> None:
    """``reserve`` started ``count`` jobs of the limited ``queue`` (possibly 0, if it had no
    room): log them and, if the queue is left with waiting jobs and no room, schedule a wake."""
    if count and queue.window is not None:
        queue.window.record(now, count)
    if queue.waiting and room(queue, now) == 0:
        at = blocked_until(queue, now)
        if at > now:
            schedule_wake(core, queue, at)


def schedule_wake(core: CoreState, queue: QueueState, at: int) -> None:
    """Make sure the timer looks at ``queue`` at ``at`` or earlier."""
    if queue.wake_at is None or at < queue.wake_at:
        queue.wake_at = at
        heapq.heappush(core.flow_wakes, (at, queue.name))


def next_wake(core: CoreState) -> int | None:
    """The earliest live scheduled wake (stale entries at the top are dropped)."""
    wakes = core.flow_wakes
    while wakes:
        at, name = wakes[0]
        queue = core.queues.get(name)
        if queue is not None and queue.wake_at == at:
            return at
        heapq.heappop(wakes)
    return None


def fire(core: CoreState, now: int) -> None:
    """Look at every queue whose wake is due: an expired pause is cleared; a queue with room
    and waiting jobs is reported ready; one still blocked is scheduled again."""
    wakes = core.flow_wakes
    while wakes and wakes[0][0] <= now:
        at, name = heapq.heappop(wakes)
        queue = core.queues.get(name)
        if queue is None or queue.wake_at != at:
            continue
        queue.wake_at = None
        meta = queue.meta
        if meta.paused_until is not None and meta.paused_until <= now:
            meta.paused_until = None
            queue.limited = meta.limited
            core.changed_queues[queue.name] = meta
        if not queue.waiting or meta.paused:
            continue
        until = blocked_until(queue, now)
        if until > now:
            schedule_wake(core, queue, until)
        elif not queue.limited or room(queue, now) > 0:
            core.ready_names.add(queue.name)


def set_limits(
    core: CoreState, name: str, rate: tuple[int, int] | bool | None,
    concurrency: int | bool | None, now: int,
) -> QueueLimits:
    """Set, change or clear a queue's limits (creating the queue), and report them.

    Args:
        core: the state.
        name: the queue.
        rate: ``(max, period_ms)`` to set, ``False`` to clear, ``None`` to leave as it is.
        concurrency: a limit to set, ``False`` to clear, ``None`` to leave as it is.
        now: the current time.

    Returns:
        The queue's limits after the change.
    """
    if rate is None and concurrency is None:  # a read: an unknown queue is not created
        known = core.queues.get(name)
        return QueueLimits(None, None, None, None) if known is None else limits(known, now)
    queue = core.queue(name)
    meta = queue.meta
    changed = False
    if rate is False:
        changed = meta.rate_max is not None
        meta.rate_max = meta.rate_period_ms = None
        queue.window = None
    elif isinstance(rate, tuple):
        rate_max, period_ms = rate
        changed = True
        meta.rate_max, meta.rate_period_ms = rate_max, period_ms
        window = queue.window
        queue.window = (SlidingWindow(rate_max, period_ms) if window is None
                        else window.resized(rate_max, period_ms))
    if concurrency is False:
        changed = changed or meta.concurrency is not None
        meta.concurrency = None
    elif concurrency is not None and concurrency is not True:
        changed = True
        meta.concurrency = concurrency
    queue.limited = meta.limited
    if changed:
        core.changed_queues[queue.name] = meta
        if queue.waiting and not meta.paused:
            # A raised or cleared limit may let jobs start now; a lowered one schedules its wake.
            if not queue.limited or room(queue, now) > 0:
                core.ready_names.add(queue.name)
            else:
                started(core, queue, now, 0)
    return limits(queue, now)


def limits(queue: QueueState, now: int) -> QueueLimits:
    """A queue's limits, its "not now" pause and when its rate window next has room."""
    meta = queue.meta
    free_at = None if queue.window is None else queue.window.next_room(now)
    return QueueLimits(meta.rate_max, meta.rate_period_ms, meta.concurrency, meta.paused_until,
                       None if free_at is None or free_at <= now else free_at)


def pause_for(core: CoreState, queue: QueueState, until: int) -> None:
    """Hand out none of the queue's jobs before ``until`` (a later pause wins)."""
    meta = queue.meta
    if meta.paused_until is not None and meta.paused_until >= until:
        return
    meta.paused_until = until
    queue.limited = True
    core.changed_queues[queue.name] = meta
    schedule_wake(core, queue, until)


def lift_pause(core: CoreState, queue: QueueState) -> None:
    """``resume`` lifts a "not now" pause too."""
    meta = queue.meta
    if meta.paused_until is not None:
        meta.paused_until = None
        queue.limited = meta.limited
        core.changed_queues[queue.name] = meta


def restore(core: CoreState, jobs: Iterable[Job], now: int) -> None:
    """After ``restore`` loaded the queues: rate windows rebuilt from the start times of the
    jobs kept, and the wakes of pauses and full windows scheduled."""
    limited = [queue for queue in core.queues.values() if queue.meta.limited]
    if not limited:
        return
    starts: dict[str, list[int]] = {}
    for queue in limited:
        meta = queue.meta
        queue.limited = True
        if meta.rate_max is not None and meta.rate_period_ms is not None:
            queue.window = SlidingWindow(meta.rate_max, meta.rate_period_ms)
            starts[queue.name] = []
    if starts:
        oldest = now - max(core.queues[name].meta.rate_period_ms or 0 for name in starts)
        for job in jobs:
            if job.started_at is not None and job.started_at > oldest:
                times = starts.get(job.queue)
                if times is not None:
                    times.append(job.started_at)
    for queue in limited:
        if queue.window is not None:
            for at in sorted(starts[queue.name]):
                if at > now - queue.window.period_ms:
                    queue.window.record(at, 1)
        if queue.meta.paused_until is not None:
            schedule_wake(core, queue, queue.meta.paused_until)
        started(core, queue, now, 0)
