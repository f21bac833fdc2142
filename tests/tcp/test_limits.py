"""Every resource limit answers with a clear error code, over real TCP.

Each test runs an in-process broker with one limit set low: connections (``OVERLOADED`` event,
then close), the handshake deadline (``TIMEOUT``, also against a slowloris dripping its hello),
requests in flight per connection (``OVERLOADED``; reading pauses), the frame cap
(``FRAME_TOO_LARGE``), the payload cap (``PAYLOAD_TOO_LARGE``), jobs per queue and in total
(``QUEUE_FULL``: backpressure, nothing created), and the idle timeout (``TIMEOUT``).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable

from protocol.codec import encode_frame
from protocol.messages import ErrorReply, Reply
from tests.conftest import RunningBroker
from tests.tools.wire import R_ID, R_TOKEN, WireClient, job_spec

StartBroker = Callable[..., Awaitable[RunningBroker]]
Wire = Callable[..., Awaitable[WireClient]]


async def test_connections_over_the_limit_get_overloaded_then_close(
    start_broker: StartBroker, wire: Wire
) -> None:
    broker = await start_broker(max_connections=2)
    first = await wire(broker)
    await wire(broker)
    refused = await wire(broker, hello=False)
    event = await refused.next_event()
    assert (event.event, event.body["code"]) == ("error", "OVERLOADED")
    assert "too many connections" in event.body["message"]
    await refused.wait_closed()

    await first.close()
    for _ in range(200):  # the broker forgets the closed connection once it sees the FIN
        with contextlib.suppress(ConnectionError, AssertionError):
            again = await wire(broker)
            assert (await again.ok("ping", {}))["now"] > 0
            break
        await asyncio.sleep(0.01)
    else:
        raise AssertionError("a slot never freed after a connection closed")


async def test_silent_connection_is_closed_at_the_handshake_deadline(
    start_broker: StartBroker, wire: Wire
) -> None:
    broker = await start_broker(handshake_timeout=0.3)
    silent = await wire(broker, hello=False)
    event = await silent.next_event()
    assert (event.event, event.body["code"]) == ("error", "TIMEOUT")
    await silent.wait_closed()


async def test_slowloris_dripping_its_hello_is_closed_at_the_deadline(
    start_broker: StartBroker, wire: Wire
) -> None:
    broker = await start_broker(handshake_timeout=0.5)
    loris = await wire(broker, hello=False)
    frame = encode_frame([0, 1, "hello", {"version": 1, "client": "x" * 180}])
    sent = 0
    for byte in frame:  # one byte every 50 ms: about 10 s for the whole hello
        if loris.closed.is_set():
            break
        loris.send_raw(bytes([byte]))
        sent += 1
        await asyncio.sleep(0.05)
    assert sent < len(frame), "the broker waited for the whole dripped hello"
    assert loris.hello == {}
    errors = [m for m in loris.received if not isinstance(m, Reply)]
    assert [(e.event, e.body["code"]) for e in errors if not isinstance(e, ErrorReply)] == [
        ("error", "TIMEOUT")
    ]


async def test_requests_beyond_max_inflight_get_overloaded(
    start_broker: StartBroker, wire: Wire
) -> None:
    broker = await start_broker(max_inflight=3)
    worker = await wire(broker)
    parked = {"queues": ["limits"], "max": 1, "wait_ms": 60_000}
    ids = worker.send_many([("reserve", parked)] * 5)  # one write: read in one go
    for request_id in ids[3:]:
        answer = await worker.answer(request_id)
        assert isinstance(answer, ErrorReply) and answer.code == "OVERLOADED", answer
        assert "3 requests in flight" in answer.message
    assert not any(worker.answered(i) for i in ids[:3])

    producer = await wire(broker)
    await producer.enqueue("limits", *(job_spec(f"job-{i}") for i in range(3)))
    delivered = []
    for request_id in ids[:3]:
        answer = await worker.answer(request_id)
        assert isinstance(answer, Reply)
        delivered += [job[R_ID] for job in answer.body["jobs"]]
    assert sorted(delivered) == ["job-0", "job-1", "job-2"]
    assert (await worker.ok("ping", {}))["now"] > 0  # reading resumed


async def test_frame_over_the_cap_is_refused_before_it_is_buffered(
    start_broker: StartBroker, wire: Wire
) -> None:
    broker = await start_broker(max_frame=4096, max_payload=1024)
    client = await wire(broker)
    client.send_raw((4097).to_bytes(4, "big"))  # the prefix alone is enough to refuse
    event = await client.next_event()
    assert (event.event, event.body["code"]) == ("error", "FRAME_TOO_LARGE")
    await client.wait_closed()


async def test_payload_over_the_cap_is_payload_too_large_and_creates_nothing(
    start_broker: StartBroker, wire: Wire
) -> None:
    broker = await start_broker(max_payload=1000)
    client = await wire(broker)
    assert (await client.enqueue("big", job_spec("fits", payload=b"x" * 1000)))["ids"] == ("fits",)
    error = await client.error("enqueue", {"queue": "big", "jobs": [
        job_spec("small", payload=b"x"), job_spec("too-big", payload=b"x" * 1001)]})
    assert error.code == "PAYLOAD_TOO_LARGE"
    assert "jobs[1].payload" in error.message and "1001" in error.message
    assert (await client.error("get", {"id": "small"})).code == "NOT_FOUND"

    [job] = await client.reserve("big")
    [(code, message)] = await client.ack([job[R_ID], job[R_TOKEN], b"r" * 1001])
    assert code == "PAYLOAD_TOO_LARGE" and "1001" in message
    assert (await client.get("fits"))["state"] == "active"  # the oversized ack changed nothing


async def test_queue_and_total_job_limits_give_queue_full(
    start_broker: StartBroker, wire: Wire
) -> None:
    broker = await start_broker(max_queue_jobs=3, max_total_jobs=5)
    client = await wire(broker)
    await client.enqueue("a", *(job_spec(f"a{i}") for i in range(3)))
    error = await client.error("enqueue", {"queue": "a", "jobs": [job_spec("a3")]})
    assert error.code == "QUEUE_FULL" and "limit 3" in error.message

    await client.enqueue("b", job_spec("b0"), job_spec("b1"))
    error = await client.error("enqueue", {"queue": "b", "jobs": [job_spec("b2")]})
    assert error.code == "QUEUE_FULL" and "limit 5" in error.message
    assert (await client.error("get", {"id": "b2"})).code == "NOT_FOUND"

    [job] = await client.reserve("a")
    assert (await client.ack([job[R_ID], job[R_TOKEN]]))[0][0] == "OK"
    assert (await client.enqueue("a", job_spec("a3")))["ids"] == ("a3",)  # room again


async def test_idle_connection_is_closed_but_a_parked_request_keeps_it(
    start_broker: StartBroker, wire: Wire
) -> None:
    broker = await start_broker(idle_timeout=0.3)
    client = await wire(broker)
    body = await client.ok("reserve", {"queues": ["idle"], "wait_ms": 1_000})
    assert body["jobs"] == ()  # the long-poll outlived the idle timeout without a close
    event = await client.next_event()
    assert (event.event, event.body["code"]) == ("error", "TIMEOUT")
    assert "idle" in event.body["message"]
    await client.wait_closed()


async def test_no_idle_timeout_by_default(start_broker: StartBroker, wire: Wire) -> None:
    broker = await start_broker()
    assert broker.settings.idle_timeout == 0
    client = await wire(broker)
    await asyncio.sleep(0.5)
    assert not client.closed.is_set()
    assert (await client.ok("ping", {}))["now"] > 0
