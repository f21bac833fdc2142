"""Parked requests: long-poll ``reserve`` calls waiting for jobs, ``wait`` calls waiting for a job.

Theory of operation
-------------------
A ``reserve`` that finds nothing and may wait is *parked*: it joins a FIFO per queue it names.
When the core reports that queues gained reservable jobs (``Core.take_ready``), the server calls
``ReserveWaiters.wake`` with those queues. For each one, the oldest waiter is offered the chance to
reserve; if it got jobs it leaves every FIFO and the next one is tried; the first that gets nothing
stops the walk for that queue. So one enqueued job wakes exactly one waiter (no thundering herd),
and a batch of N jobs wakes waiters until the N are gone.

Invariants:
1. A waiter is in the FIFO of every queue it names, or in none (once served, timed out or dropped).
2. A waiter is in ``session.parked`` of its connection exactly while it is parked, so closing a
   connection drops its waiters without a scan.
3. A waiter is answered exactly once: ``done`` is set before its reply is queued, and a waiter
   with ``done`` set is never offered jobs again.

A FIFO is a dict used as an ordered set: O(1) append, O(1) removal of any member (a timed-out or
disconnected waiter), O(1) peek at the oldest.

``JobWaiters`` is the same idea keyed by job id, for ``wait`` requests: the server passes it the
ids from ``Core.take_finished`` and answers every waiter of each.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Generic, TypeVar

from protocol.messages import Reserve, Wait

if TYPE_CHECKING:
    from broker.session import Session


_R = TypeVar("_R", Reserve, Wait)


class Parked(Generic[_R]):
    """A request parked until it can be answered or its timer fires."""

    __slots__ = ("done", "request", "request_id", "session", "timer")

    def __init__(self, session: Session, request_id: int, request: _R) -> None:
        self.session = session
        self.request_id = request_id
        self.request: _R = request
        self.timer: asyncio.TimerHandle | None = None
        self.done = False


class ParkedReserve(Parked[Reserve]):
    """A ``reserve`` request waiting for jobs."""

    __slots__ = ()


class ParkedWait(Parked[Wait]):
    """A ``wait`` request waiting for one job to finish."""

    __slots__ = ()


class ReserveWaiters:
    """Per-queue FIFOs of parked reserves."""

    __slots__ = ("_by_queue", "_count")

    def __init__(self) -> None:
        self._by_queue: dict[str, dict[ParkedReserve, None]] = {}
        self._count = 0

    def __len__(self) -> int:
        return self._count

    def park(self, waiter: ParkedReserve) -> None:
        """Append ``waiter`` to the FIFO of each queue it names."""
        for queue in waiter.request.queues:
            self._by_queue.setdefault(queue, {})[waiter] = None
        waiter.session.parked.add(waiter)
        self._count += 1

    def remove(self, waiter: ParkedReserve) -> None:
        """Take ``waiter`` out of every FIFO and mark it done (idempotent)."""
        if waiter.done:
            return
        waiter.done = True
        self._count -= 1
        waiter.session.parked.discard(waiter)
        if waiter.timer is not None:
            waiter.timer.cancel()
            waiter.timer = None
        for queue in waiter.request.queues:
            fifo = self._by_queue.get(queue)
            if fifo is not None:
                fifo.pop(waiter, None)
                if not fifo:
                    del self._by_queue[queue]

    def wake(self, ready: Iterable[str], serve: Callable[[ParkedReserve], bool]) -> int:
        """Offer jobs to waiters of the ``ready`` queues, oldest first, one at a time.

        Args:
            ready: queues that gained reservable jobs.
            serve: tries to reserve for one waiter; returns True (after answering or dropping it and
                calling ``remove``) if it got jobs, False if the core had none for it.

        Returns:
            How many waiters were served.
        """
        served = 0
        for queue in ready:
            while (fifo := self._by_queue.get(queue)) is not None:
                waiter = next(iter(fifo))
                if not serve(waiter):
                    break
                if not waiter.done:  # serve() must remove it; never offer jobs twice
                    self.remove(waiter)
                served += 1
        return served

    def all(self) -> list[ParkedReserve]:
        """Every parked waiter, oldest first per queue (used by shutdown)."""
        seen: dict[ParkedReserve, None] = {}
        for fifo in self._by_queue.values():
            seen.update(fifo)
        return list(seen)


class JobWaiters:
    """Parked ``wait`` requests by job id."""

    __slots__ = ("_by_job", "_count")

    def __init__(self) -> None:
        self._by_job: dict[str, dict[ParkedWait, None]] = {}
        self._count = 0

    def __len__(self) -> int:
        return self._count

    def park(self, waiter: ParkedWait) -> None:
        self._by_job.setdefault(waiter.request.job_id, {})[waiter] = None
        waiter.session.parked.add(waiter)
        self._count += 1

    def remove(self, waiter: ParkedWait) -> None:
        """Forget ``waiter`` and mark it done (idempotent)."""
        if waiter.done:
            return
        waiter.done = True
        self._count -= 1
        waiter.session.parked.discard(waiter)
        if waiter.timer is not None:
            waiter.timer.cancel()
            waiter.timer = None
        waiters = self._by_job.get(waiter.request.job_id)
        if waiters is not None:
            waiters.pop(waiter, None)
            if not waiters:
                del self._by_job[waiter.request.job_id]

    def take(self, job_ids: Iterable[str]) -> list[ParkedWait]:
        """Remove and return every waiter of the given jobs."""
        out: list[ParkedWait] = []
        for job_id in job_ids:
            waiters = self._by_job.get(job_id)
            if waiters:
                out.extend(waiters)
        for waiter in out:
            self.remove(waiter)
        return out

    def all(self) -> list[ParkedWait]:
        return [w for ws in self._by_job.values() for w in ws]
