"""Parked requests: long-poll ``reserve`` calls waiting for jobs, ``wait`` calls waiting for a job.

Theory of operation
-------------------
A ``reserve`` that finds nothing and may wait is *parked*: it joins a FIFO per queue it names.
When the core reports that queues gained reservable jobs (``Core.take_ready``), ``Parking.wake``
calls ``ReserveWaiters.wake`` with those queues. For each one, the oldest waiter is offered the
chance to reserve; if it got jobs it leaves every FIFO and the next one is tried; the first that
gets nothing stops the walk for that queue. So one enqueued job wakes exactly one waiter (no
thundering herd), and a batch of N jobs wakes waiters until the N are gone.

Invariants:
1. A waiter is in the FIFO of every queue it names, or in none (once served, timed out or dropped).
2. A waiter is in ``session.parked`` of its connection exactly while it is parked, so closing a
   connection drops its waiters without a scan.
3. A waiter is answered exactly once: ``done`` is set before its reply is queued, and a waiter
   with ``done`` set is never offered jobs again.

A FIFO is a dict used as an ordered set: O(1) append, O(1) removal of any member (a timed-out or
disconnected waiter), O(1) peek at the oldest.

``JobWaiters`` is the same idea keyed by job id, for ``wait`` requests: ``Parking.wake`` passes
it the ids from ``Core.take_finished`` and answers every waiter of each.

``Parking`` owns both, with each waiter's timer; it reserves for a woken waiter through the
callable it is given (the same route to the core as a fresh ``reserve``) and answers through the
waiter's connection, of which it knows only ``Waiter``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable
from typing import Generic, Protocol, TypeVar

from protocol.operations import Reserve, Wait
from protocol.replies import ReservedJob


class Waiter(Protocol):
    """What parking needs of the connection a parked request came on."""

    conn_id: int
    parked: set[ParkedReserve | ParkedWait]
    """The connection's parked requests (invariant 2)."""

    @property
    def is_open(self) -> bool: ...

    @property
    def unsent_bytes(self) -> int:
        """Encoded reply bytes of the connection not yet on the socket."""

    def finish_reserve(self, request_id: int, jobs: list[ReservedJob]) -> None: ...

    def finish_wait(self, request_id: int, job_id: str) -> None: ...


_R = TypeVar("_R", Reserve, Wait)


class Parked(Generic[_R]):
    """A request parked until it can be answered or its timer fires."""

    __slots__ = ("done", "request", "request_id", "session", "timer")

    def __init__(self, session: Waiter, request_id: int, request: _R) -> None:
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


class Parking:
    """Every parked request of the broker, each with its timer.

    Args:
        reserve: reserves for a parked waiter now (empty when the core has nothing for it).
        max_parked: most parked requests in all.
        max_per_connection: most parked requests of one connection.
    """

    __slots__ = ("_reserve", "max_parked", "max_per_connection", "reserves", "waits")

    def __init__(
        self,
        reserve: Callable[[ParkedReserve], list[ReservedJob]],
        max_parked: int,
        max_per_connection: int,
    ) -> None:
        self.reserves = ReserveWaiters()
        self.waits = JobWaiters()
        self.max_parked = max_parked
        self.max_per_connection = max_per_connection
        self._reserve = reserve

    def refusal(self, session: Waiter) -> str | None:
        """Why ``session`` may not park one more request (``None``: it may).

        Each parked request costs memory until it is answered: they are bounded per connection
        and in the broker.
        """
        if len(session.parked) >= self.max_per_connection:
            return (f"more than {self.max_per_connection} parked reserve/wait requests on this "
                    "connection")
        if len(self.reserves) + len(self.waits) >= self.max_parked:
            return f"more than {self.max_parked} parked reserve/wait requests"
        return None

    def park_reserve(self, session: Waiter, request_id: int, request: Reserve) -> None:
        """Park a reserve that found nothing until jobs come or ``wait_ms`` passes."""
        parked = ParkedReserve(session, request_id, request)
        self.reserves.park(parked)
        parked.timer = asyncio.get_running_loop().call_later(
            request.wait_ms / 1000, self._reserve_timed_out, parked
        )

    def park_wait(self, session: Waiter, request_id: int, request: Wait) -> None:
        """Park a ``wait`` until the job finishes or ``timeout_ms`` passes."""
        parked = ParkedWait(session, request_id, request)
        self.waits.park(parked)
        parked.timer = asyncio.get_running_loop().call_later(
            request.timeout_ms / 1000, self._wait_timed_out, parked
        )

    def wake(self, ready: Iterable[str], finished: Iterable[str]) -> None:
        """Offer jobs of ``ready`` queues to their waiters; answer waits of ``finished`` jobs."""
        if self.reserves:
            self.reserves.wake(ready, self._serve)
        if self.waits:
            for parked in self.waits.take(finished):
                parked.session.finish_wait(parked.request_id, parked.request.job_id)

    def drop(self, session: Waiter) -> None:
        """Forget every request parked by a closed connection, unanswered."""
        for parked in list(session.parked):
            if isinstance(parked, ParkedReserve):
                self.reserves.remove(parked)
            else:
                self.waits.remove(parked)

    def answer_reserves(self) -> None:
        """Answer every parked reserve with no jobs (shutdown)."""
        for parked in self.reserves.all():
            self.reserves.remove(parked)
            parked.session.finish_reserve(parked.request_id, [])

    def answer_waits(self) -> None:
        """Answer every parked wait with its job as it is now (shutdown)."""
        for parked in self.waits.all():
            self.waits.remove(parked)
            parked.session.finish_wait(parked.request_id, parked.request.job_id)

    def _serve(self, parked: ParkedReserve) -> bool:
        if not parked.session.is_open:  # closing: jobs leased to it would only come back failed
            self.reserves.remove(parked)
            return True
        jobs = self._reserve(parked)
        if not jobs:
            return False
        self.reserves.remove(parked)
        parked.session.finish_reserve(parked.request_id, jobs)
        return True

    def _reserve_timed_out(self, parked: ParkedReserve) -> None:
        parked.timer = None
        if not parked.done:
            self.reserves.remove(parked)
            parked.session.finish_reserve(parked.request_id, [])

    def _wait_timed_out(self, parked: ParkedWait) -> None:
        parked.timer = None
        if not parked.done:
            self.waits.remove(parked)
            parked.session.finish_wait(parked.request_id, parked.request.job_id)
