"""Job lists and stats pages: ``list_jobs`` and the paged ``stats`` (functions of a ``CoreState``,
documented on ``broker.core.Core``).

Theory of operation
-------------------
``list_jobs`` returns a page of one queue's jobs in one or more states; the states' jobs are
concatenated in the order the request names the states, each state in its own order:

* waiting: run order, the order ``reserve`` hands them out (priority, then the order they
  became waiting);
* delayed: ``(run_at, seq)``; active: ``(lease_deadline, lease_token)``;
* completed, failed: newest first (finish order, reversed).

Each state's count is the queue's counter, so the states before the page's first job are
skipped in O(1) each and ``total`` costs nothing.

Waiting jobs are the one list that can hold millions and is paged deep, so it has an
order-statistic index: ``WaitingIndex``, a ``sortedcontainers.SortedList`` of
``(priority, ordinal, job)`` (a B+-tree-like list of sorted sublists with a positional index:
``islice(offset, offset + limit)`` costs O(log n + limit)). The index is lazy: it does not exist
until the first ``list_jobs`` for the queue's waiting jobs, which builds it from the ready queue
in run order (O(n), once); from then on the core keeps it up to date (O(log n) per job becoming
waiting or leaving waiting), and queues never listed pay one ``is None`` test per job. The
ordinal is a per-index counter given as a job joins, so within a priority the index order is the
ready queue's FIFO order exactly; ``_ordinal`` maps each indexed job to it for removal.
``reserve`` takes jobs in run order, so it removes the index's first entry (no search).

The upkeep is not free (a few microseconds per job in and out of waiting: ``bench/bench_lists``
measures it), so an index lives only while it is used: ``enqueue`` and ``reserve`` drop it
(``kept``) once no list read it for ``INDEX_IDLE_MS`` or the queue has no waiting job left.

The other states are bounded or cheap to walk: finished lists are bounded by retention and
walked from the newest end (O(offset + limit)); delayed and active jobs are selected from the
broker-wide delayed heap and the connections' leases (O(d log(offset + limit)) and O(a) for d
delayed and a active jobs broker-wide: a scan, documented in protocol/SPEC.md).

``stats_page`` pages the queues in creation order (the queue index's insertion order).
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Sequence
from itertools import count, islice
from operator import attrgetter
from typing import Final

from sortedcontainers import SortedList

from broker.core_state import (
    ACTIVE,
    COMPLETED,
    DELAYED,
    FAILED,
    WAITING,
    CoreState,
    QueueState,
)
from broker.jobs import Job
from protocol.model import JobState

_PRIORITY: Final = attrgetter("priority")
INDEX_IDLE_MS: Final = 60_000
"""A waiting index no ``list_jobs`` read for this long is dropped at the next enqueue or
reserve of its queue (and rebuilt by the next list)."""


class WaitingIndex:
    """One queue's waiting jobs in run order, with O(log n) positional access."""

    __slots__ = ("_next", "_order", "_ordinal", "used_at")

    def __init__(self, jobs_in_run_order: Iterable[Job], now: int) -> None:
        self.used_at = now
        """When a ``list_jobs`` last read it (``kept`` drops it once idle)."""
        # Built at C speed (zip, map, count): at a million jobs this is the first list's cost.
        jobs = list(jobs_in_run_order)
        self._ordinal: dict[Job, int] = dict(zip(jobs, count(), strict=False))
        self._next = len(jobs)
        # Already sorted: SortedList's constructor sorts (timsort: O(n) on sorted input).
        self._order: SortedList = SortedList(
            zip(map(_PRIORITY, jobs), count(), jobs, strict=False)
        )

    def add(self, job: Job) -> None:
        """``job`` became waiting: it goes behind every job of its priority."""
        ordinal = self._next
        self._next = ordinal + 1
        self._ordinal[job] = ordinal
        self._order.add((job.priority, ordinal, job))

    def add_all(self, jobs: Iterable[Job]) -> None:
        """``jobs`` became waiting, in this order."""
        for job in jobs:
            self.add(job)

    def remove(self, job: Job) -> None:
        """``job`` left waiting (cancelled, cleaned)."""
        ordinal = self._ordinal.pop(job, None)
        if ordinal is not None:
            self._order.remove((job.priority, ordinal, job))

    def take_first(self, job: Job) -> None:
        """``reserve`` took ``job``: the first in run order, so no search (else ``remove``)."""
        order = self._order
        if order[0][2] is job:
            order.pop(0)
            del self._ordinal[job]
        else:  # pragma: no cover - the index mirrors the ready queue; kept for safety
            self.remove(job)

    def page(self, offset: int, limit: int) -> list[Job]:
        """The jobs at positions ``offset`` to ``offset + limit - 1`` in run order."""
        return [entry[2] for entry in self._order.islice(offset, offset + limit)]

    def __len__(self) -> int:
        return len(self._order)


def waiting_index(core: CoreState, queue: QueueState, now: int) -> WaitingIndex:
    """The queue's waiting index, built from its ready queue on first use."""
    index = queue.listing
    if index is None:
        ready = queue.ready
        # ``stale`` counts exactly the entries whose job left waiting in place (cancel, clean)
        jobs = iter(ready) if ready.stale == 0 else filter(core.is_waiting, ready)
        index = queue.listing = WaitingIndex(jobs, now)
    index.used_at = now
    return index


def kept(queue: QueueState, now: int) -> WaitingIndex | None:
    """The queue's waiting index if it is still kept, else ``None`` (dropped now).

    Called by ``enqueue`` and ``reserve`` once per queue and call, when the queue has an index:
    an index nobody read for ``INDEX_IDLE_MS``, or with no job left (rebuilt for free when
    needed again), is dropped, so a queue listed once does not pay its upkeep for ever.
    """
    index = queue.listing
    if index is not None and (now - index.used_at > INDEX_IDLE_MS or not index):
        queue.listing = index = None
    return index


def state_count(queue: QueueState, state: JobState) -> int:
    """How many of the queue's jobs are in ``state`` (its counter: O(1))."""
    if state is WAITING:
        return queue.waiting
    if state is DELAYED:
        return queue.delayed
    if state is ACTIVE:
        return queue.active
    if state is COMPLETED:
        return queue.completed.count
    return queue.failed.count


def list_jobs(
    core: CoreState, queue: str, states: Sequence[JobState], offset: int, limit: int, now: int
) -> tuple[list[Job], int]:
    """``Core.list_jobs`` (documented there)."""
    target = core.queues.get(queue)
    if target is None:
        return [], 0
    counts = [state_count(target, state) for state in states]
    page: list[Job] = []
    skip = offset
    for state, size in zip(states, counts, strict=True):
        if len(page) >= limit:
            break
        if skip >= size:
            skip -= size
            continue
        page += _state_page(core, target, state, skip, limit - len(page), now)
        skip = 0
    return page, sum(counts)


def _state_page(
    core: CoreState, queue: QueueState, state: JobState, offset: int, limit: int, now: int
) -> list[Job]:
    if state is WAITING:
        return waiting_index(core, queue, now).page(offset, limit)
    if state is COMPLETED or state is FAILED:
        finished = queue.completed if state is COMPLETED else queue.failed
        return finished.newest(core.jobs, offset, limit)
    name = queue.name
    if state is DELAYED:
        delayed = (
            entry for entry in core.delayed.entries
            if entry[2].queue == name and core.delayed_entry_live(entry)
        )
        return [entry[2] for entry in heapq.nsmallest(offset + limit, delayed)[offset:]]
    active = sorted(
        ((job.lease_deadline or 0, job.lease_token or 0, job)
         for owned in core.owned.values() for job in owned if job.queue == name),
        key=lambda entry: entry[:2],
    )
    return [entry[2] for entry in active[offset:offset + limit]]


def stats_page(core: CoreState, offset: int, limit: int) -> tuple[list[QueueState], int]:
    """The queues from the ``offset``-th in creation order, at most ``limit``, and how many
    there are (O(offset) in C to skip, then the page)."""
    queues = core.queues
    return list(islice(queues.values(), offset, offset + limit)), len(queues)
