"""Group commit: many requests per journal transaction, and the broker's single journal writer.

Theory of operation: a request that changed the core's state registers a callback with
``after_commit``. The ``run`` loop wakes, takes the core's changes (``take_changes``) and every
callback gathered so far, writes them in one transaction and then calls every callback with the
outcome. While that transaction runs, the next batch gathers, so the number of transactions per
second adapts to the disk rather than to the request rate. After a successful commit the loop
asks the journal for a checkpoint if the WAL has grown past its threshold.

Invariants:

1. A callback is called exactly once, after the transaction that followed its registration ended:
   with ``None`` if it committed, with the ``JournalError`` if it failed.
2. The changes of a failed batch are never dropped: they are kept and merged under the next
   batch's (newer changes win), and retried (after ``retry_delay``, doubling) even when no request
   arrives, so memory and disk converge once the fault clears. Only the callbacks of the failed
   batch see the error.
3. One batch at a time (``_lock``): ``flush`` waits for a running batch, then commits the rest.
4. The ``observer``, if any, hears of every batch in order: ``batch_taken`` right after the
   core's changes are taken, then ``committed`` (with the job rows written and the seconds the
   write took; ``None`` rows when there was nothing to write) once the transaction committed,
   or ``failed`` if it failed. A cancelled write reports neither: its changes are retained,
   like a failed one's. This is how job events leave only after their write committed
   (``broker/events``).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from typing import Protocol

from broker.core import Changes
from broker.journal import Journal, JournalError
from broker.log import get_logger

_log = get_logger("committer")

Callback = Callable[[BaseException | None], None]


class CommitObserver(Protocol):
    """What the committer reports about each batch (invariant 4)."""

    def batch_taken(self) -> None:
        """The core's changes were just taken for a transaction."""

    def committed(self, rows: int | None, seconds: float) -> None:
        """That transaction committed (``rows`` job rows, in ``seconds``), or there was nothing
        to write (``rows`` is ``None``)."""

    def failed(self) -> None:
        """That transaction failed; its changes are retained for the next batch."""


class GroupCommitter:
    """Many requests per transaction: the broker's single writer to the journal.

    Args:
        journal: the open journal.
        take_changes: returns (and forgets) everything the core changed since the last call.
        retry_delay: seconds before the first retry of a failed batch when nothing new arrives;
            doubles per consecutive failure up to ``max_retry_delay``.
        max_retry_delay: the longest wait between retries.
        observer: told of every batch (invariant 4).
    """

    def __init__(
        self,
        journal: Journal,
        take_changes: Callable[[], Changes],
        *,
        retry_delay: float = 0.05,
        max_retry_delay: float = 5.0,
        observer: CommitObserver | None = None,
    ) -> None:
        self._journal = journal
        self._observer = observer
        self._take_changes = take_changes
        self._waiters: list[Callback] = []
        self._retained: Changes | None = None
        self._wakeup = asyncio.Event()
        self._lock = asyncio.Lock()
        self._unanswered: _Deferred | None = None
        self._retry_delay = retry_delay
        self._max_retry_delay = max_retry_delay
        self._failures = 0
        self.batches = 0
        self.failed_batches = 0
        self.generation = 0
        """Counts the batches that took their callbacks. A callback registered while this is
        unchanged sees the same transaction as one registered now (``Session`` gathers its
        replies under one callback per generation)."""

    @property
    def pending_failure(self) -> bool:
        """Whether the last batch failed (its changes wait to be written)."""
        return self._failures > 0

    def after_commit(self, callback: Callback) -> None:
        """Call ``callback`` once the transaction holding the caller's latest changes ends.

        Call it right after a core operation that changed state. ``callback(None)`` runs after
        that transaction committed (or after the in-flight one, if there was nothing to write);
        ``callback(exc)`` runs if it failed (``exc`` is a ``JournalError``).

        Args:
            callback: a plain function; it must not block. Its exceptions are logged.
        """
        self._waiters.append(callback)
        self._wakeup.set()

    def wake(self) -> None:
        """Commit the core's changes soon, with no one waiting for the result."""
        self._wakeup.set()

    async def run(self) -> None:
        """The commit loop; runs until cancelled (``CancelledError`` is re-raised).

        A failed batch is retried after ``retry_delay`` (doubling) even when no request arrives.

        The callbacks of a batch are called once the next batch's transaction has been handed to
        the SQLite thread (or at once when nothing is waiting to be written): encoding and sending
        one batch's replies then overlaps the next commit instead of delaying its start.
        """
        try:
            while True:
                if not self._wakeup.is_set():
                    self._answer_previous()
                if self._retained is None:
                    await self._wakeup.wait()
                else:
                    delay = retry_delay(self._failures, self._retry_delay,
                                        self._max_retry_delay)
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(delay):
                            await self._wakeup.wait()
                self._wakeup.clear()
                await self._commit_batch(defer=True)
        finally:
            self._answer_previous()

    async def flush(self) -> None:
        """Commit everything gathered so far (waiting for a running transaction first).

        Safe to call when idle and any number of times. Every callback registered before the
        call has been called when it returns.

        Raises:
            JournalError: the final transaction failed; its changes are still retained.
        """
        error = await self._commit_batch(defer=False)
        if error is not None:
            raise error

    def _answer_previous(self) -> None:
        previous, self._unanswered = self._unanswered, None
        if previous is not None:
            previous()

    async def _commit_batch(self, *, defer: bool) -> JournalError | None:
        """Write one batch. The previous batch's callbacks, if ``run`` left them unanswered, are
        called as soon as this batch's transaction is in the SQLite thread's hands (and in any
        case before this returns), so callbacks are always called in batch order. This batch's
        own are left for the next one with ``defer``, else called before returning.
        """
        async with self._lock:
            previous, self._unanswered = self._unanswered, None
            try:
                error, answer = await self._write_batch(previous)
            finally:
                if previous is not None:
                    previous()
            if defer:
                self._unanswered = answer
            else:
                answer()
            return error

    async def _write_batch(
        self, previous: _Deferred | None
    ) -> tuple[JournalError | None, _Deferred]:
        waiters, self._waiters = self._waiters, []
        self.generation += 1
        changes = self._take_changes()
        observer = self._observer
        if observer is not None:
            observer.batch_taken()
        retained, self._retained = self._retained, None
        if retained is not None:
            retained.jobs.update(changes.jobs)
            retained.queues.update(changes.queues)
            retained.schedules.update(changes.schedules)
            retained.next_seq = max(retained.next_seq, changes.next_seq)
            retained.new_from = min(retained.new_from, changes.new_from)
            changes = retained
        error: JournalError | None = None
        seconds = 0.0
        if changes:
            started = time.perf_counter()
            try:
                await self._journal.write(changes, dispatched=previous)
                seconds = time.perf_counter() - started
            except JournalError as exc:
                error = exc
                self._retained = changes
            except asyncio.CancelledError:
                # The transaction still runs to its end in the SQLite thread, but whether it
                # committed is unknown here: keep everything for the next run or flush (rewriting is
                # idempotent) and let the callbacks wait for it.
                self._retained = changes
                self._waiters[:0] = waiters
                raise
            else:
                self.batches += 1
        if observer is not None:
            try:
                if error is None:
                    observer.committed(len(changes.jobs) if changes else None, seconds)
                else:
                    observer.failed()
            except Exception:  # a bug there must not stop the broker's only writer
                _log.exception("commit_observer_failed")
        if error is None:
            if self._failures:
                _log.info("journal_recovered", failed_batches=self._failures)
            self._failures = 0
        else:
            self._failures += 1
            self.failed_batches += 1
            if self._failures & (self._failures - 1) == 0:  # 1st, 2nd, 4th, 8th...: bounded
                _log.error("journal_failure", error=str(error), jobs=len(changes.jobs),
                           waiters=len(waiters), consecutive=self._failures)
        answer = _Deferred(waiters, error)
        if error is None and changes and self._journal.checkpoint_due():
            if previous is not None:
                previous()
            answer()  # a checkpoint takes a while: answer before it, not after
            try:
                await self._journal.checkpoint()
            except JournalError as exc:
                _log.warning("checkpoint_failed", error=str(exc))
        return error, answer


def retry_delay(failures: int, base: float, cap: float) -> float:
    """Seconds before retrying after ``failures`` consecutive failed batches: ``base`` doubling,
    at most ``cap``. The exponent is bounded first: ``2 ** failures`` as a float overflows after
    1,024 failures, which a full disk reaches in seconds under traffic."""
    return min(cap, base * 2.0 ** min(failures - 1, 62))


class _Deferred:
    """A batch's callbacks with the batch's outcome; calling it calls each of them exactly once."""

    __slots__ = ("_callbacks", "_error")

    def __init__(self, callbacks: list[Callback], error: JournalError | None) -> None:
        self._callbacks: list[Callback] | None = callbacks
        self._error = error

    def __call__(self) -> None:
        callbacks, self._callbacks = self._callbacks, None
        if not callbacks:
            return
        for callback in callbacks:
            try:
                callback(self._error)
            except Exception:
                _log.exception("commit_callback_failed")
