"""Job events: what happened to jobs and queues, and the hand-off that publishes them only after
their write committed. The kinds and their fields are the wire's (``protocol.observing``).

Theory of operation
-------------------
A write that changes a job or a queue (an enqueue, a reservation, an ack, a lease that ran out,
a pause, ...) may produce events. They go to subscribers in three steps:

1. ``PendingEvents.record`` numbers an event (the broker-wide ``seq``) when its write is applied
   to the core. The event waits there with the other events of writes not committed yet.
2. The committer calls ``begin_batch`` when it takes the core's changes for a transaction: the
   events recorded so far belong to that transaction. After the transaction it calls
   ``commit_succeeded`` (which hands the batch's events back for publishing) or ``commit_failed``
   (the events are held: a failed batch's changes are merged into the next batch and written
   again, so its events are published when that retry commits; they describe the same changes).
3. ``broker.subscriptions.Subscriptions.publish`` copies each event into the bounded buffer of
   every subscription that asked for its queue and kind; the I/O layer sends a buffer as
   ``events`` messages (``protocol.observing.events_message``) while the connection has room.

Recording costs nothing unless someone subscribed: callers test ``Subscriptions.active`` (one
attribute) before building an event, so a broker without subscribers does one attribute load per
write and allocates nothing for events.

Invariants:

1. An event is published only after the transaction holding its write committed (no event for a
   change a crash could undo), and events are published in ``seq`` order: batches commit one at a
   time and in order, and a held batch's events go out before any later ones.
2. ``PendingEvents`` keeps at most ``max_pending`` events (a journal outage can last long while
   writes go on); past it, events are counted per ``(queue, kind)`` instead of kept, until those
   counts are published, so every kept event comes before every dropped one. Each subscription
   that would have matched a dropped event gets ``lagged`` for it, after the kept events.
3. Sequence numbers start at 1 at every broker start (subscriptions never survive a restart),
   and increase by one per recorded event, kept or dropped.
4. An event is encoded to msgpack once, when the first subscription takes it in; every buffer
   shares that ``bytes`` object.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import msgpack

from protocol.observing import KIND_FIELDS, EventKind

_pack = msgpack.Packer(use_bin_type=True).pack


class Event:
    """One event. ``extra`` holds the kind's own fields in ``KIND_FIELDS`` order."""

    __slots__ = ("_wire", "extra", "job_id", "kind", "name", "queue", "seq", "time")

    def __init__(
        self, seq: int, kind: EventKind, time: int, queue: str | None, job_id: str | None,
        name: str | None, extra: tuple[Any, ...] = (),
    ) -> None:
        self.seq = seq
        self.kind = kind
        self.time = time
        self.queue = queue
        self.job_id = job_id
        self.name = name
        self.extra = extra
        self._wire: bytes | None = None

    def to_wire(self) -> dict[str, Any]:
        """The event as its wire map (``docs/metrics-and-events.md``, "Events")."""
        body: dict[str, Any] = {
            # A StrEnum member packs as its value; ``.value`` would cost an enum lookup.
            "seq": self.seq, "kind": self.kind, "time": self.time, "queue": self.queue,
            "job_id": self.job_id, "name": self.name,
        }
        body.update(zip(KIND_FIELDS[self.kind], self.extra, strict=True))
        return body

    def wire(self) -> bytes:
        """The msgpack encoding of ``to_wire()``, built once and shared by every buffer."""
        encoded = self._wire
        if encoded is None:
            packed: bytes = _pack(self.to_wire())
            encoded = self._wire = packed
        return encoded

    def __repr__(self) -> str:
        return f"Event({self.to_wire()!r})"


def lagged(dropped: int, last_seq: int, time: int) -> Event:
    """The ``lagged`` event: ``dropped`` events up to ``seq == last_seq`` were lost."""
    return Event(last_seq, EventKind.LAGGED, time, None, None, None, (dropped,))


@dataclass(slots=True)
class DroppedCount:
    """Events of one ``(queue, kind)`` that ``PendingEvents`` counted instead of keeping."""

    count: int
    last_seq: int
    last_time: int


@dataclass(slots=True)
class CommittedEvents:
    """What one successful commit publishes: ``events`` in order, then the ``dropped`` ones
    (all recorded after the last of ``events``)."""

    events: list[Event]
    dropped: dict[tuple[str | None, EventKind], DroppedCount]


class PendingEvents:
    """Events of writes applied but not yet committed, handed out in commit order (invariants
    1 and 4). The committer's contract, one batch at a time:

    ``begin_batch()`` when it takes the core's changes; then exactly one of
    ``commit_succeeded()`` (publish what it returns) or ``commit_failed()`` (keep everything:
    the next batch rewrites these changes, and its success publishes these events first).

    Args:
        max_pending: events kept before further ones are only counted.
    """

    __slots__ = ("_batch", "_batch_dropped", "_open", "_open_dropped", "max_pending", "next_seq")

    def __init__(self, max_pending: int = 100_000) -> None:
        self.max_pending = max_pending
        self.next_seq = 1
        # "open": recorded since the last begin_batch; "batch": taken by the running batch, plus
        # what failed batches before it took.
        self._open: list[Event] = []
        self._batch: list[Event] = []
        self._open_dropped: dict[tuple[str | None, EventKind], DroppedCount] = {}
        self._batch_dropped: dict[tuple[str | None, EventKind], DroppedCount] = {}

    def __len__(self) -> int:
        """Events kept (not counting the dropped ones)."""
        return len(self._open) + len(self._batch)

    def record(
        self, kind: EventKind, time: int, queue: str | None, job_id: str | None,
        name: str | None, extra: tuple[Any, ...] = (),
    ) -> None:
        """Number an event for a write just applied; it is published after that write commits.

        Callers test ``Subscriptions.active`` first; recording with no subscriber only wastes
        work. ``extra`` holds ``KIND_FIELDS[kind]`` in order.
        """
        seq = self.next_seq
        self.next_seq = seq + 1
        if (len(self._open) + len(self._batch) < self.max_pending
                and not self._open_dropped and not self._batch_dropped):
            self._open.append(Event(seq, kind, time, queue, job_id, name, extra))
            return
        # Once one event is dropped, every later one is dropped until the drops are published,
        # so kept events always come before dropped ones and subscribers see seq order.
        group = self._open_dropped.get((queue, kind))
        if group is None:
            self._open_dropped[(queue, kind)] = DroppedCount(1, seq, time)
        else:
            group.count += 1
            group.last_seq = seq
            group.last_time = time

    def begin_batch(self) -> None:
        """The committer took the core's changes: what was recorded belongs to this batch."""
        if self._open:
            self._batch.extend(self._open)
            self._open = []
        if self._open_dropped:
            _merge(self._batch_dropped, self._open_dropped)
            self._open_dropped = {}

    def commit_succeeded(self) -> CommittedEvents:
        """The batch committed: its events (and those held from failed batches) to publish now.

        Events recorded after ``begin_batch`` stay for the next batch.
        """
        committed = CommittedEvents(self._batch, self._batch_dropped)
        self._batch = []
        self._batch_dropped = {}
        return committed

    def commit_failed(self) -> None:
        """The batch failed: keep its events for the retry (the committer rewrites the changes
        with the next batch, whose ``begin_batch`` adds the newer events behind these)."""

    def pending(self) -> list[Event]:
        """Every kept event not yet handed out, oldest first (for tests and statistics)."""
        return [*self._batch, *self._open]


def _merge(into: dict[tuple[str | None, EventKind], DroppedCount],
           newer: dict[tuple[str | None, EventKind], DroppedCount]) -> None:
    for key, group in newer.items():
        old = into.get(key)
        if old is None:
            into[key] = group
        else:
            old.count += group.count
            old.last_seq = group.last_seq
            old.last_time = group.last_time
