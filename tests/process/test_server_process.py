"""The broker as a real ``jobwire serve`` process: replies only after commit, graceful shutdown.

A reply to a write must mean the write survives ``kill -9`` right after it; SIGTERM (even twice)
must drain: a ``draining`` event, ``DRAINING`` for new enqueues, workers may still ack, leases
still held after the grace period go back, exit status 0, and the state is there on restart.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from tests.conftest import BrokerProcess
from tests.tools.wire import R_ID, R_TOKEN, WireClient, job_spec

NO_BACKOFF = ["fixed", 0]


async def test_a_reply_to_a_write_means_it_survives_kill_9(
    broker_process: BrokerProcess,
) -> None:
    for round_ in range(3):
        client = await WireClient.connect(broker_process.host, broker_process.port)
        await client.enqueue("q", job_spec(f"r{round_}", keep_completed=True))
        broker_process.kill()  # at once: no chance to commit anything after the reply
        await client.close()
        broker_process.restart()
        client = await WireClient.connect(broker_process.host, broker_process.port)
        for earlier in range(round_ + 1):
            assert (await client.get(f"r{earlier}"))["state"] in ("waiting", "completed")
        [job] = await client.reserve("q")
        [result] = await client.ack([job[R_ID], job[R_TOKEN]])
        assert result[0] == "OK"
        broker_process.kill()
        await client.close()
        broker_process.restart()
        client = await WireClient.connect(broker_process.host, broker_process.port)
        assert (await client.get(job[R_ID]))["state"] == "completed"
        await client.close()


async def test_sigterm_drains_lets_workers_ack_and_exits_0(
    spawn_broker: Callable[..., BrokerProcess],
) -> None:
    process = spawn_broker("--shutdown-grace", "30s")
    client = await WireClient.connect(process.host, process.port)
    await client.enqueue("q", job_spec("held"), job_spec("left", keep_completed=True))
    [job] = await client.reserve("q")
    assert process.proc is not None
    process.proc.terminate()
    event = await client.next_event()
    assert event.event == "draining"
    assert (await client.error("enqueue", {"queue": "q", "jobs": [job_spec()]})).code == "DRAINING"
    assert await client.reserve("q", wait_ms=10_000) == []  # nothing new is handed out
    [result] = await client.ack([job[R_ID], job[R_TOKEN]])
    assert result[0] == "OK"
    await client.wait_closed()  # no lease left: no need to wait out the grace period
    await client.close()
    assert await asyncio.to_thread(process.proc.wait, 30) == 0
    events = [line["event"] for line in process.log_lines()]
    assert "shutdown_complete" in events

    process.start()
    client = await WireClient.connect(process.host, process.port)
    assert (await client.get("held"))["state"] == "completed"
    assert (await client.get("left"))["state"] == "waiting"
    await client.close()


async def test_sigterm_twice_releases_unfinished_leases_and_exits_0(
    spawn_broker: Callable[..., BrokerProcess],
) -> None:
    process = spawn_broker("--shutdown-grace", "300ms")
    client = await WireClient.connect(process.host, process.port)
    await client.enqueue("q", job_spec("held", backoff=NO_BACKOFF))
    await client.reserve("q", lease_ms=600_000)
    assert process.proc is not None
    process.proc.terminate()
    process.proc.terminate()
    assert (await client.next_event()).event == "draining"
    await client.wait_closed()
    await client.close()
    assert await asyncio.to_thread(process.proc.wait, 30) == 0

    process.start()
    client = await WireClient.connect(process.host, process.port)
    job = await client.get("held")
    assert (job["state"], job["attempts"]) in (("waiting", 1), ("delayed", 1))
    await client.close()


async def test_logs_are_json_events_without_secrets(
    spawn_broker: Callable[..., BrokerProcess],
) -> None:
    secret = "correct-horse-battery-staple"
    process = spawn_broker(env={"JOBWIRE_TOKEN": secret})
    client = await WireClient.connect(process.host, process.port, token=secret)
    await client.enqueue("q", job_spec("a", payload=b"payload-bytes-never-logged"))
    await client.close()
    rejected = await WireClient.connect(process.host, process.port, hello=False)
    assert (await rejected.error("hello", {"version": 1, "token": "guess"})).code == "UNAUTHORIZED"
    await rejected.wait_closed()
    await rejected.close()
    assert process.proc is not None
    process.proc.terminate()
    assert await asyncio.to_thread(process.proc.wait, 30) == 0

    text = process.log_path.read_text()
    assert secret not in text and "guess" not in text and "payload-bytes" not in text
    lines = process.log_lines()
    events = [line["event"] for line in lines]
    for expected in ("starting", "recovered", "listening", "connection_opened",
                     "connection_closed", "shutdown_started", "shutdown_complete"):
        assert expected in events, expected
    [start] = [line for line in lines if line["event"] == "starting"]
    assert start["settings"]["token"] == "<set>"
    reasons = {line["reason"] for line in lines if line["event"] == "connection_closed"}
    assert {"peer closed", "unauthorized"} <= reasons
