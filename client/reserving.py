"""The worker's reservations: when to ask the broker for jobs, and how many.

Theory of operation
-------------------
One task (``Reserver.run``, owned by the worker's task group) asks for ``free = min(slots, window)
- asked`` jobs with a long-poll ``reserve``, where ``room()`` gives ``slots`` (``concurrency`` plus
the prefetch allowance, minus the jobs without an outcome yet) and ``window`` (``max_held`` minus
every held job). When the window is what limits it (outcomes in flight), it waits until a quarter
of the slots (``min_overlap``) are free rather than reserving a few jobs per ack reply. A second
request may overlap the first only when at least ``min_overlap`` slots are free, so a busy worker
keeps its pipe full and an idle one holds one long-poll. Replies are handled in a future callback
(no task per batch): the jobs go to ``deliver``. A failed reserve (not a lost connection) pauses
reserving for a doubling delay, capped at 5 s. A ``draining`` broker pauses it until the connection
comes back.

Invariants:
1. ``asked`` is the number of jobs asked for by reserves whose reply has not arrived;
   ``outstanding`` the number of those reserves, at most two.
2. ``done`` is set exactly while no reserve is outstanding.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any, Final, cast

from client.call import PipelinedSender
from client.errors import ConnectionError_
from client.log import get_logger
from protocol.checks import MAX_RESERVE_JOBS
from protocol.operations import Reserve
from protocol.replies import ReservedJob, parse_reserved

log = get_logger("jobwire.worker")

_TUPLE: Final = frozenset({tuple})
_FULL: Final = frozenset({len(ReservedJob._fields)})


class Reserver:
    """Reserves jobs for a worker whenever it has room.

    Args:
        connection: the worker's connection.
        queues: the queues, in priority order.
        poll_wait_ms: how long one long-poll waits at the broker.
        lease_ms: the lease length to ask for (``None``: each job's own).
        room: ``(slots, window)`` now (see the theory of operation).
        min_overlap: free slots needed before a second reserve may overlap the first, or
            before reserving at all when the window binds.
        deliver: called with the jobs of each non-empty reply.
    """

    __slots__ = (
        "_connection", "_deliver", "_lease_ms", "_min_overlap", "_pause", "_poll_wait_ms",
        "_queues", "_room", "_stop", "_stopping", "_wake", "asked", "done", "draining",
        "outstanding", "requests", "wake",
    )

    def __init__(
        self, connection: PipelinedSender, queues: Sequence[str], poll_wait_ms: int,
        lease_ms: int | None, *, room: Callable[[], tuple[int, int]], min_overlap: int,
        deliver: Callable[[Sequence[ReservedJob]], None],
    ) -> None:
        self._connection = connection
        self._queues = tuple(queues)
        self._poll_wait_ms = poll_wait_ms
        self._lease_ms = lease_ms
        self._room = room
        self._min_overlap = min_overlap
        self._deliver = deliver
        self._pause = 0.0
        """Seconds to wait before the next reserve after one failed (doubling, capped)."""
        self._wake = asyncio.Event()
        self.wake: Callable[[], None] = self._wake.set
        """Look again: room may have freed, or the connection changed (the event's own ``set``:
        the worker calls it once per finished job)."""
        self._stop = asyncio.Event()
        self._stopping = False
        self.asked = 0
        self.outstanding = 0
        self.done = asyncio.Event()
        self.done.set()
        self.draining = False
        """Set while the broker said it is draining (until the connection comes back)."""
        self.requests = 0
        """Reserve requests sent so far."""

    def stop(self) -> None:
        """Send no more reserves (the ones outstanding still deliver); ``run`` returns."""
        self._stopping = True
        self._stop.set()
        self._wake.set()

    async def run(self) -> None:
        """Reserve until ``stop()``."""
        conn = self._connection
        wake = self._wake
        while not self._stopping:
            if self._pause and self.outstanding == 0:
                wake.clear()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self._pause):
                        await self._stop.wait()
                if self._stop.is_set():
                    break
            if conn.connected and not self.draining:
                slots, window = self._room()
                free = min(slots, window) - self.asked
                outstanding = self.outstanding
                # When unanswered outcomes are what limits us (the window binds), wait for a
                # quarter of the slots instead of reserving a few jobs per ack reply.
                big = free >= self._min_overlap
                wanted = free > 0 and (big or slots <= window) and (
                    outstanding == 0 or (outstanding == 1 and big)
                )
                if wanted and self._issue(min(free, MAX_RESERVE_JOBS)):
                    continue
            wake.clear()
            await wake.wait()

    def _issue(self, count: int) -> bool:
        request = Reserve(self._queues, count, self._poll_wait_ms, self._lease_ms)
        conn = self._connection
        try:
            future = conn.request_nowait(
                request, timeout=self._poll_wait_ms / 1000 + conn.request_timeout
            )
        except ConnectionError_:
            return False
        self.asked += count
        self.outstanding += 1
        self.done.clear()
        self.requests += 1
        future.add_done_callback(partial(self._on_reserved, count))
        return True

    def _on_reserved(self, count: int, future: asyncio.Future[dict[str, Any]]) -> None:
        self.asked -= count
        self.outstanding -= 1
        if self.outstanding == 0:
            self.done.set()
        self._wake.set()
        if future.cancelled():
            return
        exc = future.exception()
        if exc is not None:
            if not isinstance(exc, ConnectionError_):
                self._pause = min(5.0, max(0.1, self._pause * 2))
                log.warning("reserve failed", error=str(exc), retry_in=self._pause)
            return
        self._pause = 0.0
        body = future.result()
        raws = body.get("jobs")
        jobs: Sequence[ReservedJob]
        if type(raws) is tuple and set(map(type, raws)) <= _TUPLE and set(map(len, raws)) <= _FULL:
            # Every job an array of this version's 12 items: ``parse_reserved`` would check
            # them and wrap each, unchanged, in a ``ReservedJob``; ``JobContext`` reads either.
            jobs = cast(tuple[ReservedJob, ...], raws)
        else:
            jobs = parse_reserved(body)
        if jobs:
            self._deliver(jobs)
