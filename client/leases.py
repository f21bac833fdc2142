"""Lease upkeep for the worker: extend, in one batched ``extend`` request, every held job whose
lease is past half its length.

One task (``LeaseKeeper.run``, owned by the worker's task group) naps until the earliest time a
watched job needs extending, at most ``LEASE_TICK_MAX`` seconds. The worker tells the keeper
which jobs it holds: ``watch`` when they are reserved (a shorter lease wakes the task),
``forget`` once the broker answered their outcome. Deadlines are local monotonic times computed
from when the job (or the extension) was *sent for*, so they err early, never late. A refused
extension marks the job ``lease_lost`` and is logged: its outcome will be refused too, and the
broker redelivers it.

Jobs whose outcome is already on its way stay watched, and so are extended too, until the broker
answers that outcome: an ack stuck behind a slow commit must not let the lease lapse. Once the
broker has applied the outcome it refuses the extension (the lease is gone); for such a job
(``outcome_sent``) that is expected, so it only stops further extensions and is not logged.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Iterable
from functools import partial
from typing import Any, Final

from client.call import PipelinedSender
from client.context import JobContext
from client.errors import ConnectionError_
from client.log import get_logger
from protocol.model import ExtendItem
from protocol.operations import Extend
from protocol.replies import parse_outcomes

log = get_logger("jobwire.worker")

LEASE_TICK_MAX: Final = 1.0
"""Longest pause between two looks at the leases, seconds."""


class LeaseKeeper:
    """Keeps the leases of a worker's held jobs alive while their handlers run.

    Args:
        connection: the worker's connection.
        lease_ms: the lease length to ask for (``None``: each job's own).
        outcome_sent: whether a job's outcome is already buffered or sent (then a refused
            extension is expected, not a loss).
    """

    __slots__ = (
        "_connection", "_jobs", "_next_check", "_outcome_sent", "_wake", "extended", "lease_ms",
    )

    def __init__(
        self, connection: PipelinedSender, lease_ms: int | None,
        outcome_sent: Callable[[JobContext], bool] = lambda ctx: False,
    ) -> None:
        self._connection = connection
        self._jobs: dict[int, JobContext] = {}
        self._outcome_sent = outcome_sent
        self.lease_ms = lease_ms
        self._wake = asyncio.Event()
        self._next_check = 0.0
        self.extended = 0
        """Leases extended successfully so far."""

    def watch(self, jobs: Iterable[JobContext]) -> None:
        """New held jobs: keep their leases; wake the task if one needs extending before its
        planned look."""
        watched = self._jobs
        soon = False
        next_check = self._next_check
        for ctx in jobs:
            watched[ctx.token] = ctx
            soon = soon or ctx.deadline - ctx.lease / 2 < next_check
        if soon:
            self._wake.set()

    def forget(self, jobs: Iterable[JobContext]) -> None:
        """The worker no longer holds ``jobs`` (their outcome was answered, or it was lost)."""
        watched = self._jobs
        for ctx in jobs:
            watched.pop(ctx.token, None)

    def forget_all(self) -> None:
        """The worker holds nothing any more."""
        self._jobs.clear()

    async def run(self) -> None:
        """Extend leases until cancelled."""
        wake = self._wake
        while True:
            wake.clear()
            now = time.monotonic()
            due: list[JobContext] = []
            next_check = now + LEASE_TICK_MAX
            for ctx in self._jobs.values():
                extend_at = ctx.deadline - ctx.lease / 2
                if extend_at <= now and not ctx.lease_lost:
                    due.append(ctx)
                else:
                    next_check = min(next_check, extend_at)
            if due and self._connection.connected:
                self._send(due, now)
                for ctx in due:
                    next_check = min(next_check, ctx.deadline - ctx.lease / 2)
            self._next_check = next_check
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(max(0.01, next_check - now)):
                    await wake.wait()

    def _send(self, due: list[JobContext], now: float) -> None:
        server = self._connection.server
        max_batch = server.max_batch if server else 10_000
        for start in range(0, len(due), max_batch):
            chunk = due[start:start + max_batch]
            items = tuple(ExtendItem(ctx.id, ctx.token, self.lease_ms) for ctx in chunk)
            try:
                future = self._connection.request_nowait(Extend(items))
            except ConnectionError_:
                return
            for ctx in chunk:  # the new deadline counts from now; no second ask meanwhile
                ctx.deadline = now + ctx.lease
            future.add_done_callback(partial(self._on_extended, chunk))

    def _on_extended(
        self, chunk: list[JobContext], future: asyncio.Future[dict[str, Any]]
    ) -> None:
        if future.cancelled() or future.exception() is not None:
            return  # connection lost: the broker releases these jobs itself
        for ctx, outcome in zip(chunk, parse_outcomes(future.result()), strict=False):
            if outcome.ok:
                self.extended += 1
            elif not ctx.lease_lost:
                ctx.lease_lost = True
                if ctx.token not in self._jobs or self._outcome_sent(ctx):
                    continue  # the outcome got there first: the lease ended with it
                log.warning("lease lost while the handler runs", job_id=ctx.id,
                            code=outcome.code, message=str(outcome.value))
