"""A parked ``reserve`` woken by new jobs is answered within the wake-up itself.

Its reply used to leave from a flush scheduled for later in the loop iteration, behind the
callback that hands the next commit to the SQLite thread (and yields the CPU to it): 100-200 µs
of the start latency at a low rate (``bench/README.md``, "Speed round 2, fourth part").
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import pytest

from broker.outbox import Outbox
from protocol.messages import Reply
from tests.conftest import RunningBroker
from tests.tools.clienttools import until
from tests.tools.wire import R_ID, WireClient, job_spec

Connect = Callable[..., Awaitable[WireClient]]


async def test_a_woken_reserve_is_written_during_the_wake_up(
    broker: RunningBroker, wire: Connect, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = broker.server
    assert server is not None
    worker, producer = await wire(broker), await wire(broker)
    parked = worker.send("reserve", {"queues": ["q"], "wait_ms": 30_000})
    await until(lambda: any(session.parked for session in server.sessions.values()))

    waking = False
    written_while_waking: list[int] = []
    write = Outbox.write

    def recording_write(outbox: Outbox) -> None:
        if waking and outbox.queued_bytes:
            written_while_waking.append(outbox.queued_bytes)
        write(outbox)

    after_ops = server.after_ops

    def watched_after_ops() -> None:
        nonlocal waking
        waking = True
        try:
            after_ops()
        finally:
            waking = False

    monkeypatch.setattr(Outbox, "write", recording_write)
    monkeypatch.setattr(server, "after_ops", watched_after_ops)
    await producer.enqueue("q", job_spec("a"))
    answer = await worker.answer(parked)
    assert isinstance(answer, Reply) and answer.body["jobs"][0][R_ID] == "a"
    assert written_while_waking, "the reserve reply was not written by the wake-up"
