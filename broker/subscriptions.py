"""Subscriptions to job events: who wants which events, and each subscriber's bounded buffer.

Theory of operation
-------------------
A connection subscribes to some queues (or all) and some event kinds. ``publish`` receives the
events of one commit (``broker.events.CommittedEvents``) and appends each to the buffer of every
subscription that asked for its kind and queue: the index is kind -> queue -> subscriptions, so
one event costs two dict lookups plus O(1) per subscription it matches, never a scan of the
others. The I/O layer ``take``s a buffer's encoded events a frame at a time while the
connection's output has room, and stops taking when it has not: then the buffer fills up.

Invariants:

1. A subscription receives only events recorded after it subscribed (``seq >= start_seq``), only
   for the queues (or all queues) and kinds it asked for, each at most once, in ``seq`` order.
   ``lagged`` is delivered whatever the kinds.
2. A buffer holds at most ``max(max_events, 2)`` messages and at most ``max(max_bytes, size of
   a lagged + size of the largest event)`` encoded bytes. An event that would cross a bound
   drops every buffered message; the buffer becomes one ``lagged`` event counting the events
   lost (a dropped ``lagged`` passes its count on), followed by the new event, and the
   subscriber keeps receiving. So the ``lagged`` counts a subscriber receives add up to the
   events it missed, and a single event larger than ``max_bytes`` still reaches a reader.
3. Dropping the whole buffer, rather than the oldest event one at a time, gives a slow subscriber
   a whole buffer of headroom before it lags again: it sees rare, large gaps instead of a
   trickle of small ones, and overflow costs one clear per buffer-full (O(1) per event,
   amortized). Closing the subscriber instead would punish a reader that is only briefly slow;
   a client that cannot accept gaps resubscribes and reads the jobs' state (``get``).
4. Nothing is bounded by trust: queues per subscription (``max_queues``, else ``BAD_ARGUMENT``),
   subscriptions per connection and in the broker (``OVERLOADED``). Event memory is at most
   about ``max_subscribers * (max_bytes + largest event)``, usually far less (buffers share
   the events).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Collection, Iterable
from dataclasses import dataclass

from broker.events import CommittedEvents, DroppedCount, Event, lagged
from protocol.errors import ErrorCode
from protocol.observing import EventKind


class SubscriptionRefused(Exception):
    """A ``subscribe`` the broker will not take (the session answers with ``code``).

    Attributes:
        code: ``BAD_ARGUMENT`` (bad queues or kinds) or ``OVERLOADED`` (a limit is reached).
        message: for humans; names the limit or the field.
    """

    def __init__(self, code: ErrorCode, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


@dataclass(frozen=True, slots=True)
class SubscriptionLimits:
    """Bounds on subscriptions (invariant 4)."""

    max_events: int = 10_000
    """Events buffered per subscription before it lags."""
    max_bytes: int = 1 << 20
    """Encoded bytes buffered per subscription before it lags (one larger event still fits
    into an empty buffer, so a reader always gets big results)."""
    max_per_connection: int = 16
    max_subscribers: int = 1_000
    """Subscriptions in the whole broker."""
    max_queues: int = 1_000
    """Queues named by one subscription."""


class Subscription:
    """One subscriber's filter and bounded buffer (see the module's invariants 1 and 2).

    ``buffer`` holds events and the ``lagged`` events that stand for dropped ones, in the order
    the subscriber gets them.
    """

    __slots__ = (
        "buffer", "buffered_bytes", "conn_id", "delivered", "dropped", "id", "kinds", "queues",
        "start_seq",
    )

    def __init__(
        self, sub_id: int, conn_id: int, queues: frozenset[str] | None,
        kinds: frozenset[EventKind], start_seq: int,
    ) -> None:
        self.id = sub_id
        self.conn_id = conn_id
        self.queues = queues
        """``None`` for every queue."""
        self.kinds = kinds
        self.start_seq = start_seq
        self.buffer: deque[Event] = deque()
        self.buffered_bytes = 0
        self.delivered = 0
        """Messages taken (events and ``lagged``)."""
        self.dropped = 0
        """Events dropped over the subscription's life (the sum of its ``lagged`` counts)."""

    def __len__(self) -> int:
        return len(self.buffer)

    def _overflow(self) -> None:
        """Replace the buffer by one ``lagged`` counting everything it stood for."""
        buffer = self.buffer
        last = buffer[-1]
        lost = fresh = 0  # fresh: real events dropped now (a lagged's count was counted before)
        for event in buffer:
            if event.kind is EventKind.LAGGED:
                lost += event.extra[0]
            else:
                fresh += 1
        lost += fresh
        self.dropped += fresh
        buffer.clear()
        marker = lagged(lost, last.seq, last.time)
        buffer.append(marker)
        self.buffered_bytes = len(marker.wire())

    def _lose(self, count: int, last_seq: int, time: int) -> None:
        """Append ``lagged`` for ``count`` events nobody buffered (merged into a last one)."""
        buffer = self.buffer
        self.dropped += count
        if buffer and buffer[-1].kind is EventKind.LAGGED:
            previous = buffer.pop()
            self.buffered_bytes -= len(previous.wire())
            count += previous.extra[0]
            last_seq = max(last_seq, previous.seq)  # groups arrive by (queue, kind), not seq
            time = max(time, previous.time)
        marker = lagged(count, last_seq, time)
        buffer.append(marker)
        self.buffered_bytes += len(marker.wire())


class Subscriptions:
    """Every subscription, indexed by kind then queue, so publishing one event touches only the
    subscriptions that want it.

    Args:
        limits: the bounds (``SubscriptionLimits``).
    """

    __slots__ = ("_by_conn", "_index", "_next_id", "active", "count", "limits")

    def __init__(self, limits: SubscriptionLimits | None = None) -> None:
        self.limits = limits or SubscriptionLimits()
        self.active = False
        """Whether any subscription exists: the one thing the hot path tests."""
        self.count = 0
        self._next_id = 0
        self._by_conn: dict[int, dict[int, Subscription]] = {}
        # kind -> queue (None: every queue) -> subscriptions, as ordered sets
        self._index: dict[EventKind, dict[str | None, dict[Subscription, None]]] = {}

    def subscribe(
        self, conn_id: int, queues: Collection[str] | None, kinds: frozenset[EventKind],
        start_seq: int,
    ) -> Subscription:
        """Add a subscription.

        Args:
            conn_id: the subscribing connection.
            queues: the queues to follow, or ``None`` for every queue (present and future).
            kinds: the kinds to receive (``protocol.observing.check_kinds``); ``lagged``
                comes regardless.
            start_seq: the first ``seq`` it receives (``PendingEvents.next_seq``: events of
                writes applied before the subscription are not sent).

        Returns:
            The subscription; its ``id`` is unique in the broker's life.

        Raises:
            SubscriptionRefused: ``BAD_ARGUMENT`` for an empty queue list or more than
                ``max_queues`` queues; ``OVERLOADED`` when the connection has
                ``max_per_connection`` subscriptions or the broker ``max_subscribers``.
        """
        limits = self.limits
        if queues is not None:
            if not queues:
                raise SubscriptionRefused(
                    ErrorCode.BAD_ARGUMENT, "queues: expected at least one queue, or nil for all"
                )
            if len(queues) > limits.max_queues:
                raise SubscriptionRefused(
                    ErrorCode.BAD_ARGUMENT,
                    f"queues: expected at most {limits.max_queues} queues, or nil for all",
                )
        own = self._by_conn.get(conn_id)
        if own is not None and len(own) >= limits.max_per_connection:
            raise SubscriptionRefused(
                ErrorCode.OVERLOADED,
                f"this connection has {limits.max_per_connection} subscriptions (the limit)",
            )
        if self.count >= limits.max_subscribers:
            raise SubscriptionRefused(
                ErrorCode.OVERLOADED,
                f"the broker has {limits.max_subscribers} subscriptions (the limit)",
            )
        self._next_id += 1
        sub = Subscription(
            self._next_id, conn_id, None if queues is None else frozenset(queues), kinds,
            start_seq,
        )
        keys: Iterable[str | None] = (None,) if sub.queues is None else sub.queues
        for kind in kinds:
            by_queue = self._index.setdefault(kind, {})
            for key in keys:
                by_queue.setdefault(key, {})[sub] = None
        self._by_conn.setdefault(conn_id, {})[sub.id] = sub
        self.count += 1
        self.active = True
        return sub

    def unsubscribe(self, conn_id: int, sub_id: int) -> Subscription | None:
        """Remove one of ``conn_id``'s subscriptions; ``None`` if it has no such one."""
        own = self._by_conn.get(conn_id)
        sub = None if own is None else own.pop(sub_id, None)
        if sub is None:
            return None
        if not own:
            del self._by_conn[conn_id]
        self._unindex(sub)
        return sub

    def drop_connection(self, conn_id: int) -> list[Subscription]:
        """Remove every subscription of a closed connection; returns them."""
        own = self._by_conn.pop(conn_id, None)
        if not own:
            return []
        for sub in own.values():
            self._unindex(sub)
        return list(own.values())

    def of_connection(self, conn_id: int) -> list[Subscription]:
        """``conn_id``'s subscriptions, oldest first."""
        return list(self._by_conn.get(conn_id, {}).values())

    def _unindex(self, sub: Subscription) -> None:
        keys: Iterable[str | None] = (None,) if sub.queues is None else sub.queues
        for kind in sub.kinds:
            by_queue = self._index[kind]
            for key in keys:
                subs = by_queue[key]
                del subs[sub]
                if not subs:
                    del by_queue[key]
            if not by_queue:
                del self._index[kind]
        sub.buffer.clear()
        sub.buffered_bytes = 0
        self.count -= 1
        self.active = self.count > 0

    def publish(self, committed: CommittedEvents) -> list[Subscription]:
        """Copy each committed event into the subscriptions that match it (invariants 1, 2),
        then the ``lagged`` share of any events ``PendingEvents`` could not keep
        (``broker.events``, invariant 2).

        Cost: nothing when there are no subscriptions; else two dict lookups per event plus
        O(1) per matching subscription (amortized: an overflow clears a buffer once).

        Returns:
            The subscriptions that had nothing to send before this call and have now: the I/O
            layer schedules a send for each.
        """
        if not self.active:
            return []
        index = self._index
        limits = self.limits
        max_events = limits.max_events
        max_bytes = limits.max_bytes
        woken: list[Subscription] = []
        for event in committed.events:
            by_queue = index.get(event.kind)
            if by_queue is None:
                continue
            named = by_queue.get(event.queue)
            every = by_queue.get(None)
            if not named and not every:
                continue
            size = len(event.wire())
            for subs in (named, every):
                if not subs:
                    continue
                for sub in subs:
                    if event.seq < sub.start_seq:
                        continue
                    buffer = sub.buffer
                    if not buffer:
                        woken.append(sub)
                    elif len(buffer) >= max_events or sub.buffered_bytes + size > max_bytes:
                        sub._overflow()
                    buffer.append(event)
                    sub.buffered_bytes += size
        if committed.dropped:
            self._publish_dropped(committed.dropped, woken)
        return woken

    def _publish_dropped(
        self, dropped: dict[tuple[str | None, EventKind], DroppedCount],
        woken: list[Subscription],
    ) -> None:
        """Give each subscription that would have matched an unkept event its ``lagged`` share.

        A group whose last event came before a subscription started is not counted for it; a
        group that straddles the start is counted whole (it may over-report by the events of
        that group recorded just before the subscription).
        """
        for (queue, kind), group in dropped.items():
            by_queue = self._index.get(kind)
            if by_queue is None:
                continue
            for key in (queue, None):
                for sub in by_queue.get(key, ()):
                    if group.last_seq < sub.start_seq:
                        continue
                    if not sub.buffer:
                        woken.append(sub)
                    sub._lose(group.count, group.last_seq, group.last_time)

    @staticmethod
    def take(sub: Subscription, max_bytes: int) -> list[bytes]:
        """Remove and return the encoded events that fit in ``max_bytes``, oldest first.

        At least one item is returned when anything waits, even if it alone exceeds
        ``max_bytes``: the caller leaves room for the largest event (``max_payload`` plus a few
        hundred bytes) below its frame limit.
        """
        out: list[bytes] = []
        used = 0
        buffer = sub.buffer
        while buffer:
            item = buffer[0].wire()
            if out and used + len(item) > max_bytes:
                break
            buffer.popleft()
            out.append(item)
            used += len(item)
        sub.buffered_bytes -= used
        sub.delivered += len(out)
        return out
