"""Per-queue job ids and ``obliterate``, through the Python client against a real broker on
127.0.0.1 (in-process, port 0) with its SQLite journal."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from broker.records import decode_record
from client import AmbiguousIdError, Client, ConflictError, JobState, NotFoundError
from client.sync import SyncClient
from protocol.messages import Reply
from protocol.model import AckItem
from protocol.operations import Ack, Reserve
from protocol.replies import parse_outcomes, parse_reserved
from tests.conftest import RunningBroker

Start = Callable[..., Awaitable[RunningBroker]]


def url(broker: RunningBroker) -> str:
    return f"jobwire://{broker.host}:{broker.port}"


@pytest.fixture
async def client(broker: RunningBroker) -> AsyncIterator[Client]:
    async with Client(url(broker)) as c:
        yield c


async def test_the_same_id_in_two_queues_makes_two_jobs(client: Client) -> None:
    emails, sms = client.queue("emails"), client.queue("sms")
    first = await emails.add("send", {"to": "ada"}, job_id="welcome-42")
    second = await sms.add("send", {"to": "+1"}, job_id="welcome-42")
    again = await sms.add("send", {"to": "other"}, job_id="welcome-42")

    assert not first.duplicate and not second.duplicate and again.duplicate
    # A duplicate add gives the stored job, not the request's data.
    assert (again.queue, again.data, again.state) == ("sms", {"to": "+1"}, JobState.WAITING)
    (bulk_dup,) = await emails.add_bulk([("other-name", "ignored", {"job_id": "welcome-42"})])
    assert bulk_dup.duplicate and (bulk_dup.name, bulk_dup.data) == ("send", {"to": "ada"})
    assert (await emails.get_job("welcome-42")).data == {"to": "ada"}
    assert (await sms.get_job("welcome-42")).data == {"to": "+1"}
    stats = await client.stats()
    assert (stats["emails"].waiting, stats["sms"].waiting) == (1, 1)
    with pytest.raises(AmbiguousIdError, match="'emails', 'sms'"):
        await client.get_job("welcome-42")
    assert (await client.get_job("welcome-42", queue="sms")).queue == "sms"
    # A broker-assigned id is unique in the broker: no queue needed.
    plain = await emails.add("send", 1)
    assert (await client.get_job(plain.id)).queue == "emails"
    with pytest.raises(NotFoundError):
        await client.queue("other").get_job("welcome-42")

    assert await sms.remove("welcome-42") is JobState.WAITING
    assert (await client.get_job("welcome-42")).queue == "emails"  # one left: unambiguous


async def test_acks_find_the_job_by_its_lease_token_and_waits_by_queue(client: Client) -> None:
    a, b = client.queue("a"), client.queue("b")
    job_a = await a.add("t", "A", job_id="same")
    job_b = await b.add("t", "B", job_id="same")
    conn = client.connection
    (leased_b,) = parse_reserved(await conn.request(Reserve(("b",), 1, 60_000, None)))
    (leased_a,) = parse_reserved(await conn.request(Reserve(("a",), 1, 60_000, None)))
    waiting_on_a = asyncio.ensure_future(job_a.wait(timeout=30))

    (outcome,) = parse_outcomes(
        await conn.request(Ack((AckItem("same", leased_b.token, b"\xa2ok"),))))
    assert outcome.ok
    assert await job_b.wait(timeout=5) == "ok"
    await asyncio.sleep(0.05)  # b's completion must not answer the wait on a's job
    assert not waiting_on_a.done()
    (outcome,) = parse_outcomes(
        await conn.request(Ack((AckItem("same", leased_a.token, b"\xa2ya"),))))
    assert outcome.ok
    assert await waiting_on_a == "ya"


async def test_an_ambiguous_get_on_the_wire_gets_its_code(
    client: Client, broker: RunningBroker
) -> None:
    for queue in ("x", "y"):
        await client.queue(queue).add("t", 1, job_id="dup")
    wire = await broker.connect()
    try:
        error = await wire.error("get", {"id": "dup"})
        found = await wire.call("get", {"id": "dup", "queue": "y"})
    finally:
        await wire.close()
    assert error.code == "AMBIGUOUS_ID" and "give the queue" in error.message
    assert isinstance(found, Reply) and found.body["job"]["queue"] == "y"


async def test_obliterate_deletes_the_queue_its_jobs_and_its_journal_rows(
    start_broker: Start,
) -> None:
    broker = await start_broker()
    async with Client(url(broker)) as client:
        doomed, kept = client.queue("doomed"), client.queue("kept")
        for n in range(5):
            await doomed.add("t", n)
        await doomed.add("t", "later", delay=3600)
        await kept.add("t", "stays", job_id="j")
        await doomed.add("t", "twin", job_id="j")
        conn = client.connection
        (leased,) = parse_reserved(await conn.request(Reserve(("doomed",), 1, 60_000, None)))
        watcher = asyncio.ensure_future((await doomed.get_job("j")).wait(timeout=30))

        with pytest.raises(ConflictError, match="1 active"):
            await doomed.obliterate()
        assert (await doomed.stats()).waiting == 5  # refused: nothing changed
        assert await doomed.obliterate(force=True) == 7

        assert set(await client.stats()) == {"kept"}
        with pytest.raises(NotFoundError):
            await watcher  # the wait on a deleted job ends
        (outcome,) = parse_outcomes(
            await conn.request(Ack((AckItem(leased.job_id, leased.token, None),))))
        assert outcome.code == "NOT_FOUND"  # the lease was revoked
        assert await doomed.obliterate() == 0  # nothing left: not an error
    await broker.stop()

    with sqlite3.connect(broker.data_dir / "jobwire.db") as db:
        assert [decode_record(record)["queue"] for (record,) in
                db.execute("SELECT record FROM jobs")] == ["kept"]
        assert db.execute("SELECT name FROM queues").fetchall() == [("kept",)]
    restarted = await start_broker(data_dir=broker.data_dir)
    async with Client(url(restarted)) as client:
        assert set(await client.stats()) == {"kept"}
        assert (await client.get_job("j")).data == "stays"


async def test_the_sync_client_obliterates_and_gets_by_queue(broker: RunningBroker) -> None:
    def body() -> None:
        with SyncClient(url(broker)) as client:
            one, two = client.queue("one"), client.queue("two")
            one.add("t", 1, job_id="k")
            two.add("t", 2, job_id="k")
            assert two.add("t", 3, job_id="k").data == 2  # the stored job
            assert two.get_job("k").data == 2
            assert client.get_job("k", queue="one").data == 1
            assert two.obliterate() == 1
            assert set(client.stats()) == {"one"}

    await asyncio.to_thread(body)
