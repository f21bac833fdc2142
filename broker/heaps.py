"""The core's ordered structures: the per-queue ready structure and the deadline heaps.

Theory of operation
-------------------
``ReadyQueue`` holds one queue's waiting jobs: one deque per distinct priority, and a heap of
those priorities, so the next job is ``deques[min priority].popleft()``. With one priority in use
(the common case) that is a deque pop; with k priorities in use it is O(log k). Jobs are appended
in the order they become waiting, which gives FIFO within a priority.

``clean`` wants the waiting jobs in another order, ``seq`` (creation order), without a scan and
without a cost per job on the hot paths. A job just created is appended (``lane``) with a seq
larger than every other, so a lane's entries that sit behind no larger seq are in seq order
already; the others became waiting again or late (``push``: a retry, a release, a promotion),
and ``push`` also files them in a heap by seq (``_reentered``). ``oldest`` merges the lanes'
in-order entries with that heap: O(k) to start for k priorities in use, then O(log k) a job.

``stats`` wants the earliest ``run_at`` among the waiting jobs. Jobs become waiting in time
order, so each lane's front has its lane's earliest, and ``_heads`` is a heap of one lower
bound per lane of that front's ``run_at``. A bound is set when a lane gains its first job and
is raised to the lane's real front only when it reaches the top (``earliest_run_at``): reserve,
which pops fronts and so only ever makes them later, never touches it.

``DeadlineHeap`` is a heap of ``(time, tiebreak, job)`` entries (``tiebreak`` is unique, so jobs
are never compared): the global delayed heap ``(run_at, seq, job)`` and the lease heap
``(deadline, token, job)``.

Both use lazy deletion: removing a job from the middle (cancel, clean, ack of an active job)
leaves its entry in place, and the owner (``broker/core``) checks each popped entry against the
job itself (still in the job index, still in the state and time the entry was made for) and drops
it if stale. To keep stale entries from piling up (they also keep dead ``Job`` objects alive),
each structure counts them and ``maybe_compact`` rebuilds it from the live entries once stale
ones outnumber live ones by a margin; the rebuild is O(size) and happens at most once per that
many removals, so it costs O(1) amortized per removal.

Invariants:
- ``ReadyQueue``: every priority in ``_priorities`` has a deque in ``_deques`` and vice versa (an
  empty deque is dropped when met at the top).
- ``ReadyQueue``: an entry behind a larger seq in its lane is in ``_reentered`` (which may also
  hold entries that are in order, or stale: ``oldest`` skips what is no longer waiting, and
  ``rebuild`` recomputes it exactly).
- ``ReadyQueue``: every non-empty lane's priority is in ``_headed``, and ``_heads`` holds one
  entry per priority in ``_headed`` whose time is at most that lane's front's ``run_at``.
- ``len(entries) - stale`` is the number of live entries the owner believes are there.
"""

from __future__ import annotations

import heapq
from collections import deque
from collections.abc import Callable, Iterator
from typing import Final

from broker.jobs import Job

COMPACT_MARGIN: Final = 1024
"""Stale entries tolerated on top of the live ones before a rebuild."""


class ReadyQueue:
    """The waiting jobs of one queue: lowest priority first, FIFO within a priority."""

    __slots__ = ("_deques", "_headed", "_heads", "_priorities", "_reentered", "stale")

    def __init__(self) -> None:
        self._deques: dict[int, deque[Job]] = {}
        self._priorities: list[int] = []
        self._reentered: list[tuple[int, Job]] = []
        """Heap of ``(seq, job)``: every entry that may sit behind a larger seq in its lane."""
        self._heads: list[tuple[int, int]] = []
        """Heap of ``(time, priority)``: per lane, a lower bound of its front's ``run_at``."""
        self._headed: set[int] = set()
        """The priorities with an entry in ``_heads``."""
        self.stale = 0
        """Entries whose job left waiting without being popped (cancelled, cleaned)."""

    def push(self, job: Job) -> None:
        """Append ``job`` at the back of its priority (a job that is waiting again, or late)."""
        priority = job.priority
        entries = self._deques.get(priority)
        if entries is None:
            entries = self._deques[priority] = deque()
            heapq.heappush(self._priorities, priority)
        if priority not in self._headed:
            self._add_head(job.run_at, priority)
        entries.append(job)
        heapq.heappush(self._reentered, (job.seq, job))

    def lane(self, priority: int, run_at: int) -> deque[Job]:
        """The deque of ``priority`` (created if new), for appending jobs just created, whose
        ``seq`` is larger than any in the queue (``push`` is for the others).

        Args:
            priority: the jobs' priority.
            run_at: the ``run_at`` of the first job to be appended (the latest so far).

        Valid until the next ``front``/``rebuild`` (an empty lane is dropped then).
        """
        entries = self._deques.get(priority)
        if entries is None:
            entries = self._deques[priority] = deque()
            heapq.heappush(self._priorities, priority)
        if priority not in self._headed:
            self._add_head(run_at, priority)
        return entries

    def front(self) -> deque[Job] | None:
        """The non-empty deque of the lowest priority, to pop from its left; ``None`` if empty.

        Its entries may be stale (the caller checks). Valid until the next ``lane``/``push``/
        ``front``/``rebuild``.
        """
        priorities = self._priorities
        deques = self._deques
        while priorities:
            entries = deques[priorities[0]]
            if entries:
                return entries
            del deques[heapq.heappop(priorities)]
        return None

    def earliest_run_at(self, is_live: Callable[[Job], bool]) -> int | None:
        """The earliest ``run_at`` among the live entries, or ``None`` if there are none.

        Relies on ``run_at`` never decreasing from front to back of a lane (jobs become waiting
        in time order, and the clock never goes back), so the answer is the earliest front.
        O(1) when no front moved since the last call; else O(log k) (k priorities in use) for
        each lane whose front moved, as its bound is raised when it reaches the top, plus the
        stale fronts, each dropped once.
        """
        heads = self._heads
        deques = self._deques
        while heads:
            bound, priority = heads[0]
            entries = deques.get(priority)
            if entries is not None:
                while entries and not is_live(entries[0]):
                    entries.popleft()
                    self.stale -= 1
                if entries:
                    run_at = entries[0].run_at
                    if run_at == bound:
                        return run_at
                    heapq.heapreplace(heads, (run_at, priority))
                    continue
            heapq.heappop(heads)
            self._headed.discard(priority)
        return None

    def oldest(self, is_live: Callable[[Job], bool]) -> Iterator[Job]:
        """The live entries in ``seq`` order (oldest first), lazily.

        Each job is handed over as it is taken out of this order: the caller must take it out
        of waiting (``clean`` deletes it) before asking for the next, or stop. O(k) to start
        for k priorities in use, then O(log k) per job plus the stale entries passed; stale
        fronts (jobs an earlier call handed over, say) are dropped, each once.
        """
        cursors: list[tuple[int, int, Job, Iterator[Job]]] = []
        for priority, entries in self._deques.items():
            while entries and not is_live(entries[0]):
                entries.popleft()
                self.stale -= 1
            walk = _increasing(entries)
            first = next(walk, None)
            if first is not None:
                cursors.append((first.seq, priority, first, walk))
        heapq.heapify(cursors)
        reentered = self._reentered
        while True:
            while reentered and not is_live(reentered[0][1]):
                heapq.heappop(reentered)
            while cursors and not is_live(cursors[0][2]):
                _advance(cursors)
            if reentered and (not cursors or reentered[0][0] < cursors[0][0]):
                yield heapq.heappop(reentered)[1]
            elif cursors:
                job = cursors[0][2]
                _advance(cursors)
                yield job
            else:
                return

    def __iter__(self) -> Iterator[Job]:
        """Every entry, priority by priority (lowest first), front to back."""
        for priority in sorted(self._deques):
            yield from self._deques[priority]

    def rebuild(self, is_live: Callable[[Job], bool]) -> None:
        """Drop every stale entry, keeping the order of the live ones. O(entries)."""
        for priority in list(self._deques):
            kept = deque(job for job in self._deques[priority] if is_live(job))
            if kept:
                self._deques[priority] = kept
            else:
                del self._deques[priority]
        self._priorities = sorted(self._deques)
        self.stale = 0
        reentered: list[tuple[int, Job]] = []
        for entries in self._deques.values():
            top = 0
            for job in entries:
                if job.seq < top:
                    reentered.append((job.seq, job))
                else:
                    top = job.seq
        heapq.heapify(reentered)
        self._reentered = reentered
        self._rebuild_heads()

    def maybe_compact(self, live: int, is_live: Callable[[Job], bool]) -> None:
        """Rebuild when stale entries, or ``_reentered`` entries, outnumber ``live`` ones by more
        than ``COMPACT_MARGIN``."""
        if self.stale > live + COMPACT_MARGIN or len(self._reentered) > 2 * live + COMPACT_MARGIN:
            self.rebuild(is_live)

    def _add_head(self, bound: int, priority: int) -> None:
        """Give the lane of ``priority``, empty and about to gain a job, a bound."""
        if len(self._heads) > 2 * len(self._deques) + COMPACT_MARGIN:
            self._rebuild_heads()  # before the push: the rebuild skips empty lanes
        self._headed.add(priority)
        heapq.heappush(self._heads, (bound, priority))

    def _rebuild_heads(self) -> None:
        """One bound per non-empty lane: its front's ``run_at`` (a stale front's is no later)."""
        self._heads = [(entries[0].run_at, p) for p, entries in self._deques.items() if entries]
        heapq.heapify(self._heads)
        self._headed = {priority for _, priority in self._heads}


def _increasing(entries: deque[Job]) -> Iterator[Job]:
    """The entries behind no larger ``seq`` in ``entries``, front to back (so, in ``seq`` order).

    An entry that is behind a larger seq became waiting again or late (``push``), so it is in
    ``ReadyQueue._reentered``: a job is appended by ``lane`` only when just created, with a seq
    larger than every entry ahead of it.
    """
    top = 0
    for job in entries:
        if job.seq > top:
            top = job.seq
            yield job


def _advance(cursors: list[tuple[int, int, Job, Iterator[Job]]]) -> None:
    """Move the first cursor to its lane's next entry in seq order (dropping it at the end)."""
    _, priority, _, walk = cursors[0]
    following = next(walk, None)
    if following is None:
        heapq.heappop(cursors)
    else:
        heapq.heapreplace(cursors, (following.seq, priority, following, walk))


class DeadlineHeap:
    """A min-heap of ``(time, tiebreak, job)`` with lazy deletion (see the module docstring)."""

    __slots__ = ("entries", "stale")

    def __init__(self) -> None:
        self.entries: list[tuple[int, int, Job]] = []
        self.stale = 0

    def push(self, time: int, tiebreak: int, job: Job) -> None:
        heapq.heappush(self.entries, (time, tiebreak, job))

    def peek_time(self) -> int | None:
        """The earliest time in the heap (possibly of a stale entry), or ``None`` if empty."""
        return self.entries[0][0] if self.entries else None

    def pop_due(self, now: int) -> tuple[int, int, Job] | None:
        """Remove and return the earliest entry if its time is ``<= now``, else ``None``."""
        entries = self.entries
        if entries and entries[0][0] <= now:
            return heapq.heappop(entries)
        return None

    def __len__(self) -> int:
        return len(self.entries)

    def rebuild(self, is_live: Callable[[tuple[int, int, Job]], bool]) -> None:
        """Drop every stale entry. O(entries)."""
        self.entries = [entry for entry in self.entries if is_live(entry)]
        heapq.heapify(self.entries)
        self.stale = 0

    def maybe_compact(self, is_live: Callable[[tuple[int, int, Job]], bool]) -> None:
        """Rebuild when stale entries outnumber live ones by more than ``COMPACT_MARGIN``."""
        if self.stale > len(self.entries) - self.stale + COMPACT_MARGIN:
            self.rebuild(is_live)
