"""Repeatable jobs: the core's schedulers and the tick that materialises their occurrences.

Theory of operation
-------------------
A scheduler (``broker.schedule.Scheduler``) is keyed by ``(queue, key)`` and holds its rule, its
job template, how many occurrences it made (``count``) and ``next_at``, the latest occurrence it
made. Making an occurrence means creating its job, id ``repeat:<key>:<ms>``, as an ordinary job
delayed until that time (as BullMQ's job schedulers keep the next run as a delayed job), and
recording ``next_at``: both are core changes of the same operation, so they reach the journal in
the same transaction (the committer takes every change of the core at once).

* ``upsert`` of a new key makes the first occurrence at or after ``now`` (an ``every`` scheduler
  without ``start_ms`` is anchored at ``now``: its first job is due at once). The same key with
  the same definition again changes nothing (``created`` and ``changed`` are false), so an app
  may upsert its schedulers on every start. A changed definition deletes the job of the pending
  occurrence if it is still delayed and makes the first occurrence of the new definition; the
  ``count`` (against ``limit``) and an ``every`` scheduler's anchor are kept.
* ``fire(now)`` (from ``Core.tick``) takes each scheduler whose ``next_at`` has come: its job is
  due now, so it makes the following occurrence, the first after ``now``. ``next_wake`` folds
  the earliest ``next_at`` into ``Core.next_deadline``, so the server's one timer wakes for it.
* Missed occurrences (the broker was down, or the timer ran late): the pending occurrence's job
  was journaled before, so after a restart it runs once (the one catch-up run), and the next
  occurrence is the first after the restart: every occurrence in between is skipped, not made
  in a burst.
* An occurrence whose queue is full (``QUEUE_FULL``) is skipped; it still counts.
* ``remove`` deletes the scheduler and its pending occurrence's job if still delayed;
  ``obliterate`` of a queue deletes its schedulers.

Rules: exactly one job per occurrence, restarts and ``kill -9`` included: a job is made only
together with the ``next_at`` that records it, and a replayed occurrence finds its id taken
(enqueue treats it as a duplicate). ``heap`` holds ``(next_at, queue, key)``; an entry is live
while its scheduler exists with that ``next_at`` (lazy deletion).
"""

from __future__ import annotations

import contextlib
import heapq
from collections.abc import Iterable

from broker import core_admin, core_producer
from broker.core_state import DELAYED, CoreError, CoreState
from broker.schedule import Rule, ScheduleError, Scheduler, job_id, next_run, validate
from protocol.errors import ErrorCode
from protocol.model import JobSpec
from protocol.scheduling import SchedulerInfo


class Schedules:
    """``Core.schedules``: the scheduler operations of one core (functions below)."""

    __slots__ = ("_core",)

    def __init__(self, core: CoreState) -> None:
        self._core = core

    def upsert(
        self, queue: str, key: str, template: JobSpec, rule: Rule, now: int
    ) -> tuple[SchedulerInfo, bool, bool]:
        """Create or update the scheduler ``key`` of ``queue`` (the module's theory).

        Args:
            queue: the queue its jobs go to (created on first use).
            key: its name, unique per queue.
            template: each occurrence's job (``job_id``, ``delay_ms``, ``run_at_ms`` unused).
            rule: when it runs; ``anchor_ms`` is set here.
            now: the current time.

        Returns:
            ``(the scheduler, created, changed)``.

        Raises:
            CoreError: ``BAD_ARGUMENT`` naming the field: a bad rule (``broker.schedule``) or
                a template payload above ``max_payload``; nothing is changed.
        """
        scheduler, created, changed = upsert(self._core, queue, key, template, rule, now)
        return scheduler.info(), created, changed

    def remove(self, queue: str, key: str, now: int) -> bool:
        """Delete a scheduler and the job of its pending occurrence if still delayed.

        Returns:
            Whether it existed.
        """
        return remove(self._core, queue, key, now)

    def list(
        self, queue: str | None, offset: int, limit: int
    ) -> tuple[list[SchedulerInfo], int]:
        """The schedulers (of ``queue``, or all) by ``(queue, key)``, a page of them.

        Returns:
            ``(schedulers[offset:offset + limit], how many there are)``.
        """
        found, total = page(self._core, queue, offset, limit)
        return [scheduler.info() for scheduler in found], total


def upsert(
    core: CoreState, queue: str, key: str, template: JobSpec, rule: Rule,
    now: int,
) -> tuple[Scheduler, bool, bool]:
    """``Core.schedule_upsert`` (documented there). ``rule.anchor_ms`` is ignored unless the
    scheduler is new and has no ``start_ms``.

    Returns:
        ``(the scheduler, created, changed)``.
    """
    if len(template.payload) > core.config.max_payload:
        raise CoreError(ErrorCode.BAD_ARGUMENT,
                        f"job.payload: {len(template.payload)} bytes, limit "
                        f"{core.config.max_payload}")
    ident = (queue, key)
    old = core.schedules.by_key.get(ident)
    anchor = rule.start_ms if rule.start_ms is not None else (
        now if old is None else old.rule.anchor_ms)
    rule = rule._replace(anchor_ms=anchor)
    try:
        validate(rule, now)
    except ScheduleError as exc:
        raise CoreError(ErrorCode.BAD_ARGUMENT, str(exc)) from None
    if old is not None and old.same_definition(rule, template):
        return old, False, False
    count = 0
    if old is not None:
        count = old.count - _drop_pending(core, old, now)
    scheduler = Scheduler(queue, key, rule, template, now if old is None else old.created_at,
                          count)
    core.schedules.by_key[ident] = scheduler
    _make_next(core, scheduler, now - 1, now)
    return scheduler, old is None, True


def remove(core: CoreState, queue: str, key: str, now: int) -> bool:
    """``Core.schedule_remove`` (documented there)."""
    scheduler = core.schedules.by_key.pop((queue, key), None)
    if scheduler is None:
        return False
    _drop_pending(core, scheduler, now)
    core.schedules.changed[(queue, key)] = None
    return True


def page(
    core: CoreState, queue: str | None, offset: int, limit: int
) -> tuple[list[Scheduler], int]:
    """``Core.schedule_list`` (documented there): O(s log s) in the schedulers listed."""
    found = sorted(
        (s for s in core.schedules.by_key.values() if queue is None or s.queue == queue),
        key=lambda s: (s.queue, s.key),
    )
    return found[offset:offset + limit], len(found)


def fire(core: CoreState, now: int) -> None:
    """Make the following occurrence of every scheduler whose ``next_at`` has come."""
    heap = core.schedules.heap
    while heap and heap[0][0] <= now:
        at, queue, key = heapq.heappop(heap)
        scheduler = core.schedules.by_key.get((queue, key))
        if scheduler is None or scheduler.next_at != at:
            continue
        _make_next(core, scheduler, max(at, now), now)


def next_wake(core: CoreState) -> int | None:
    """The earliest live ``next_at`` (stale heap entries at the top are dropped)."""
    heap = core.schedules.heap
    while heap:
        at, queue, key = heap[0]
        scheduler = core.schedules.by_key.get((queue, key))
        if scheduler is not None and scheduler.next_at == at:
            return at
        heapq.heappop(heap)
    return None


def drop_queue(core: CoreState, queue: str) -> None:
    """The queue was obliterated (its jobs are gone): its schedulers go too."""
    for ident in [ident for ident in core.schedules.by_key if ident[0] == queue]:
        del core.schedules.by_key[ident]
        core.schedules.changed[ident] = None


def restore(core: CoreState, schedulers: Iterable[Scheduler]) -> None:
    """Load the journal's schedulers (an empty core only). A ``next_at`` already past makes
    ``next_wake`` due at once: the first tick makes the next occurrence after now."""
    for scheduler in schedulers:
        core.schedules.by_key[(scheduler.queue, scheduler.key)] = scheduler
        if scheduler.next_at is not None:
            core.schedules.heap.append((scheduler.next_at, scheduler.queue, scheduler.key))
    heapq.heapify(core.schedules.heap)


def _make_next(
    core: CoreState, scheduler: Scheduler, after: int, now: int
) -> None:
    """Make the scheduler's first occurrence after ``after``: its job and its ``next_at``."""
    at = next_run(scheduler.rule, after, scheduler.count)
    scheduler.next_at = at
    core.schedules.changed[(scheduler.queue, scheduler.key)] = scheduler
    if at is None:
        return
    scheduler.count += 1
    spec = scheduler.template._replace(job_id=job_id(scheduler.key, at), run_at_ms=at)
    with contextlib.suppress(CoreError):  # QUEUE_FULL: this occurrence is skipped
        core_producer.enqueue(core, scheduler.queue, (spec,), now)
    heapq.heappush(core.schedules.heap, (at, scheduler.queue, scheduler.key))


def _drop_pending(core: CoreState, scheduler: Scheduler, now: int) -> int:
    """Delete the job of the scheduler's pending occurrence if it has not come yet; 1 if it
    was deleted (the occurrence no longer counts), else 0."""
    if scheduler.next_at is None:
        return 0
    job = core.find(scheduler.queue, job_id(scheduler.key, scheduler.next_at))
    if job is None or job.state is not DELAYED:
        return 0
    core_admin.cancel(core, job.id, scheduler.queue, now)
    return 1
