"""The event hub's per-stream policy without I/O: filters, the bounded buffer that turns an
overflow into one ``lagged`` event, and ``lagged`` events passing every filter."""

from __future__ import annotations

import asyncio
from typing import Any

from client.gateway.hub import Listener, Message, sse_message
from client.watch import JobEvent


def body(seq: int, kind: str = "added", queue: str = "q") -> Message:
    event = {"seq": seq, "kind": kind, "time": 1000 + seq, "queue": queue, "job_id": str(seq),
             "name": "n"}
    return event, sse_message(event)


def bodies(got: list[Message] | None) -> list[dict[str, Any]]:
    assert got is not None
    return [event for event, _ in got]


def event(kind: str, queue: str | None) -> JobEvent:
    return JobEvent(kind, 1, 1.0, queue, None, None, {})


def test_filters_by_queue_and_kind_but_lagged_always_passes() -> None:
    listener = Listener(frozenset({"a"}), frozenset({"completed"}), 10)
    assert listener.wants(event("completed", "a"))
    assert not listener.wants(event("completed", "b"))
    assert not listener.wants(event("added", "a"))
    assert listener.wants(event("lagged", None))
    assert Listener(None, None, 10).wants(event("paused", "z"))


def test_an_overflow_becomes_one_lagged_event_counting_what_was_dropped() -> None:
    listener = Listener(None, None, 3)
    for seq in range(1, 4):
        listener.put(body(seq))
    listener.put(body(4))  # overflows: 1..3 dropped
    listener.put(body(5))
    listener.put(body(6, "completed"))  # buffer full again (lagged, 4, 5): dropped 2 + 2 more
    got = bodies(asyncio.run(listener.get(0)))
    assert [b["kind"] for b in got] == ["lagged", "completed"]
    assert got[0]["dropped"] == 5 and got[0]["seq"] == 5
    assert asyncio.run(listener.get(0)) == []


def test_an_unknown_loss_stays_unknown() -> None:
    listener = Listener(None, None, 2)
    unknown = {**body(1, "lagged")[0], "dropped": None}
    listener.put((unknown, sse_message(unknown)))
    listener.put(body(2))
    listener.put(body(3))
    got = asyncio.run(listener.get(0))
    assert got is not None
    event, text = got[0]
    assert event["kind"] == "lagged" and event["dropped"] is None
    assert text.startswith("id: 2\nevent: lagged\ndata: {") and '"dropped":null' in text


def test_a_closed_listener_ends_after_what_it_holds() -> None:
    listener = Listener(None, None, 5)
    listener.put(body(1))
    listener.close()
    assert asyncio.run(listener.get(0)) == [body(1)]
    assert asyncio.run(listener.get(0)) is None
