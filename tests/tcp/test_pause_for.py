"""``pause`` with ``for_ms`` (SPEC §8.12): a "not now" pause without a job in hand, over real TCP,
and the Python client's ``Queue.pause(for_=...)``."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from client import Client
from client.errors import BadArgumentError
from protocol.checks import MAX_DELAY_MS
from tests.conftest import RunningBroker
from tests.tools.wire import WireClient, job_spec

Wire = Callable[..., Awaitable[WireClient]]


async def test_pause_for_ms_holds_every_worker_until_it_ends(
    broker: RunningBroker, wire: Wire
) -> None:
    admin = await wire(broker)
    worker = await wire(broker)
    await admin.ok("enqueue", {"queue": "q", "jobs": [job_spec("a")]})
    before = (await admin.ok("time", {}))["now"]
    assert await admin.ok("pause", {"queue": "q", "for_ms": 60_000}) == {}
    until = (await admin.ok("limit", {"queue": "q"}))["limits"]["paused_until"]
    assert before + 60_000 <= until <= before + 60_000 + 30_000  # generous: a loaded machine
    assert (await worker.ok("reserve", {"queues": ["q"], "max": 1, "timeout_ms": 0}))["jobs"] == ()
    assert (await admin.ok("stats", {"queue": "q"}))["queues"]["q"]["paused"] is False
    await admin.ok("resume", {"queue": "q"})
    assert (await admin.ok("limit", {"queue": "q"}))["limits"]["paused_until"] is None
    got = (await worker.ok("reserve", {"queues": ["q"], "max": 1, "timeout_ms": 0}))["jobs"]
    assert len(got) == 1


@pytest.mark.parametrize("bad", [0, -1, MAX_DELAY_MS + 1, 1.5, "10"])
async def test_a_bad_for_ms_is_bad_argument_naming_it(
    broker: RunningBroker, wire: Wire, bad: Any
) -> None:
    admin = await wire(broker)
    error = await admin.error("pause", {"queue": "q", "for_ms": bad})
    assert error.code == "BAD_ARGUMENT" and error.message.startswith("for_ms")
    assert (await admin.ok("stats", {"queue": "q"}))["queues"]["q"]["paused"] is False


async def test_client_pause_for_seconds(broker: RunningBroker) -> None:
    async with Client(f"jobwire://{broker.host}:{broker.port}") as client:
        queue = client.queue("q")
        now = await client.broker_time()
        await queue.pause(for_=30)
        limits = await queue.limits()
        assert limits.paused_until is not None and limits.paused_until >= now + 30
        assert (await queue.stats()).paused is False
        with pytest.raises(BadArgumentError, match="for_ms"):
            await queue.pause(for_=0)
        with pytest.raises(ValueError):
            await queue.pause(for_=-1)
        await queue.resume()
        assert (await queue.limits()).paused_until is None


async def test_limits_report_when_the_rate_window_has_room(
    broker: RunningBroker, wire: Wire
) -> None:
    worker = await wire(broker)
    async with Client(f"jobwire://{broker.host}:{broker.port}") as client:
        queue = client.queue("q")
        await queue.set_rate_limit(1, 60)
        await queue.add("task", 1)
        await queue.add("task", 2)
        assert (await queue.limits()).rate_free_at is None  # a job may start now
        before = await client.broker_time()
        got = await worker.ok("reserve", {"queues": ["q"], "max": 2, "timeout_ms": 0})
        assert len(got["jobs"]) == 1
        free_at = (await queue.limits()).rate_free_at
        assert free_at is not None and before + 60 <= free_at <= before + 90  # generous bound
        await queue.clear_rate_limit()
        assert (await queue.limits()).rate_free_at is None
