"""Watching a broker: job events (``subscribe``, ``unsubscribe``, the ``events`` message), and the
``metrics`` and ``workers`` operations. Sans-I/O.

The event vocabulary (``EventKind``, each kind's fields in ``KIND_FIELDS``) is part of the wire
contract, so it lives here, used by the broker (``broker/events``) and the client alike. The four
operations are declared as ``protocol.operations`` declares the others; importing
``protocol.messages`` imports this module, so they are in ``OPERATIONS`` wherever requests are
parsed or built. ``docs/metrics-and-events.md`` (and ``protocol/SPEC.md``) give every field.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from enum import StrEnum
from typing import Any, Final, NamedTuple

import msgpack

from protocol.checks import MAX_COUNT, MAX_LIST_LIMIT, check_array, check_name, int_in, names
from protocol.errors import bad_argument
from protocol.operations import Field, Operation, declare


class EventKind(StrEnum):
    """Every event a subscription can receive. ``KIND_FIELDS`` gives each one's own fields."""

    ADDED = "added"
    """A job was enqueued (not a duplicate); ``state`` is waiting or delayed."""
    WAITING = "waiting"
    """A delayed job became due, or a failed job was retried (``retry_failed``)."""
    ACTIVE = "active"
    """A worker reserved the job; ``attempt`` is the attempt it started."""
    PROGRESS = "progress"
    """The worker reported progress."""
    COMPLETED = "completed"
    """The worker acked the job, with its result."""
    FAILED = "failed"
    """The worker failed the attempt; ``will_retry`` says whether another attempt comes."""
    DELAYED = "delayed"
    """The job entered ``delayed`` (added with a later run time, backoff after a failed attempt,
    released with a delay); follows the event that caused it."""
    LEASE_EXPIRED = "lease_expired"
    """The attempt ended without an outcome (the lease ran out, the worker's connection closed);
    it counts as a failed attempt: same fields as ``failed``."""
    RELEASED = "released"
    """The worker handed the job back without counting the attempt."""
    REMOVED = "removed"
    """The job was deleted (``reason``: cancelled, cleaned)."""
    PAUSED = "paused"
    RESUMED = "resumed"
    DRAINED = "drained"
    """The queue's last waiting job was reserved: nothing waits now."""
    LAGGED = "lagged"
    """Events were dropped because this subscription's buffer overflowed (never filtered)."""


KIND_FIELDS: Final[dict[EventKind, tuple[str, ...]]] = {
    EventKind.ADDED: ("state", "run_at"),
    EventKind.WAITING: (),
    EventKind.ACTIVE: ("attempt",),
    EventKind.PROGRESS: ("progress",),
    EventKind.COMPLETED: ("attempt", "result"),
    EventKind.FAILED: ("attempt", "error", "will_retry", "run_at", "max_attempts"),
    EventKind.DELAYED: ("run_at",),
    EventKind.LEASE_EXPIRED: ("attempt", "error", "will_retry", "run_at", "max_attempts"),
    EventKind.RELEASED: ("run_at",),
    EventKind.REMOVED: ("reason",),
    EventKind.PAUSED: (),
    EventKind.RESUMED: (),
    EventKind.DRAINED: (),
    EventKind.LAGGED: ("dropped",),
}
"""The fields each kind carries besides the common ones (``seq, kind, time, queue, job_id,
name``), in the order the broker's ``Event.extra`` holds them."""

QUEUE_KINDS: Final = frozenset({EventKind.PAUSED, EventKind.RESUMED, EventKind.DRAINED})
"""Events about a queue, not a job: their ``job_id`` and ``name`` are nil."""

SUBSCRIBABLE: Final = frozenset(EventKind) - {EventKind.LAGGED}
"""Kinds a subscription may ask for; ``lagged`` is always delivered."""

FINAL_KINDS: Final = frozenset({EventKind.COMPLETED, EventKind.FAILED, EventKind.LEASE_EXPIRED})
"""The kinds that may end a job (``failed``/``lease_expired`` when ``will_retry`` is false)."""

EVENTS: Final = "events"
"""The name of the EVENT message that carries job events: ``[3, "events", {sub, events}]``."""

MAX_SUBSCRIBE_QUEUES: Final = 1_000
MAX_KINDS: Final = 100


def check_kinds(value: Any, field: str) -> frozenset[EventKind]:
    """An array of 1..``MAX_KINDS`` event kinds other than ``lagged`` (repeats are harmless)."""
    kinds: set[EventKind] = set()
    for index, name in enumerate(check_array(value, field, MAX_KINDS)):
        try:
            kind = EventKind(name) if type(name) is str else None
        except ValueError:
            kind = None
        if kind is None or kind is EventKind.LAGGED:
            raise bad_argument(f"{field}[{index}]", "one of " + ", ".join(sorted(SUBSCRIBABLE)))
        kinds.add(kind)
    return frozenset(kinds)


def check_bool(value: Any, field: str) -> bool:
    """``true`` or ``false`` (never an int)."""
    if type(value) is not bool:
        raise bad_argument(field, "bool")
    return value


# --------------------------------------------------------------------------- events


class Subscribe(NamedTuple):
    queues: tuple[str, ...] | None = None
    """``None``: every queue, including those created later."""
    kinds: frozenset[EventKind] | None = None
    """``None``: every kind."""


class Subscribed(NamedTuple):
    sub: int
    """The subscription's id, in every ``events`` message for it."""
    seq: int
    """The first event sequence number it can receive."""


def parse_subscribed(body: Mapping[str, Any]) -> Subscribed:
    return Subscribed(body["sub"], body["seq"])


SUBSCRIBE: Final[Operation[Subscribe, Subscribed]] = declare(Operation(
    "subscribe", Subscribe,
    (Field("queues", names(MAX_SUBSCRIBE_QUEUES), None, to_wire=list),
     Field("kinds", check_kinds, None, to_wire=sorted)),
    reply=parse_subscribed,
    after_commit=False,
))
"""Reply: ``{sub, seq}``; then ``events`` messages for ``sub``."""


class Unsubscribe(NamedTuple):
    sub: int


def parse_removed_flag(body: Mapping[str, Any]) -> bool:
    return bool(body["removed"])


UNSUBSCRIBE: Final[Operation[Unsubscribe, bool]] = declare(Operation(
    "unsubscribe", Unsubscribe, (Field("sub", int_in(0, 2**53)),),
    reply=parse_removed_flag,
    after_commit=False,
))
"""Reply: ``{removed: bool}``; no ``events`` message of ``sub`` follows it."""


def events_frame(sub_id: int, items: Sequence[bytes]) -> bytes:
    """The frame (length prefix and body) of one ``[3, "events", {"sub": id, "events": [...]}]``
    message built from events already encoded (each a msgpack map): the broker packs each event
    once and shares the bytes among its subscribers."""
    packer = msgpack.Packer(use_bin_type=True)
    head: bytes = packer.pack_array_header(3) + packer.pack(3) + packer.pack(EVENTS)
    head += packer.pack_map_header(2) + packer.pack("sub") + packer.pack(sub_id)
    head += packer.pack(EVENTS) + packer.pack_array_header(len(items))
    size = len(head) + sum(len(item) for item in items)
    return b"".join((size.to_bytes(4, "big"), head, *items))


class EventBatch(NamedTuple):
    """An ``events`` message, taken apart (client side)."""

    sub: int
    events: list[dict[str, Any]]
    """Event maps, in ``seq`` order."""


def parse_events(body: Mapping[str, Any]) -> EventBatch:
    """The body of an ``events`` message (client side; unknown keys are ignored).

    Raises:
        KeyError, TypeError: the body is not an ``events`` body.
    """
    sub = body["sub"]
    events = body["events"]
    if type(sub) is not int or not isinstance(events, (list, tuple)):
        raise TypeError("an events body has an int sub and an array of events")
    return EventBatch(sub, [event for event in events if isinstance(event, dict)])


# --------------------------------------------------------------------------- metrics, workers


class Metrics(NamedTuple):
    queues: tuple[str, ...] | None = None
    after: str | None = None
    limit: int = 100
    buckets: bool = False


METRICS: Final[Operation[Metrics, dict[str, Any]]] = declare(Operation(
    "metrics", Metrics,
    (Field("queues", names(MAX_SUBSCRIBE_QUEUES), None, to_wire=list),
     Field("after", check_name, None),
     Field("limit", int_in(1, MAX_LIST_LIMIT), 100),
     Field("buckets", check_bool, False)),
    reply=dict,
    after_commit=False,
))
"""Reply: ``{broker: BrokerMetrics, queues: {name: QueueMetrics}, next: name or nil}``."""


class Workers(NamedTuple):
    include_all: bool = False
    limit: int = 100
    offset: int = 0


class WorkersPage(NamedTuple):
    workers: list[dict[str, Any]]
    total: int


def parse_workers(body: Mapping[str, Any]) -> WorkersPage:
    return WorkersPage(list(body["workers"]), body["total"])


WORKERS: Final[Operation[Workers, WorkersPage]] = declare(Operation(
    "workers", Workers,
    (Field("all", check_bool, False),
     Field("limit", int_in(1, MAX_LIST_LIMIT), 100),
     Field("offset", int_in(0, MAX_COUNT), 0)),
    reply=parse_workers,
    after_commit=False,
))
"""Reply: ``{workers: [Worker map], total: int}``, oldest connection first."""
