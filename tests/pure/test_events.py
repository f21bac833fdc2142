"""Events and subscriptions, pure tier: the event model, the commit hand-off (``PendingEvents``),
the subscription index, bounded buffers and ``lagged`` accounting. No socket, no thread."""

from __future__ import annotations

from typing import Any

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from broker.events import CommittedEvents, Event, PendingEvents
from broker.subscriptions import (
    Subscription,
    SubscriptionLimits,
    SubscriptionRefused,
    Subscriptions,
)
from protocol.errors import ErrorCode, ProtocolError
from protocol.observing import (
    KIND_FIELDS,
    QUEUE_KINDS,
    SUBSCRIBABLE,
    EventKind,
    check_kinds,
    events_frame,
)

ADDED = EventKind.ADDED
COMPLETED = EventKind.COMPLETED
LAGGED = EventKind.LAGGED
ALL_KINDS = frozenset(SUBSCRIBABLE)


def committed(*events: Event) -> CommittedEvents:
    return CommittedEvents(list(events), {})


def ev(seq: int, kind: EventKind = ADDED, queue: str = "q", size: int = 0) -> Event:
    extra: tuple[Any, ...] = tuple(None for _ in KIND_FIELDS[kind])
    if kind is COMPLETED:
        extra = (1, b"x" * size)
    return Event(seq, kind, 1_000 + seq, queue, f"j{seq}", "task", extra)


def decoded(items: list[bytes]) -> list[dict[str, Any]]:
    return [msgpack.unpackb(item, raw=False) for item in items]


def drain(subs: Subscriptions, sub: Subscription) -> list[dict[str, Any]]:
    return decoded(subs.take(sub, 1 << 30))


# --------------------------------------------------------------------------- the event model


def test_every_kind_declares_its_fields() -> None:
    assert set(KIND_FIELDS) == set(EventKind)
    assert LAGGED not in SUBSCRIBABLE
    assert QUEUE_KINDS <= SUBSCRIBABLE


def test_wire_map_has_common_and_kind_fields() -> None:
    event = Event(7, EventKind.FAILED, 123, "mail", "42", "send", (2, "boom", True, 5_000, 3))
    assert event.to_wire() == {
        "seq": 7, "kind": "failed", "time": 123, "queue": "mail", "job_id": "42",
        "name": "send", "attempt": 2, "error": "boom", "will_retry": True, "run_at": 5_000,
        "max_attempts": 3,
    }


def test_wire_is_encoded_once_and_decodes_to_the_map() -> None:
    event = Event(1, COMPLETED, 5, "q", "1", "t", (1, b"\x00result"))
    first = event.wire()
    assert event.wire() is first
    assert msgpack.unpackb(first, raw=False) == event.to_wire()


def test_wrong_number_of_kind_fields_is_a_bug_caught_at_encoding() -> None:
    with pytest.raises(ValueError):
        Event(1, COMPLETED, 5, "q", "1", "t", (1,)).to_wire()


@pytest.mark.parametrize("count", [0, 1, 15, 16, 17, 65_535, 65_536])
def test_events_frame_is_one_valid_message(count: int) -> None:
    items = [ev(i).wire() for i in range(1, count + 1)]
    frame = events_frame(9, items)
    assert int.from_bytes(frame[:4], "big") == len(frame) - 4
    body = msgpack.unpackb(frame[4:], raw=False)
    assert body[:2] == [3, "events"]
    assert body[2]["sub"] == 9
    assert [e["seq"] for e in body[2]["events"]] == list(range(1, count + 1))


# --------------------------------------------------------------------------- kinds


def test_check_kinds() -> None:
    assert check_kinds(("completed", "failed", "completed"), "kinds") == {
        COMPLETED, EventKind.FAILED
    }


@pytest.mark.parametrize(("value", "field"), [
    (("nope",), "kinds[0]"), (("completed", "lagged"), "kinds[1]"), ((), "kinds"),
    (("completed", 3), "kinds[1]"), ("completed", "kinds"),
])
def test_check_kinds_refuses(value: object, field: str) -> None:
    with pytest.raises(ProtocolError) as caught:
        check_kinds(value, "kinds")
    assert caught.value.code is ErrorCode.BAD_ARGUMENT
    assert caught.value.field == field


# --------------------------------------------------------------------------- the index


def test_no_subscriber_costs_nothing() -> None:
    subs = Subscriptions()
    assert subs.active is False
    event = ev(1)
    assert subs.publish(committed(event)) == []
    assert event._wire is None  # not even encoded


def test_events_reach_only_the_queues_and_kinds_asked_for() -> None:
    subs = Subscriptions()
    mail = subs.subscribe(1, ["mail"], frozenset({COMPLETED}), 1)
    every = subs.subscribe(2, None, ALL_KINDS, 1)
    both = subs.subscribe(3, ["mail", "sms"], ALL_KINDS, 1)
    woken = subs.publish(committed(
        ev(1, ADDED, "mail"), ev(2, COMPLETED, "mail"), ev(3, COMPLETED, "sms"),
        ev(4, COMPLETED, "other"),
    ))
    assert set(woken) == {mail, every, both}
    assert [e["seq"] for e in drain(subs, mail)] == [2]
    assert [e["seq"] for e in drain(subs, every)] == [1, 2, 3, 4]
    assert [e["seq"] for e in drain(subs, both)] == [1, 2, 3]


def test_events_before_the_subscription_are_not_sent() -> None:
    subs = Subscriptions()
    sub = subs.subscribe(1, None, ALL_KINDS, start_seq=5)
    subs.publish(committed(ev(3), ev(4), ev(5), ev(6)))
    assert [e["seq"] for e in drain(subs, sub)] == [5, 6]


def test_woken_only_when_a_buffer_goes_from_empty_to_not_empty() -> None:
    subs = Subscriptions()
    sub = subs.subscribe(1, None, ALL_KINDS, 1)
    assert subs.publish(committed(ev(1))) == [sub]
    assert subs.publish(committed(ev(2))) == []
    drain(subs, sub)
    assert subs.publish(committed(ev(3))) == [sub]


def test_unsubscribe_and_drop_connection_forget_the_subscription() -> None:
    subs = Subscriptions()
    a = subs.subscribe(1, ["q"], ALL_KINDS, 1)
    b = subs.subscribe(1, None, frozenset({ADDED}), 1)
    c = subs.subscribe(2, None, ALL_KINDS, 1)
    assert subs.unsubscribe(2, a.id) is None  # not that connection's
    assert subs.unsubscribe(1, a.id) is a
    assert subs.unsubscribe(1, a.id) is None
    assert subs.drop_connection(1) == [b]
    assert subs.of_connection(1) == []
    subs.publish(committed(ev(1)))
    assert len(a) == len(b) == 0 and len(c) == 1
    assert subs.unsubscribe(2, c.id) is c
    assert subs.active is False and subs.count == 0
    assert subs._index == {} and subs._by_conn == {}


# --------------------------------------------------------------------------- limits


def test_subscription_limits_have_codes() -> None:
    limits = SubscriptionLimits(max_per_connection=2, max_subscribers=3, max_queues=4)
    subs = Subscriptions(limits)

    def refused(conn: int, queues: list[str] | None) -> ErrorCode:
        with pytest.raises(SubscriptionRefused) as caught:
            subs.subscribe(conn, queues, ALL_KINDS, 1)
        return caught.value.code

    assert refused(1, []) is ErrorCode.BAD_ARGUMENT
    assert refused(1, [f"q{i}" for i in range(5)]) is ErrorCode.BAD_ARGUMENT
    subs.subscribe(1, [f"q{i}" for i in range(4)], ALL_KINDS, 1)
    subs.subscribe(1, None, ALL_KINDS, 1)
    assert refused(1, None) is ErrorCode.OVERLOADED  # per connection
    subs.subscribe(2, None, ALL_KINDS, 1)
    assert refused(3, None) is ErrorCode.OVERLOADED  # in the broker
    subs.drop_connection(2)
    subs.subscribe(3, None, ALL_KINDS, 1)


# --------------------------------------------------------------------------- bounded buffers


def test_overflow_becomes_one_lagged_and_the_subscriber_keeps_receiving() -> None:
    subs = Subscriptions(SubscriptionLimits(max_events=3))
    sub = subs.subscribe(1, None, ALL_KINDS, 1)
    subs.publish(committed(*(ev(i) for i in range(1, 8))))
    # 1,2,3 fill it; 4 overflows: [lagged(3), 4]; 5 fills; 6 overflows: [lagged(3 + 2), 6]; 7.
    got = drain(subs, sub)
    assert [(e["kind"], e.get("dropped")) for e in got] == [
        ("lagged", 5), ("added", None), ("added", None)
    ]
    assert got[0]["seq"] == 5  # the last event lost
    assert [e["seq"] for e in got[1:]] == [6, 7]
    assert sub.dropped == 5
    subs.publish(committed(ev(8)))
    assert [e["seq"] for e in drain(subs, sub)] == [8]


def test_byte_bound_and_a_single_large_event_still_arrives() -> None:
    subs = Subscriptions(SubscriptionLimits(max_bytes=1_000))
    sub = subs.subscribe(1, None, ALL_KINDS, 1)
    subs.publish(committed(ev(1, COMPLETED, size=5_000)))
    got = drain(subs, sub)
    assert [e["seq"] for e in got] == [1] and len(got[0]["result"]) == 5_000
    subs.publish(committed(ev(2, COMPLETED, size=600), ev(3, COMPLETED, size=600)))
    got = drain(subs, sub)
    assert [(e["kind"], e["seq"]) for e in got] == [("lagged", 2), ("completed", 3)]


def test_take_fills_a_frame_and_returns_at_least_one() -> None:
    subs = Subscriptions()
    sub = subs.subscribe(1, None, ALL_KINDS, 1)
    subs.publish(committed(*(ev(i, COMPLETED, size=100) for i in range(1, 11))))
    size = len(ev(1, COMPLETED, size=100).wire())
    first = subs.take(sub, 3 * size + 1)
    assert len(first) == 3
    assert len(subs.take(sub, 1)) == 1
    assert len(subs.take(sub, 1 << 20)) == 6
    assert subs.take(sub, 1 << 20) == []
    assert sub.buffered_bytes == 0 and sub.delivered == 10


@settings(max_examples=150, deadline=None)
@given(
    max_events=st.integers(2, 20),
    max_bytes=st.integers(50, 3_000),
    steps=st.lists(
        st.one_of(
            st.tuples(st.just("publish"), st.lists(st.integers(0, 400), min_size=1, max_size=30)),
            st.tuples(st.just("take"), st.integers(1, 2_000)),
        ),
        max_size=40,
    ),
)
def test_buffer_stays_bounded_and_lagged_counts_add_up(
    max_events: int, max_bytes: int, steps: list[tuple[str, Any]]
) -> None:
    subs = Subscriptions(SubscriptionLimits(max_events=max_events, max_bytes=max_bytes))
    sub = subs.subscribe(1, ["q"], ALL_KINDS, 1)
    seq = 0
    published = 0
    largest = 0
    received: list[dict[str, Any]] = []
    for action, arg in steps:
        if action == "publish":
            batch = []
            for size in arg:
                seq += 1
                event = ev(seq, COMPLETED, size=size)
                largest = max(largest, len(event.wire()))
                batch.append(event)
            batch.append(ev(seq + 1, COMPLETED, queue="elsewhere"))  # never matches
            seq += 1
            published += len(arg)
            subs.publish(committed(*batch))
        else:
            received += decoded(subs.take(sub, arg))
        lagged_size = 64
        assert len(sub.buffer) <= max(max_events, 2)
        assert sub.buffered_bytes <= max(max_bytes, lagged_size + largest)
        assert sub.buffered_bytes == sum(len(e.wire()) for e in sub.buffer)
    received += drain(subs, sub)
    events = [e for e in received if e["kind"] != "lagged"]
    lost = sum(e["dropped"] for e in received if e["kind"] == "lagged")
    assert len(events) + lost == published
    assert lost == sub.dropped
    seqs = [e["seq"] for e in events]
    assert seqs == sorted(set(seqs))
    assert all(e["queue"] == "q" for e in events)


# --------------------------------------------------------------------------- commit hand-off


def test_events_wait_for_their_commit() -> None:
    pending = PendingEvents()
    pending.record(ADDED, 1, "q", "a", "t", ("waiting", 1))
    pending.begin_batch()
    pending.record(ADDED, 2, "q", "b", "t", ("waiting", 2))  # applied during the commit
    out = pending.commit_succeeded()
    assert [e.job_id for e in out.events] == ["a"]
    assert [e.job_id for e in pending.pending()] == ["b"]
    pending.begin_batch()
    assert [e.job_id for e in pending.commit_succeeded().events] == ["b"]
    assert pending.commit_succeeded().events == []
    assert pending.next_seq == 3


def test_a_failed_batch_is_published_with_its_retry_in_order() -> None:
    pending = PendingEvents()
    pending.record(ADDED, 1, "q", "a", "t", ("waiting", 1))
    pending.begin_batch()
    pending.commit_failed()
    pending.record(COMPLETED, 2, "q", "a", "t", (1, b""))
    pending.begin_batch()
    pending.commit_failed()
    pending.record(ADDED, 3, "q", "b", "t", ("waiting", 3))
    pending.begin_batch()
    out = pending.commit_succeeded()
    assert [(e.seq, e.job_id) for e in out.events] == [(1, "a"), (2, "a"), (3, "b")]
    assert len(pending) == 0


def test_pending_is_bounded_and_drops_are_counted_per_queue_and_kind() -> None:
    pending = PendingEvents(max_pending=2)
    subs = Subscriptions()
    q1 = subs.subscribe(1, ["q1"], ALL_KINDS, 1)
    done = subs.subscribe(2, None, frozenset({COMPLETED}), 1)
    other = subs.subscribe(3, ["q3"], ALL_KINDS, 1)
    for i, (kind, queue) in enumerate(
        [(ADDED, "q1"), (ADDED, "q2"), (ADDED, "q1"), (COMPLETED, "q1"), (COMPLETED, "q2"),
         (ADDED, "q1")], start=1,
    ):
        extra = ("waiting", i) if kind is ADDED else (1, b"")
        pending.record(kind, i, queue, str(i), "t", extra)
    assert len(pending) == 2
    pending.begin_batch()
    subs.publish(pending.commit_succeeded())
    assert [(e["kind"], e["seq"], e.get("dropped")) for e in drain(subs, q1)] == [
        ("added", 1, None), ("lagged", 6, 3)
    ]
    assert [(e["kind"], e["seq"], e.get("dropped")) for e in drain(subs, done)] == [
        ("lagged", 5, 2)
    ]
    assert drain(subs, other) == []
    # Keeping resumes after the drops are published.
    pending.record(ADDED, 7, "q1", "7", "t", ("waiting", 7))
    pending.begin_batch()
    subs.publish(pending.commit_succeeded())
    assert [e["seq"] for e in drain(subs, q1)] == [7]


def test_drops_of_a_later_batch_wait_for_that_batch() -> None:
    pending = PendingEvents(max_pending=1)
    pending.record(ADDED, 1, "q", "a", "t", ("waiting", 1))
    pending.begin_batch()
    pending.record(ADDED, 2, "q", "b", "t", ("waiting", 2))  # dropped, in the next batch
    first = pending.commit_succeeded()
    assert [e.seq for e in first.events] == [1] and first.dropped == {}
    pending.record(ADDED, 3, "q", "c", "t", ("waiting", 3))  # still dropped: order
    pending.begin_batch()
    second = pending.commit_succeeded()
    assert second.events == []
    group = second.dropped[("q", ADDED)]
    assert (group.count, group.last_seq, group.last_time) == (2, 3, 3)


@settings(max_examples=200, deadline=None)
@given(
    steps=st.lists(st.sampled_from(["record", "begin", "ok", "fail"]), max_size=60),
    max_pending=st.integers(1, 8),
)
def test_publishing_follows_commits(steps: list[str], max_pending: int) -> None:
    """A model of the committer: events go out only when a batch that took them commits,
    in seq order, each exactly once (kept, or counted in a lagged)."""
    pending = PendingEvents(max_pending=max_pending)
    subs = Subscriptions(SubscriptionLimits(max_events=10_000))
    sub = subs.subscribe(1, None, ALL_KINDS, 1)
    taken: set[int] = set()  # seqs a begin_batch took
    recorded: list[int] = []
    in_batch = False
    received: list[dict[str, Any]] = []
    for step in steps:
        if step == "record":
            recorded.append(pending.next_seq)
            pending.record(ADDED, len(recorded), "q", str(len(recorded)), "t", ("waiting", 0))
        elif step == "begin" and not in_batch:
            pending.begin_batch()
            taken.update(recorded)
            in_batch = True
        elif step in ("ok", "fail") and in_batch:
            in_batch = False
            if step == "fail":
                pending.commit_failed()
                continue
            subs.publish(pending.commit_succeeded())
            got = drain(subs, sub)
            for event in got:
                assert event["seq"] in taken  # never an event of a write not yet committed
            received += got
    # Kept events and lagged ones (numbered by the last event they stand for) in seq order.
    seqs = [e["seq"] for e in received]
    assert seqs == sorted(set(seqs))
    out = sum(e.get("dropped", 1) for e in received)
    pending.begin_batch()
    rest = pending.commit_succeeded()
    left = len(rest.events) + sum(g.count for g in rest.dropped.values())
    assert out + left == len(recorded)
