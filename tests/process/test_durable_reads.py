"""``wait`` and ``get`` answer only with committed state (issue 10, finding 1).

A worker's ack changes the core at once, but the completion is durable only once its transaction
commits. Before the fix, a producer's parked ``wait`` (and any ``get``) was answered from memory
right after the ack was handled: with a full disk the ack got ``JOURNAL_FAILURE`` while the
producer saw ``completed``, and a ``kill -9`` then brought the job back to ``waiting``. These tests
fail on that code: the first in-process (``PRAGMA max_page_count``), the second against a real
``jobwire serve`` whose file-size limit is lowered, killed with SIGKILL and restarted.
"""

from __future__ import annotations

import asyncio
import resource
from collections.abc import Awaitable, Callable

import pytest

from protocol.messages import ErrorReply, Reply
from tests.conftest import HOST, RunningBroker
from tests.process.test_journal_faults import BIG, Daemon, daemon  # noqa: F401 - the fixture
from tests.tools.wire import R_ID, R_TOKEN, WireClient, job_spec

StartBroker = Callable[..., Awaitable[RunningBroker]]
Wire = Callable[..., Awaitable[WireClient]]


async def test_a_wait_is_not_answered_with_a_completion_the_journal_refused(
    start_broker: StartBroker, wire: Wire
) -> None:
    broker = await start_broker()
    assert broker.server is not None
    journal = broker.server.journal
    producer, worker = await wire(broker), await wire(broker)
    await producer.enqueue("durable", job_spec("job-1"))
    [job] = await worker.reserve("durable")
    parked = producer.send("wait", {"id": "job-1", "timeout_ms": 30_000})
    await producer.ok("ping", {})  # the wait is parked once the ping behind it is answered
    assert not producer.answered(parked)

    await journal.set_size_limit(0)  # full disk: the ack's transaction (with its result) fails
    ack = await worker.error("ack", {"items": [[job[R_ID], job[R_TOKEN], BIG]]})
    assert ack.code == "JOURNAL_FAILURE"
    waited = await producer.answer(parked)
    assert isinstance(waited, ErrorReply), f"a non-durable completion was reported: {waited}"
    assert waited.code == "JOURNAL_FAILURE" and "not durable yet" in waited.message
    got = await producer.error("get", {"id": "job-1"})  # the same for a plain read
    assert got.code == "JOURNAL_FAILURE"

    await journal.set_size_limit(None)  # room again: the held-back ack is committed by the retry
    for _ in range(400):
        answer = await producer.call("wait", {"id": "job-1", "timeout_ms": 5_000})
        if isinstance(answer, Reply):
            break
        assert answer.code == "JOURNAL_FAILURE", answer
        await asyncio.sleep(0.05)
    assert isinstance(answer, Reply) and answer.body["job"]["state"] == "completed"
    assert answer.body["job"]["result"] == BIG


async def test_get_of_an_unknown_job_is_not_found_after_the_commit(
    broker: RunningBroker, wire: Wire
) -> None:
    client = await wire(broker)
    error = await client.error("get", {"id": "nope"})
    assert error.code == "NOT_FOUND"
    error = await client.error("wait", {"id": "nope", "timeout_ms": 1_000})
    assert error.code == "NOT_FOUND"


@pytest.mark.skipif(not hasattr(resource, "prlimit"), reason="needs prlimit (Linux)")
async def test_a_reported_completion_survives_kill_9(daemon: Daemon) -> None:  # noqa: F811
    await asyncio.to_thread(daemon.start)
    producer = await WireClient.connect(HOST, daemon.port)
    worker = await WireClient.connect(HOST, daemon.port)
    await producer.enqueue("durable", job_spec("done-1"), job_spec("lost-1"))
    first, second = await worker.reserve("durable", max_jobs=2)
    assert (await worker.ack([first[R_ID], first[R_TOKEN], b"ok"])) == [("OK", "completed")]
    assert (await producer.ok("wait", {"id": "done-1", "timeout_ms": 1_000}))["job"][
        "state"] == "completed"

    parked = producer.send("wait", {"id": "lost-1", "timeout_ms": 30_000})
    await producer.ok("ping", {})
    daemon.limit_file_size(4096)  # every write past 4 KiB of any file: EFBIG
    ack = await worker.error("ack", {"items": [[second[R_ID], second[R_TOKEN], BIG]]})
    assert ack.code == "JOURNAL_FAILURE"
    waited = await producer.answer(parked)
    assert isinstance(waited, ErrorReply) and waited.code == "JOURNAL_FAILURE", waited
    await producer.close()
    await worker.close()

    daemon.kill()  # kill -9 while the ack is still held back
    daemon.proc = None
    await asyncio.to_thread(daemon.start)
    client = await WireClient.connect(HOST, daemon.port)
    assert (await client.get("done-1"))["state"] == "completed"  # what a wait reported stays
    after = await client.get("lost-1")
    # Active at the kill: redelivered after a backoff, as a crash mid-attempt is; no result.
    assert after["state"] == "delayed" and after["result"] is None, after
    await client.close()
