"""Job events, metrics and workers over real TCP (a broker on 127.0.0.1 port 0, a real SQLite
journal, raw protocol frames): what a subscriber receives and when, filters, limits, a slow
subscriber's lag, no event for a write whose commit failed, and the metrics and workers
replies."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from protocol.codec import FrameDecoder, encode_frames
from tests.conftest import RunningBroker
from tests.tools.wire import WireClient

Connect = Callable[..., Awaitable[WireClient]]
JOB = (None, "send", b"payload")


async def events_until(
    client: WireClient, count: int, within: float = 30.0
) -> list[dict[str, Any]]:
    """The next ``count`` job events, across ``events`` messages (other server events fail)."""
    out: list[dict[str, Any]] = []
    while len(out) < count:
        message = await client.next_event(within)
        assert message.event == "events", message
        out += message.body["events"]
    assert len(out) == count, out
    return out


async def no_events_pending(client: WireClient) -> None:
    """Fail if an event arrived: a ping's reply comes after anything written before it."""
    await client.ok("ping", {})
    assert client.events.empty(), [client.events.get_nowait() for _ in range(1)]


async def test_a_subscriber_sees_a_job_through_in_order(broker: RunningBroker,
                                                        wire: Connect) -> None:
    watcher = await wire(broker)
    producer = await wire(broker)
    subscribed = await watcher.ok("subscribe", {"queues": ("mail",)})
    assert subscribed["sub"] >= 1 and subscribed["seq"] >= 1

    (job_id,) = (await producer.ok("enqueue", {"queue": "mail", "jobs": (JOB,)}))["ids"]
    reserved = await producer.ok("reserve", {"queues": ("mail",)})
    token = reserved["jobs"][0][6]
    await producer.ok("progress", {"id": job_id, "token": token, "progress": {"pct": 50}})
    await producer.ok("ack", {"items": ((job_id, token, b"the result"),)})
    await producer.ok("enqueue", {"queue": "other", "jobs": (JOB,)})  # not followed

    events = await events_until(watcher, 5)
    assert [e["kind"] for e in events] == ["added", "active", "drained", "progress", "completed"]
    seqs = [e["seq"] for e in events]
    assert seqs == sorted(seqs) and seqs[0] >= subscribed["seq"]
    added, active, drained, progress, completed = events
    assert (added["queue"], added["job_id"], added["name"], added["state"]) == (
        "mail", job_id, "send", "waiting")
    assert active["attempt"] == 1
    assert (drained["job_id"], drained["name"]) == (None, None)
    assert progress["progress"] == {"pct": 50}
    assert (completed["result"], completed["attempt"]) == (b"the result", 1)
    assert all(type(e["time"]) is int for e in events)
    await no_events_pending(watcher)


async def test_kinds_and_all_queues(broker: RunningBroker, wire: Connect) -> None:
    watcher = await wire(broker)
    producer = await wire(broker)
    done = await watcher.ok("subscribe", {"kinds": ("completed", "failed", "lease_expired")})
    everything = await watcher.ok("subscribe", {})
    ids = (await producer.ok("enqueue", {"queue": "a", "jobs": (JOB, JOB)}))["ids"]
    jobs = (await producer.ok("reserve", {"queues": ("a",), "max": 2}))["jobs"]
    await producer.ok("ack", {"items": ((jobs[0][0], jobs[0][6], None),)})
    await producer.ok("fail", {"items": ((jobs[1][0], jobs[1][6], "boom", False),)})
    await producer.ok("pause", {"queue": "b"})

    by_sub: dict[int, list[dict[str, Any]]] = {done["sub"]: [], everything["sub"]: []}
    while len(by_sub[done["sub"]]) < 2 or len(by_sub[everything["sub"]]) < 8:
        message = await watcher.next_event()
        by_sub[message.body["sub"]] += message.body["events"]
    assert [(e["kind"], e["job_id"]) for e in by_sub[done["sub"]]] == [
        ("completed", ids[0]), ("failed", ids[1])]
    failed = by_sub[done["sub"]][1]
    assert (failed["error"], failed["will_retry"], failed["run_at"]) == ("boom", False, None)
    assert [e["kind"] for e in by_sub[everything["sub"]]] == [
        "added", "added", "active", "active", "drained", "completed", "failed", "paused"]


async def test_a_retry_sends_failed_then_delayed(broker: RunningBroker, wire: Connect) -> None:
    watcher = await wire(broker)
    producer = await wire(broker)
    await watcher.ok("subscribe", {"kinds": ("failed", "delayed", "released")})
    (job_id,) = (await producer.ok("enqueue", {"queue": "q", "jobs": (JOB,)}))["ids"]
    token = (await producer.ok("reserve", {"queues": ("q",)}))["jobs"][0][6]
    await producer.ok("fail", {"items": ((job_id, token, "later", True, 60_000),)})
    failed, delayed = await events_until(watcher, 2)
    assert (failed["kind"], failed["will_retry"], delayed["kind"]) == ("failed", True, "delayed")
    assert failed["run_at"] == delayed["run_at"] == failed["time"] + 60_000
    assert delayed["seq"] == failed["seq"] + 1


async def test_no_event_for_a_write_whose_commit_failed(broker: RunningBroker,
                                                       wire: Connect) -> None:
    watcher = await wire(broker)
    producer = await wire(broker)
    await watcher.ok("subscribe", {"queues": ("q",)})
    assert broker.server is not None
    journal = broker.server.journal
    await journal.set_size_limit(0)  # the file may not grow: as good as a full disk
    try:
        big = (None, "send", b"x" * 200_000)
        answer = await producer.call("enqueue", {"queue": "q", "jobs": (big, big, big)})
        assert getattr(answer, "code", None) == "JOURNAL_FAILURE", answer
        await no_events_pending(watcher)
    finally:
        await journal.set_size_limit(None)
    # The committer writes the retained change again; its events follow that commit.
    events = await events_until(watcher, 3)
    assert [e["kind"] for e in events] == ["added"] * 3


async def test_unsubscribe_and_limits(broker: RunningBroker, wire: Connect) -> None:
    watcher = await wire(broker)
    producer = await wire(broker)
    subs = [(await watcher.ok("subscribe", {}))["sub"] for _ in range(16)]
    refused = await watcher.error("subscribe", {})
    assert refused.code == "OVERLOADED" and "16 subscriptions" in refused.message
    bad = await watcher.error("subscribe", {"kinds": ("completed", "lagged")})
    assert (bad.code, bad.message.split(":")[0]) == ("BAD_ARGUMENT", "kinds[1]")
    too_many = await watcher.error("subscribe", {"queues": tuple(f"q{i}" for i in range(1001))})
    assert too_many.code == "BAD_ARGUMENT"
    assert await producer.ok("unsubscribe", {"sub": subs[0]}) == {"removed": False}  # not its own
    for sub in subs:
        assert await watcher.ok("unsubscribe", {"sub": sub}) == {"removed": True}
    assert await watcher.ok("unsubscribe", {"sub": subs[0]}) == {"removed": False}
    await producer.ok("enqueue", {"queue": "q", "jobs": (JOB,)})
    await no_events_pending(watcher)
    assert broker.server is not None
    assert broker.server.core._state.events is None  # nobody subscribes: nothing is recorded


async def test_a_subscriber_that_does_not_read_lags_and_then_catches_up(
    start_broker: Callable[..., Awaitable[RunningBroker]], wire: Connect
) -> None:
    broker = await start_broker(subscription_buffer_events=200)
    reader, writer = await asyncio.open_connection(broker.host, broker.port)
    writer.write(encode_frames([
        [0, 1, "hello", {"version": 1, "client": "slow"}],
        [0, 2, "subscribe", {"kinds": ("added",)}],
    ]))
    await writer.drain()
    producer = await wire(broker)
    total = 0
    result = b"r" * 1_000
    for _ in range(40):  # 40,000 events of ~1 KiB: far more than the socket buffers hold
        jobs = tuple((None, "send", result) for _ in range(1_000))
        await producer.ok("enqueue", {"queue": "q", "jobs": jobs})
        total += 1_000
    await producer.ok("ping", {})

    decoder = FrameDecoder(1 << 30)
    received: list[dict[str, Any]] = []
    lost = 0
    while len(received) + lost < total:
        data = await asyncio.wait_for(reader.read(1 << 20), 30)
        assert data, "the broker closed the slow subscriber"
        decoder.feed(data)
        for message in decoder.messages():
            if message[0] == 3 and message[1] == "events":
                for event in message[2]["events"]:
                    if event["kind"] == "lagged":
                        lost += event["dropped"]
                    else:
                        received.append(event)
    writer.close()
    assert lost > 0, "the subscriber never lagged: the test did not fill its buffer"
    assert len(received) + lost == total
    seqs = [e["seq"] for e in received]
    assert seqs == sorted(set(seqs))
    assert received[-1]["job_id"] is not None  # it kept receiving after lagging


async def test_metrics_reply(broker: RunningBroker, wire: Connect) -> None:
    client = await wire(broker)
    await client.ok("enqueue", {"queue": "m", "jobs": (JOB, JOB, JOB)})
    jobs = (await client.ok("reserve", {"queues": ("m",), "max": 3, "lease_ms": 100}))["jobs"]
    await client.ok("ack", {"items": ((jobs[0][0], jobs[0][6], None),)})
    await client.ok("fail", {"items": ((jobs[1][0], jobs[1][6], "x", False),)})
    await client.ok("enqueue", {"queue": "n", "jobs": (JOB,)})
    body = await client.ok("metrics", {"buckets": True})
    assert set(body) == {"broker", "queues", "next"} and body["next"] is None
    m = body["queues"]["m"]
    assert m["added"]["total"] == 3 and m["added"]["last_minute"] == 3
    assert (m["completed"]["total"], m["failed"]["total"], m["retried"]["total"]) == (1, 1, 0)
    assert m["wait_ms"]["count"] == 3 and m["processing_ms"]["count"] == 1
    assert sum(count for _, count in m["wait_ms"]["buckets"]) == 3
    b = body["broker"]
    assert b["commits"]["total"] >= 1 and b["commit_batch_size"]["count"] >= 1
    assert b["connections"] == 1 and b["queues"] == 2 and b["journal_bytes"] > 0
    assert b["rss_bytes"] is None or b["rss_bytes"] > 10_000_000
    assert "buckets" not in (await client.ok("metrics", {}))["broker"]["commit_latency_ms"]
    first = await client.ok("metrics", {"limit": 1})
    assert list(first["queues"]) == ["m"] and first["next"] == "m"
    second = await client.ok("metrics", {"limit": 1, "after": first["next"]})
    assert list(second["queues"]) == ["n"] and second["next"] is None
    named = await client.ok("metrics", {"queues": ("n", "nowhere")})
    assert named["queues"]["nowhere"]["added"]["total"] == 0
    # The lease of the third job expires: counted as expired and retried.
    await asyncio.sleep(0.3)
    assert broker.server is not None
    broker.server.after_ops()
    await client.ok("ping", {})
    m = (await client.ok("metrics", {"queues": ("m",)}))["queues"]["m"]
    assert (m["expired"]["total"], m["retried"]["total"]) == (1, 1)


async def test_workers_reply(broker: RunningBroker, wire: Connect) -> None:
    worker = await WireClient.connect(broker.host, broker.port)
    try:
        producer = await wire(broker)
        await producer.ok("enqueue", {"queue": "w", "jobs": (JOB, JOB)})
        jobs = (await worker.ok("reserve", {"queues": ("w", "x"), "max": 2}))["jobs"]
        await worker.ok("ack", {"items": ((jobs[0][0], jobs[0][6], None),)})
        body = await producer.ok("workers", {})
        assert body["total"] == 1
        (listed,) = body["workers"]
        assert (listed["client"], listed["queues"], listed["held"]) == ("tests", ("w", "x"), 1)
        assert (listed["completed"], listed["failed"]) == (1, 0)
        assert listed["last_seen"] >= listed["connected_at"]
        assert listed["host"].startswith("127.0.0.1:")
        everyone = await producer.ok("workers", {"all": True})
        assert everyone["total"] == 2
    finally:
        await worker.close()
    for _ in range(100):
        if (await producer.ok("workers", {}))["total"] == 0:
            break
        await asyncio.sleep(0.05)
    assert (await producer.ok("workers", {}))["total"] == 0
