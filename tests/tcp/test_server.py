"""The broker over real TCP on 127.0.0.1, spoken to with raw protocol frames (no ``client/``).

In-process brokers (``broker``/``start_broker`` fixtures) cover the handshake, every operation,
pipelining, long-polls, leases and backpressure, on asyncio's loop and once on uvloop;
``tests/process/test_server_process.py`` covers what needs a real process. No assertion depends
on timing: waits only bound how long a test may hang.
"""

from __future__ import annotations

import asyncio
import struct
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from broker.config import Settings
from protocol.codec import encode_frame
from protocol.messages import ErrorReply, Reply
from tests.conftest import RunningBroker
from tests.tools.wire import R_ATTEMPT, R_ID, R_PAYLOAD, R_TOKEN, WireClient, job_spec

Connect = Callable[..., Awaitable[WireClient]]
StartBroker = Callable[..., Awaitable[RunningBroker]]
NO_BACKOFF = ["fixed", 0]


# --------------------------------------------------------------------------- handshake


async def test_hello_reply_describes_the_broker(broker: RunningBroker, wire: Connect) -> None:
    client = await wire(broker)
    assert client.hello["version"] == 1
    assert client.hello["server"].startswith("jobwire/")
    assert client.hello["max_frame"] == broker.settings.max_frame
    assert client.hello["max_payload"] == broker.settings.max_payload
    assert client.hello["max_inflight"] == broker.settings.max_inflight
    assert client.hello["max_batch"] >= 1
    assert isinstance(client.hello["now"], int)


async def test_requests_before_hello_are_refused_and_the_connection_stays(
    broker: RunningBroker, wire: Connect
) -> None:
    client = await wire(broker, hello=False)
    error = await client.error("ping", {})
    assert error.code == "HANDSHAKE_REQUIRED"
    error = await client.error("enqueue", {"queue": "q", "jobs": [job_spec()]})
    assert error.code == "HANDSHAKE_REQUIRED"
    await client.ok("hello", {"version": 1})
    assert "now" in await client.ok("ping", {})
    error = await client.error("hello", {"version": 1})
    assert error.code == "HANDSHAKE_REQUIRED"


async def test_unsupported_version_is_refused_then_closed(
    broker: RunningBroker, wire: Connect
) -> None:
    client = await wire(broker, hello=False)
    error = await client.error("hello", {"version": 99})
    assert error.code == "UNSUPPORTED_VERSION"
    await client.wait_closed()


@pytest.mark.parametrize("token", [None, "wrong", "s3cret-but-longer"])
async def test_a_missing_or_wrong_token_is_refused_then_closed(
    start_broker: StartBroker, wire: Connect, token: str | None
) -> None:
    broker = await start_broker(token="s3cret")
    client = await wire(broker, hello=False)
    error = await client.error("hello", {"version": 1, "token": token})
    assert error.code == "UNAUTHORIZED"
    await client.wait_closed()
    good = await wire(broker, token="s3cret")
    assert "now" in await good.ok("ping", {})


async def test_a_bad_request_gets_an_error_and_the_connection_stays(
    broker: RunningBroker, wire: Connect
) -> None:
    client = await wire(broker)
    assert (await client.error("enqueue", {"queue": "q", "jobs": "nope"})).code == "BAD_ARGUMENT"
    assert (await client.error("fly", {})).code == "UNKNOWN_OP"
    assert (await client.error("get", {"id": "missing"})).code == "NOT_FOUND"
    assert "now" in await client.ok("ping", {})


@pytest.mark.parametrize(
    ("data", "code"),
    [
        (struct.pack(">I", 3) + b"\xc1\xc1\xc1", "BAD_FRAME"),  # 0xc1 is never valid msgpack
        (encode_frame([1, 5, {}]), "BAD_FRAME"),  # a reply, not a request
        (encode_frame("hello"), "BAD_FRAME"),
        (struct.pack(">I", 2048), "FRAME_TOO_LARGE"),  # refused from the prefix alone
    ],
)
async def test_an_undecodable_stream_gets_an_error_event_then_close(
    start_broker: StartBroker, wire: Connect, data: bytes, code: str
) -> None:
    broker = await start_broker(max_frame=1024, max_payload=512)
    client = await wire(broker)
    client.send_raw(data)
    event = await client.next_event()
    assert (event.event, event.body["code"]) == ("error", code)
    await client.wait_closed()
    assert "now" in await (await wire(broker)).ok("ping", {})  # the broker still serves


async def test_the_handshake_has_a_deadline(start_broker: StartBroker, wire: Connect) -> None:
    broker = await start_broker(handshake_timeout=0.2)
    client = await wire(broker, hello=False)
    event = await client.next_event()
    assert (event.event, event.body["code"]) == ("error", "TIMEOUT")
    await client.wait_closed()


async def test_idle_connections_are_closed_when_configured(
    start_broker: StartBroker, wire: Connect
) -> None:
    broker = await start_broker(idle_timeout=0.2)
    client = await wire(broker)
    event = await client.next_event()
    assert (event.event, event.body["code"]) == ("error", "TIMEOUT")
    await client.wait_closed()


async def test_connections_over_the_limit_are_refused(
    start_broker: StartBroker, wire: Connect
) -> None:
    broker = await start_broker(max_connections=2)
    first, second = await wire(broker), await wire(broker)
    third = await wire(broker, hello=False)
    event = await third.next_event()
    assert (event.event, event.body["code"]) == ("error", "OVERLOADED")
    await third.wait_closed()
    await first.close()
    assert "now" in await second.ok("ping", {})


# --------------------------------------------------------------------------- operations


async def test_enqueue_get_reserve_ack(broker: RunningBroker, wire: Connect) -> None:
    client = await wire(broker)
    body = await client.enqueue("mail", job_spec("welcome-1", "send", b"\x01\x02"), job_spec())
    assert body["duplicates"] == ()
    assert body["ids"][0] == "welcome-1" and body["ids"][1] != "welcome-1"
    again = await client.enqueue("mail", job_spec("welcome-1", "send", b"other"))
    assert again["duplicates"] == (0,) and again["ids"] == ("welcome-1",)
    job = await client.get("welcome-1")
    assert (job["state"], job["queue"], job["name"], job["payload"]) == (
        "waiting", "mail", "send", b"\x01\x02")

    jobs = await client.reserve("mail", max_jobs=5)
    assert [j[R_ID] for j in jobs] == list(body["ids"])  # FIFO within a priority
    assert jobs[0][R_ATTEMPT] == 1 and jobs[0][R_PAYLOAD] == b"\x01\x02"
    assert (await client.get("welcome-1"))["state"] == "active"
    results = await client.ack([jobs[0][R_ID], jobs[0][R_TOKEN], b"done"],
                               [jobs[1][R_ID], jobs[1][R_TOKEN] + 1])
    assert results[0] == ("OK", "completed")
    assert results[1][0] == "STALE_LEASE"
    job = await client.get("welcome-1")
    assert (job["state"], job["result"], job["attempts"]) == ("completed", b"done", 1)


async def test_priority_orders_reservations(broker: RunningBroker, wire: Connect) -> None:
    client = await wire(broker)
    await client.enqueue("q", job_spec("low", priority=5), job_spec("urgent", priority=-1),
                         job_spec("normal"))
    jobs = await client.reserve("q", max_jobs=3)
    assert [j[R_ID] for j in jobs] == ["urgent", "normal", "low"]


async def test_fail_retry_and_the_failed_set(broker: RunningBroker, wire: Connect) -> None:
    client = await wire(broker)
    await client.enqueue("q", job_spec("a", max_attempts=3), job_spec("b"))
    jobs = {j[R_ID]: j for j in await client.reserve("q", max_jobs=2)}
    body = await client.ok("fail", {"items": [
        ["a", jobs["a"][R_TOKEN], "boom"],
        ["b", jobs["b"][R_TOKEN], "fatal", False],
    ]})
    assert body["results"] == (("OK", "delayed"), ("OK", "failed"))
    assert (await client.get("a"))["error"] == "boom"
    listed = await client.ok("list_failed", {"queue": "q"})
    assert listed["total"] == 1 and [j["id"] for j in listed["jobs"]] == ["b"]
    body = await client.ok("retry_failed", {"queue": "q", "ids": ["b", "a"]})
    assert body["retried"] == 1 and body["not_failed"] == ("a",)
    assert (await client.get("b"))["state"] == "waiting"


async def test_extend_and_progress_need_the_current_token(
    broker: RunningBroker, wire: Connect
) -> None:
    client = await wire(broker)
    await client.enqueue("q", job_spec("a"))
    [job] = await client.reserve("q", lease_ms=5_000)
    token = job[R_TOKEN]
    body = await client.ok("extend", {"items": [["a", token, 60_000], ["a", token + 7]]})
    assert body["results"][0][0] == "OK" and body["results"][0][1] > job[8]
    assert body["results"][1][0] == "STALE_LEASE"
    assert await client.ok("progress", {"id": "a", "token": token, "progress": {"pct": 40}}) == {}
    assert (await client.get("a"))["progress"] == {"pct": 40}
    error = await client.error("progress", {"id": "a", "token": token + 1, "progress": 1})
    assert error.code == "STALE_LEASE"


async def test_cancel_pause_resume_stats_clean(broker: RunningBroker, wire: Connect) -> None:
    client = await wire(broker)
    await client.enqueue("q", job_spec("a"), job_spec("b"), job_spec("c"))
    assert await client.ok("cancel", {"id": "a"}) == {"state": "waiting"}
    assert (await client.error("get", {"id": "a"})).code == "NOT_FOUND"
    assert await client.ok("pause", {"queue": "q"}) == {}
    assert await client.reserve("q") == []
    stats = (await client.ok("stats", {"queue": "q"}))["queues"]["q"]
    assert (stats["paused"], stats["waiting"]) == (True, 2)
    await client.ok("resume", {"queue": "q"})
    [job] = await client.reserve("q")
    await client.ack([job[R_ID], job[R_TOKEN]])
    body = await client.ok("stats", {})
    assert body["queues"]["q"]["completed"] == 1 and body["queues"]["q"]["waiting"] == 1
    assert body["broker"]["connections"] == 1
    assert await client.ok("clean", {"queue": "q", "state": "completed"}) == {"removed": 1}
    assert await client.ok("clean", {"queue": "q", "state": "waiting"}) == {"removed": 1}
    assert (await client.ok("stats", {"queue": "q"}))["queues"]["q"]["waiting"] == 0


async def test_wait_returns_when_the_job_finishes_or_times_out(
    broker: RunningBroker, wire: Connect
) -> None:
    producer, worker = await wire(broker), await wire(broker)
    await producer.enqueue("q", job_spec("a"), job_spec("b"))
    waiting = producer.send("wait", {"id": "a", "timeout_ms": 30_000})
    [job] = await worker.reserve("q")
    await worker.ack([job[R_ID], job[R_TOKEN], b"42"])
    answer = await producer.answer(waiting)
    assert isinstance(answer, Reply)
    assert (answer.body["job"]["state"], answer.body["job"]["result"]) == ("completed", b"42")
    body = await producer.ok("wait", {"id": "b", "timeout_ms": 50})
    assert body["job"]["state"] == "waiting"
    assert (await producer.error("wait", {"id": "nope"})).code == "NOT_FOUND"


async def test_cancelling_a_waited_job_answers_not_found(
    broker: RunningBroker, wire: Connect
) -> None:
    client = await wire(broker)
    await client.enqueue("q", job_spec("a"))
    waiting = client.send("wait", {"id": "a", "timeout_ms": 30_000})
    await client.ok("cancel", {"id": "a"})
    answer = await client.answer(waiting)
    assert isinstance(answer, ErrorReply) and answer.code == "NOT_FOUND"


# --------------------------------------------------------------------------- pipelining


async def test_pipelined_requests_are_answered_out_of_order(
    broker: RunningBroker, wire: Connect
) -> None:
    client = await wire(broker)
    slow, ping, enqueue = client.send_many([
        ("reserve", {"queues": ["later"], "wait_ms": 30_000}),
        ("ping", {}),
        ("enqueue", {"queue": "later", "jobs": [job_spec("x")]}),
    ])
    answers = {rid: await client.answer(rid) for rid in (slow, ping, enqueue)}
    order = [m.request_id for m in client.received if isinstance(m, Reply)]
    assert order.index(ping) < order.index(slow)  # the first request was answered last
    reserved = answers[slow]
    assert isinstance(reserved, Reply) and reserved.body["jobs"][0][R_ID] == "x"


async def test_many_pipelined_writes_each_get_their_own_reply(
    broker: RunningBroker, wire: Connect
) -> None:
    client = await wire(broker)
    ids = client.send_many([("enqueue", {"queue": "p", "jobs": [job_spec(f"j{i}")]})
                            for i in range(1000)])
    for i, rid in enumerate(ids):
        answer = await client.answer(rid)
        assert isinstance(answer, Reply) and answer.body["ids"] == (f"j{i}",)
    stats = (await client.ok("stats", {"queue": "p"}))["queues"]["p"]
    assert stats["waiting"] == 1000


# --------------------------------------------------------------------------- long-poll


async def test_a_long_poll_times_out_with_no_jobs(broker: RunningBroker, wire: Connect) -> None:
    client = await wire(broker)
    assert await client.reserve("empty", wait_ms=100) == []


async def test_a_long_poll_is_woken_by_an_enqueue(broker: RunningBroker, wire: Connect) -> None:
    worker, producer = await wire(broker), await wire(broker)
    parked = worker.send("reserve", {"queues": ["other", "q"], "wait_ms": 30_000})
    await _until_parked(broker, 1)
    await producer.enqueue("q", job_spec("a"))
    answer = await worker.answer(parked)
    assert isinstance(answer, Reply) and answer.body["jobs"][0][R_ID] == "a"


async def test_a_long_poll_is_woken_by_a_delayed_job_coming_due(
    broker: RunningBroker, wire: Connect
) -> None:
    client = await wire(broker)
    await client.enqueue("q", job_spec("later", delay_ms=200))
    assert await client.reserve("q") == []
    jobs = await client.reserve("q", wait_ms=30_000)
    assert jobs[0][R_ID] == "later"


async def test_a_long_poll_is_woken_by_a_retry(broker: RunningBroker, wire: Connect) -> None:
    first, second = await wire(broker), await wire(broker)
    await first.enqueue("q", job_spec("a", backoff=["fixed", 100]))
    [job] = await first.reserve("q")
    parked = second.send("reserve", {"queues": ["q"], "wait_ms": 30_000})
    await _until_parked(broker, 1)
    await first.ok("fail", {"items": [["a", job[R_TOKEN], "try again"]]})
    answer = await second.answer(parked)
    assert isinstance(answer, Reply)
    assert answer.body["jobs"][0][R_ID] == "a" and answer.body["jobs"][0][R_ATTEMPT] == 2


async def test_a_long_poll_is_woken_by_resume_and_retry_failed(
    broker: RunningBroker, wire: Connect
) -> None:
    admin, worker = await wire(broker), await wire(broker)
    await admin.ok("pause", {"queue": "q"})
    await admin.enqueue("q", job_spec("a"))
    parked = worker.send("reserve", {"queues": ["q"], "wait_ms": 30_000})
    await _until_parked(broker, 1)
    await admin.ok("resume", {"queue": "q"})
    answer = await worker.answer(parked)
    assert isinstance(answer, Reply)
    [job] = answer.body["jobs"]
    await worker.ok("fail", {"items": [["a", job[R_TOKEN], "no", False]]})
    parked = worker.send("reserve", {"queues": ["q"], "wait_ms": 30_000})
    await _until_parked(broker, 1)
    await admin.ok("retry_failed", {"queue": "q"})
    answer = await worker.answer(parked)
    assert isinstance(answer, Reply) and answer.body["jobs"][0][R_ID] == "a"


async def test_one_job_wakes_one_waiter_oldest_first(broker: RunningBroker, wire: Connect) -> None:
    workers = [await wire(broker) for _ in range(5)]
    producer = await wire(broker)
    parked = []
    for n, worker in enumerate(workers):  # park them one by one so their order is known
        parked.append(worker.send("reserve", {"queues": ["q"], "wait_ms": 60_000}))
        await _until_parked(broker, n + 1)
    for n in range(5):
        await producer.enqueue("q", job_spec(f"job-{n}"))
        answer = await workers[n].answer(parked[n])  # the oldest waiter got it...
        assert isinstance(answer, Reply) and answer.body["jobs"][0][R_ID] == f"job-{n}"
        assert _parked(broker) == 4 - n  # ...and every other waiter is still parked


async def test_a_batch_wakes_as_many_waiters_as_it_has_jobs(
    broker: RunningBroker, wire: Connect
) -> None:
    workers = [await wire(broker) for _ in range(4)]
    parked = [w.send("reserve", {"queues": ["q"], "wait_ms": 60_000}) for w in workers]
    await _until_parked(broker, 4)
    producer = await wire(broker)
    await producer.enqueue("q", *(job_spec(f"j{i}") for i in range(3)))
    await _until_parked(broker, 1)
    got = 0
    for worker, rid in zip(workers, parked, strict=True):
        if worker.answered(rid):
            answer = await worker.answer(rid)
            assert isinstance(answer, Reply) and len(answer.body["jobs"]) == 1
            got += 1
    assert got == 3


async def test_closing_a_connection_drops_its_long_poll(
    broker: RunningBroker, wire: Connect
) -> None:
    gone, worker, producer = await wire(broker), await wire(broker), await wire(broker)
    gone.send("reserve", {"queues": ["q"], "wait_ms": 60_000})
    await _until_parked(broker, 1)
    await gone.close()
    await _until_parked(broker, 0)
    parked = worker.send("reserve", {"queues": ["q"], "wait_ms": 60_000})
    await producer.enqueue("q", job_spec("a"))
    answer = await worker.answer(parked)
    assert isinstance(answer, Reply) and answer.body["jobs"][0][R_ID] == "a"


# --------------------------------------------------------------------------- leases


async def test_an_expired_lease_is_delivered_again(broker: RunningBroker, wire: Connect) -> None:
    slow, other = await wire(broker), await wire(broker)
    await slow.enqueue("q", job_spec("a", backoff=NO_BACKOFF))
    [job] = await slow.reserve("q", lease_ms=100)
    [again] = await other.reserve("q", wait_ms=30_000)
    assert (again[R_ID], again[R_ATTEMPT]) == ("a", 2)
    [result] = await slow.ack([job[R_ID], job[R_TOKEN]])
    assert result[0] == "STALE_LEASE"
    assert (await other.ack([again[R_ID], again[R_TOKEN]]))[0] == ("OK", "completed")


async def test_closing_a_connection_releases_its_jobs(broker: RunningBroker, wire: Connect) -> None:
    holder, other = await wire(broker), await wire(broker)
    await holder.enqueue("q", job_spec("a", backoff=NO_BACKOFF))
    assert len(await holder.reserve("q", lease_ms=600_000)) == 1
    parked = other.send("reserve", {"queues": ["q"], "wait_ms": 60_000})
    await holder.close()
    answer = await other.answer(parked)
    assert isinstance(answer, Reply)
    [again] = answer.body["jobs"]
    assert (again[R_ID], again[R_ATTEMPT]) == ("a", 2)
    assert "connection" in (await other.get("a"))["error"]


async def test_release_hands_jobs_back_uncounted_and_wakes_a_long_poll(
    broker: RunningBroker, wire: Connect
) -> None:
    holder, other = await wire(broker), await wire(broker)
    await holder.enqueue("q", job_spec("a", max_attempts=1), job_spec("b"))
    jobs = {j[R_ID]: j for j in await holder.reserve("q", max_jobs=2)}
    await holder.ok("progress", {"id": "a", "token": jobs["a"][R_TOKEN], "progress": 70})
    parked = other.send("reserve", {"queues": ["q"], "wait_ms": 60_000})
    await _until_parked(broker, 1)
    body = await holder.ok("release", {"items": [
        ["a", jobs["a"][R_TOKEN]],
        ["b", jobs["b"][R_TOKEN], 600_000],
        ["a", jobs["a"][R_TOKEN]],
        ["gone", 1, 0],
    ]})
    assert body["results"][:2] == (("OK", "waiting"), ("OK", "delayed"))
    assert [code for code, _ in body["results"][2:]] == ["STALE_LEASE", "NOT_FOUND"]
    answer = await other.answer(parked)
    assert isinstance(answer, Reply)
    [again] = answer.body["jobs"]
    assert (again[R_ID], again[R_ATTEMPT], again[10]) == ("a", 1, 70)  # not counted; progress kept
    b = await holder.get("b")
    assert (b["state"], b["attempts"], b["error"]) == ("delayed", 0, None)
    assert (await holder.ack(["a", jobs["a"][R_TOKEN]]))[0][0] == "STALE_LEASE"
    assert (await other.ack([again[R_ID], again[R_TOKEN]]))[0] == ("OK", "completed")
    error = await holder.error("release", {"items": [["b", jobs["b"][R_TOKEN], -1]]})
    assert error.code == "BAD_ARGUMENT" and error.message.startswith("items[0].delay_ms:")


# --------------------------------------------------------------------------- backpressure


async def test_large_pipelined_replies_do_not_deadlock(
    broker: RunningBroker, wire: Connect
) -> None:
    client = await wire(broker)
    await client.enqueue("q", job_spec("big", payload=b"x" * 65_536))
    client.reader._transport.pause_reading()  # type: ignore[attr-defined]
    count = 400  # ~26 MB of replies: far above the broker's 1 MiB write high-water mark
    ids = client.send_many([("get", {"id": "big"})] * count)
    await client.writer.drain()
    session = next(iter(broker.server.sessions.values()))  # type: ignore[union-attr]
    await _eventually(lambda: session.read_pauses > 0)
    other = await wire(broker)
    assert "now" in await other.ok("ping", {})  # the broker serves others meanwhile
    client.reader._transport.resume_reading()  # type: ignore[attr-defined]
    for rid in ids:
        answer = await client.answer(rid, within=60)
        assert isinstance(answer, Reply) and len(answer.body["job"]["payload"]) == 65_536


async def test_shutdown_completes_when_a_client_stopped_reading(
    start_broker: StartBroker, wire: Connect
) -> None:
    broker = await start_broker()
    client = await wire(broker)
    await client.enqueue("q", job_spec("big", payload=b"x" * 65_536))
    client.reader._transport.pause_reading()  # type: ignore[attr-defined]
    client.send_many([("get", {"id": "big"})] * 200)
    assert broker.server is not None
    session = next(iter(broker.server.sessions.values()))
    await _eventually(lambda: session.read_pauses > 0)
    await asyncio.wait_for(broker.stop(), 30)  # unsent replies do not hold the shutdown up
    assert not broker.server.sessions


async def test_requests_beyond_max_inflight_are_refused_not_lost(
    start_broker: StartBroker, wire: Connect
) -> None:
    broker = await start_broker(max_inflight=16)
    client = await wire(broker)
    ids = client.send_many([("enqueue", {"queue": "q", "jobs": [job_spec(f"j{i}")]})
                            for i in range(500)])
    accepted = []
    for i, rid in enumerate(ids):
        answer = await client.answer(rid)
        if isinstance(answer, Reply):
            accepted.append(f"j{i}")
        else:
            assert answer.code == "OVERLOADED"
    # 500 requests in one write against a limit of 16: some were refused, some accepted.
    assert accepted and len(accepted) < 500, len(accepted)
    stats = (await client.ok("stats", {"queue": "q"}))["queues"]["q"]
    assert stats["waiting"] == len(accepted)
    for job_id in accepted:
        assert (await client.get(job_id))["state"] == "waiting"


# --------------------------------------------------------------------------- on uvloop


def test_the_same_paths_on_uvloop(tmp_path: Path) -> None:
    """The broker runs on uvloop in production: its transports differ from asyncio's."""
    import uvloop

    async def scenario() -> None:
        broker = await RunningBroker(Settings(host="127.0.0.1", port=0, data_dir=tmp_path,
                                              shutdown_grace=0.2)).start()
        try:
            holder, worker = await broker.connect(), await broker.connect()
            parked = worker.send("reserve", {"queues": ["q"], "wait_ms": 30_000})
            await _until_parked(broker, 1)
            await holder.enqueue("q", job_spec("a", backoff=NO_BACKOFF),
                                 job_spec("big", payload=b"x" * 65_536))
            answer = await worker.answer(parked)
            assert isinstance(answer, Reply) and answer.body["jobs"][0][R_ID] == "a"
            assert (await holder.reserve("q", lease_ms=600_000))[0][R_ID] == "big"
            await holder.close()  # releases "big"
            [again] = await worker.reserve("q", wait_ms=30_000)
            assert (again[R_ID], again[R_ATTEMPT]) == ("big", 2)
            worker.reader._transport.pause_reading()  # type: ignore[attr-defined]
            ids = worker.send_many([("get", {"id": "big"})] * 200)
            assert broker.server is not None
            session = next(iter(broker.server.sessions.values()))
            await _eventually(lambda: session.read_pauses > 0)
            worker.reader._transport.resume_reading()  # type: ignore[attr-defined]
            for rid in ids:
                assert isinstance(await worker.answer(rid), Reply)
            await worker.close()
        finally:
            await broker.stop()

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(scenario())


# --------------------------------------------------------------------------- helpers


def _parked(broker: RunningBroker) -> int:
    assert broker.server is not None
    return len(broker.server.ops.parking.reserves)


async def _until_parked(broker: RunningBroker, count: int) -> None:
    await _eventually(lambda: _parked(broker) == count)


async def _eventually(condition: Callable[[], Any], within: float = 30.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while not condition():
        if loop.time() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.005)
