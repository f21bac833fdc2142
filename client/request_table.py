"""The requests of one connection, without I/O: ids, deadlines, in-flight slots, reply matching.

Theory of operation
-------------------
``RequestTable`` is the bookkeeping half of ``client.connection.Connection``: it never reads a
clock, touches a socket or resolves a future. The caller passes ``now`` (the event loop's clock)
and opaque *waiters* (the connection's futures); the table says which waiter a reply belongs to,
which waiters timed out, and when the caller's single timer should next fire (``timer_at``).

* **Ids**: ``add`` gives each request the next free id in ``1..MAX_REQUEST_ID``, wrapping around
  and skipping ids still pending.
* **Deadlines**: each request pushes ``(deadline, seq, id, waiter, timeout)`` on a heap. One
  timer serves them all: ``timer_at`` is the earliest live deadline, but ``expire`` never asks
  for the next run sooner than ``TIMEOUT_SLACK`` after itself, so a request times out after at
  least its timeout and at most its timeout plus ``TIMEOUT_SLACK``. Entries of answered requests
  stay in the heap until they reach its top or the heap is compacted (when it holds more than
  twice the pending requests plus ``COMPACT_MIN``), so its size stays bounded.
* **Slots**: at most ``limit`` requests (the broker's ``max_inflight``) are pending;
  ``has_slot`` says whether another may be sent. Senders that found no slot queue a slot waiter
  (``wait_slot``); ``next_slot_waiter`` picks the one to wake, first come first served.

Invariants:
1. A waiter is in ``pending`` from ``add`` until its reply is matched (``match``), it times out
   (``expire``), or the table is cleared (``clear``); ids in ``pending`` are unique.
2. ``timer_at`` is ``None`` exactly when the heap is empty; otherwise the caller's timer must
   fire at ``timer_at`` and call ``expire``.
3. A waiter that is already done (its caller gave up) keeps its id and slot until its reply
   comes: ``expire`` does not remove it.
"""

from __future__ import annotations

import heapq
from typing import Final, Generic, Protocol, TypeVar

from protocol.checks import MAX_REQUEST_ID

TIMEOUT_SLACK: Final = 0.01
"""Seconds a request may outlive its timeout: the sweep timer runs at most once per slack."""
COMPACT_MIN: Final = 256
"""Dead heap entries tolerated beyond twice the pending requests before compacting."""


class Waiter(Protocol):
    """What the table needs of a waiter: whether its caller still waits (``asyncio.Future``)."""

    def done(self) -> bool: ...


W = TypeVar("W", bound=Waiter)
S = TypeVar("S", bound=Waiter)


class RequestTable(Generic[W, S]):
    """Pending requests by id, with their deadlines, and the senders waiting for a slot.

    ``W`` is the waiter of a sent request, ``S`` the waiter of a sender waiting for a slot.

    Args:
        limit: most requests pending at once (the broker's ``max_inflight``).
    """

    __slots__ = ("_deadlines", "_next_id", "_seq", "limit", "pending", "slot_waiters", "timer_at")

    def __init__(self, limit: int = 10_000) -> None:
        self.limit = limit
        self.pending: dict[int, W] = {}
        """Request id → waiter, for every request awaiting its reply."""
        self.slot_waiters: list[S] = []
        """Senders waiting for a slot, oldest first."""
        self.timer_at: float | None = None
        """When the caller's timer must next call ``expire`` (``None``: no timer needed)."""
        self._deadlines: list[tuple[float, int, int, W, float]] = []
        self._next_id = 1
        self._seq = 0

    def __len__(self) -> int:
        return len(self.pending)

    def has_slot(self) -> bool:
        """True while fewer than ``limit`` requests are pending."""
        return len(self.pending) < self.limit

    def wait_slot(self, waiter: S) -> None:
        """Queue a sender that found no free slot."""
        self.slot_waiters.append(waiter)

    def next_slot_waiter(self) -> S | None:
        """The oldest slot waiter still waiting, if a slot is free (it is dequeued)."""
        waiters = self.slot_waiters
        while waiters and len(self.pending) < self.limit:
            waiter = waiters.pop(0)
            if not waiter.done():
                return waiter
        return None

    def take_slot_waiters(self) -> list[S]:
        """Dequeue every slot waiter (the table emptied, or the connection closed)."""
        waiters, self.slot_waiters = self.slot_waiters, []
        return waiters

    def add(self, waiter: W, now: float, timeout: float) -> int:
        """Register a request sent at ``now`` that may wait ``timeout`` seconds.

        Returns:
            The request's id. ``timer_at`` may have moved earlier: re-arm the timer if so.
        """
        request_id = self._next_id
        pending = self.pending
        while request_id in pending:
            request_id = request_id % MAX_REQUEST_ID + 1
        self._next_id = request_id % MAX_REQUEST_ID + 1
        pending[request_id] = waiter
        deadline = now + timeout
        deadlines = self._deadlines
        heapq.heappush(deadlines, (deadline, self._seq, request_id, waiter, timeout))
        self._seq += 1
        if self.timer_at is None or deadline < self.timer_at:
            self.timer_at = deadline
        elif len(deadlines) > 2 * len(pending) + COMPACT_MIN:
            self._compact()
        return request_id

    def match(self, request_id: int) -> W | None:
        """The waiter of the request a reply answers (now no longer pending), if any."""
        return self.pending.pop(request_id, None)

    def expire(self, now: float) -> list[tuple[W, float]]:
        """Remove the live requests whose deadline passed; set ``timer_at`` for the next ones.

        Returns:
            ``(waiter, timeout)`` of each request that timed out, earliest deadline first.
        """
        deadlines, pending = self._deadlines, self.pending
        expired = []
        while deadlines:
            deadline, _, request_id, waiter, timeout = deadlines[0]
            live = pending.get(request_id) is waiter
            if live and deadline > now:
                break
            heapq.heappop(deadlines)
            if live and not waiter.done():
                del pending[request_id]
                expired.append((waiter, timeout))
        self.timer_at = max(deadlines[0][0], now + TIMEOUT_SLACK) if deadlines else None
        return expired

    def clear(self) -> list[W]:
        """Forget every request (the transport is gone). Returns the waiters that were pending."""
        waiters = list(self.pending.values())
        self.pending = {}
        self._deadlines = []
        self.timer_at = None
        return waiters

    def _compact(self) -> None:
        """Drop the heap entries of requests that are no longer pending."""
        pending = self.pending
        live = [entry for entry in self._deadlines if pending.get(entry[2]) is entry[3]]
        heapq.heapify(live)
        self._deadlines = live
