"""The worker's events, as BullMQ's ``worker.on('completed')``: callbacks run only after the
broker acknowledged the outcome; and the worker's ``statistics()`` snapshot."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from client.context import JobContext
from client.endpoint import ConnectionStatistics
from client.log import get_logger

log = get_logger("jobwire.worker")

CompletedCallback = Callable[[JobContext, Any], Any]
FailedCallback = Callable[[JobContext, BaseException], Any]


@dataclass(frozen=True, slots=True)
class WorkerStatistics:
    """A snapshot of a worker's counters (``Worker.statistics()``)."""

    held: int
    """Jobs reserved and not yet acknowledged by the broker (running, waiting to run, or
    finished with the outcome in flight); at most the worker's ``max_held``."""
    settling: int
    """Held jobs whose outcome is buffered or in flight, waiting for the broker's answer."""
    running: int
    completed: int
    failed: int
    retried: int
    refused: int
    """Outcomes the broker refused (stale lease or job gone), e.g. after a broker restart."""
    unacknowledged: int
    """Outcomes whose request was lost with the connection (the broker redelivers those jobs)."""
    handed_back: int
    reserve_requests: int
    ack_requests: int
    extended: int
    connection: ConnectionStatistics

    def outcome_counts(self) -> dict[str, int]:
        """The outcome counters by name (for a log line)."""
        return {
            "completed": self.completed, "failed": self.failed, "retried": self.retried,
            "refused": self.refused, "handed_back": self.handed_back,
        }


class EventCallbacks:
    """The registered ``on_completed``/``on_failed`` callbacks and the tasks of async ones."""

    __slots__ = ("_tasks", "completed", "failed")

    def __init__(self) -> None:
        self.completed: list[CompletedCallback] = []
        self.failed: list[FailedCallback] = []
        self._tasks: set[asyncio.Task[Any]] = set()

    def fire(self, callbacks: Sequence[Callable[..., Any]], *args: Any) -> None:
        """Call each callback; an awaitable result becomes a task owned here (see ``drain``).

        A callback's exception is logged, never propagated: it cannot undo an outcome the
        broker already recorded.
        """
        for callback in callbacks:
            try:
                result = callback(*args)
            except Exception:
                log.exception("event callback failed", callback=getattr(callback, "__name__", ""))
                continue
            if result is not None and inspect.isawaitable(result):  # None: the usual, cheap
                task = asyncio.ensure_future(result)
                self._tasks.add(task)
                task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("event callback failed", error=repr(task.exception()))

    async def drain(self, limit: float) -> None:
        """Wait up to ``limit`` seconds for async callbacks still running, then cancel them."""
        if not self._tasks:
            return
        _, pending = await asyncio.wait(set(self._tasks), timeout=limit)
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.wait(pending)
