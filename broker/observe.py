"""The I/O side of watching the broker: event subscriptions per connection, the commit hand-off,
sending events, and the ``metrics`` and ``workers`` replies.

Theory of operation
-------------------
``Observation`` ties the pure parts (``broker/events``, ``broker/subscriptions``,
``broker/metrics``, ``broker/workers``) to the running broker:

* It is the committer's ``CommitObserver``: ``batch_taken`` seals the events recorded so far
  into the batch being written, ``committed`` publishes them (and counts the commit), ``failed``
  keeps them for the retry. So an event leaves only after its write committed, in commit order.
* While at least one subscription exists, the core records events into ``pending``
  (``Core.record_events``); with none, the core is told to record nothing, and the only cost
  left on the hot path is the core's test of one attribute per operation.
* A connection with subscriptions is an ``EventSink``. After a publish, each connection whose
  subscriptions just got events is ``pump``-ed: its buffers are sent, one ``events`` message
  per subscription in turn, while the connection can take more (its transport is below its
  high-water mark). When the transport drains, the session pumps again. A connection that does
  not read stops the pump; its buffers then fill and lag (``broker/subscriptions``,
  invariant 2), so the broker's memory stays bounded whatever a subscriber does.

Invariants:

1. ``core.record_events`` is given ``pending`` exactly while ``subscriptions.active``.
2. A connection is in ``_sinks`` exactly while it has a subscription.
3. Every open connection has one ``WorkerInfo`` in ``workers`` (opened by the server when the
   connection is accepted, closed with it).
"""

from __future__ import annotations

import bisect
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final, Protocol

import msgpack

from broker.config import Settings
from broker.core import Core, CoreError
from broker.events import PendingEvents
from broker.log import get_logger
from broker.metrics import BrokerGauges, BrokerMetrics, QueueMetrics
from broker.subscriptions import SubscriptionLimits, SubscriptionRefused, Subscriptions
from broker.workers import WorkerTable
from protocol.observing import SUBSCRIBABLE, Metrics, Subscribe, Workers, events_frame

_log = get_logger("observe")

_REPLY_ROOM: Final = 64 << 10
"""Bytes of ``max_frame`` kept for what surrounds the queue maps of a ``metrics`` reply."""
_EVENTS_FRAME: Final = 256 << 10
"""Encoded events per ``events`` message, at most (one larger event still goes alone)."""

Body = dict[str, Any]


class EventSink(Protocol):
    """A connection as the event pump sees it (``broker.session.Session``)."""

    conn_id: int

    def can_send_events(self) -> bool:
        """Whether the connection is open and its transport below the high-water mark."""

    def send_events_frame(self, frame: bytes) -> None:
        """Write one encoded frame, after any replies already queued."""


class Observation:
    """Events, metrics and the workers table of one running broker.

    Args:
        core: the state machine (it records events while someone subscribes).
        settings: limits (subscriptions, buffers, frame sizes) and the journal's path.
        clock: wall-clock milliseconds.
    """

    def __init__(self, core: Core, settings: Settings, clock: Callable[[], int]) -> None:
        self.core = core
        self.pending = PendingEvents()
        self.subscriptions = Subscriptions(SubscriptionLimits(
            max_events=settings.subscription_buffer_events,
            max_bytes=settings.subscription_buffer_bytes,
            max_subscribers=settings.max_subscriptions,
        ))
        self.metrics = BrokerMetrics(clock())
        self.workers = WorkerTable()
        self._clock = clock
        self._sinks: dict[int, EventSink] = {}
        self._max_frame = settings.max_frame
        self._frame_budget = max(1, min(_EVENTS_FRAME,
                                        settings.max_frame - settings.max_payload - 4096))
        self._journal_path: Path = settings.journal_path

    # ------------------------------------------------------------------ CommitObserver

    def batch_taken(self) -> None:
        self.pending.begin_batch()

    def committed(self, rows: int | None, seconds: float) -> None:
        if rows is not None:
            self.metrics.commit_succeeded(rows, seconds * 1000.0, self._clock())
        committed = self.pending.commit_succeeded()
        if not committed.events and not committed.dropped:
            return
        for sub in self.subscriptions.publish(committed):
            sink = self._sinks.get(sub.conn_id)
            if sink is not None:
                self.pump(sink)

    def failed(self) -> None:
        self.metrics.commit_failed(self._clock())
        self.pending.commit_failed()

    # ------------------------------------------------------------------ subscriptions

    def subscribe(self, sink: EventSink, request: Subscribe) -> Body:
        """Handle ``subscribe`` for connection ``sink``; the reply body.

        Raises:
            CoreError: ``BAD_ARGUMENT`` or ``OVERLOADED`` (``broker/subscriptions``).
        """
        try:
            sub = self.subscriptions.subscribe(
                sink.conn_id, request.queues, request.kinds or SUBSCRIBABLE,
                self.pending.next_seq,
            )
        except SubscriptionRefused as exc:
            raise CoreError(exc.code, exc.message) from None
        self._sinks[sink.conn_id] = sink
        self.core.record_events(self.pending)
        _log.info("subscribed", conn=sink.conn_id, sub=sub.id,
                  queues=None if sub.queues is None else len(sub.queues), kinds=len(sub.kinds))
        return {"sub": sub.id, "seq": sub.start_seq}

    def unsubscribe(self, conn_id: int, sub_id: int) -> Body:
        """Handle ``unsubscribe``; the reply body."""
        removed = self.subscriptions.unsubscribe(conn_id, sub_id)
        self._forget_if_idle(conn_id)
        return {"removed": removed is not None}

    def connection_closed(self, conn_id: int) -> None:
        """Drop a closed connection's subscriptions and its ``WorkerInfo``."""
        self.workers.close(conn_id)
        if self.subscriptions.drop_connection(conn_id):
            self._forget_if_idle(conn_id)

    def _forget_if_idle(self, conn_id: int) -> None:
        if not self.subscriptions.of_connection(conn_id):
            self._sinks.pop(conn_id, None)
        if not self.subscriptions.active:
            self.core.record_events(None)

    def pump(self, sink: EventSink) -> None:
        """Send ``sink``'s buffered events while it can take more, one message per
        subscription in turn (so one busy subscription cannot starve another)."""
        subs = self.subscriptions.of_connection(sink.conn_id)
        take = self.subscriptions.take
        budget = self._frame_budget
        while sink.can_send_events():
            sent = False
            for sub in subs:
                if sub.buffer and sink.can_send_events():
                    sink.send_events_frame(events_frame(sub.id, take(sub, budget)))
                    sent = True
            if not sent:
                return

    # ------------------------------------------------------------------ metrics, workers

    def metrics_body(self, request: Metrics, now: int, connections: int) -> Body:
        """The ``metrics`` reply (SPEC §8.22): the broker's map and a page of queue maps."""
        per_queue = self.core.queue_metrics()
        if request.queues is not None:
            names = list(dict.fromkeys(request.queues))
            following = None
        else:
            ordered = sorted(per_queue)
            start = 0 if request.after is None else bisect.bisect_right(ordered, request.after)
            names = ordered[start:start + request.limit]
            following = names[-1] if start + request.limit < len(ordered) else None
        empty = QueueMetrics()
        queues: dict[str, Body] = {}
        room = self._max_frame - _REPLY_ROOM
        for index, name in enumerate(names):
            body = per_queue.get(name, empty).to_wire(now, buckets=request.buckets)
            room -= len(msgpack.packb(body)) + 4 * len(name) + 8
            if queues and room < 0:  # the size cap: page on from the last one listed
                following = names[index - 1] if request.queues is None else None
                break
            queues[name] = body
        gauges = BrokerGauges(
            connections=connections,
            subscriptions=self.subscriptions.count,
            queues=len(per_queue),
            rss_bytes=_rss_bytes(),
            journal_bytes=_file_size(self._journal_path),
            wal_bytes=_file_size(Path(f"{self._journal_path}-wal")),
        )
        return {
            "broker": self.metrics.to_wire(now, gauges, buckets=request.buckets),
            "queues": queues,
            "next": following,
        }

    def workers_body(self, request: Workers) -> Body:
        """The ``workers`` reply (SPEC §8.23)."""
        workers, total = self.workers.page(
            include_all=request.include_all, offset=request.offset, limit=request.limit,
            held=self.core.held_by, max_bytes=self._max_frame - _REPLY_ROOM,
            size=lambda body: len(msgpack.packb(body)),
        )
        return {"workers": workers, "total": total}


def _rss_bytes() -> int | None:
    """The process's resident memory, from ``/proc`` (``None`` where there is none)."""
    try:
        with open("/proc/self/statm", "rb") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None


def _file_size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0
