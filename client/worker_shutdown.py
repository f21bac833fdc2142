"""The worker's graceful shutdown: let running jobs finish, hand back the rest, wait for replies.

``Worker`` (``client/worker.py``) inherits these steps; they read the worker's state, declared
below for the type checker. The order on ``stop()`` (SIGTERM, SIGINT): ``_drain`` stops
reserving and gives running jobs ``grace`` seconds (a second signal, ``_force``, cuts it short)
and then cancels the runners; ``_finish`` hands every unfinished job back with ``release`` (no
attempt counted) and waits, bounded, for the outcome replies still in flight.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from collections import deque

from client.connection import Connection
from client.context import JobContext
from client.events import EventCallbacks
from client.leases import LeaseKeeper
from client.log import get_logger
from client.outcomes import OutcomeBuffer
from client.reserving import Reserver

log = get_logger("jobwire.worker")


class ShutdownSteps:
    """The shutdown half of ``Worker`` (a mixin: no state of its own)."""

    grace: float
    poll_wait_ms: int
    connection: Connection
    events: EventCallbacks
    _reserver: Reserver
    _outcomes: OutcomeBuffer
    _leases: LeaseKeeper
    _ready: deque[JobContext]
    _held: dict[int, JobContext]
    _settling: set[int]
    _running: int
    _handed_back: int
    _force: asyncio.Event
    _idle_wake: asyncio.Event

    def stop(self) -> None:
        raise NotImplementedError

    def _unfinished(self) -> int:
        raise NotImplementedError

    def _on_signal(self, sig: signal.Signals) -> None:
        log.info("signal received, shutting down", signal=sig.name, grace=self.grace)
        self.stop()

    async def _drain(self, runners: list[asyncio.Task[None]]) -> None:
        """Stop reserving, let held jobs finish within the grace period, cancel the rest."""
        deadline = time.monotonic() + self.grace
        left, acks = self._running + len(self._ready), len(self._settling)  # acks need no grace
        log.info(f"worker stopping: up to {self.grace:g} s for {left} jobs to finish" if left
                 else "worker stopping: no job running", running=self._running,
                 queued=len(self._ready), awaiting_ack=acks, grace=self.grace)
        await self._until(self._reserver.done, deadline)  # jobs of sent reserves are ours too
        while self._unfinished() and not self._force.is_set():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            self._idle_wake.clear()
            await self._until(self._idle_wake, deadline)
        for runner in runners:
            runner.cancel()

    async def _until(self, event: asyncio.Event, deadline: float) -> None:
        """Wait for ``event`` until ``deadline`` or a forced stop, whichever comes first."""
        remaining = deadline - time.monotonic()
        if event.is_set() or remaining <= 0:
            return
        waiters = {asyncio.ensure_future(event.wait()), asyncio.ensure_future(self._force.wait())}
        try:
            await asyncio.wait(waiters, timeout=remaining, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in waiters:
                waiter.cancel()

    async def _finish(self) -> None:
        """Hand back every job still held, then wait (bounded) for outcome replies."""
        # A reserve still parked at the broker could take a job we hand back: wait it out
        # first (at most one long-poll); whatever it brings is handed back too.
        if not self._reserver.done.is_set():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.poll_wait_ms / 1000 + 5.0):
                    await self._reserver.done.wait()
        self._ready.clear()
        settling = self._settling
        unfinished = [ctx for token, ctx in self._held.items() if token not in settling]
        if unfinished:
            self._handed_back += len(unfinished)
            log.warning("handing back unfinished jobs", count=len(unfinished))
            for ctx in unfinished:
                settling.add(ctx.token)
                self._outcomes.hand_back(ctx)
        await self._outcomes.drain(max(5.0, self.connection.request_timeout))
        self._held.clear()  # what is left was never answered: the broker redelivers it
        settling.clear()
        self._leases.forget_all()
        if self._handed_back:
            log.info("unfinished jobs handed back", count=self._handed_back,
                     released=self._outcomes.released)
        await self.events.drain(5.0)
