"""The ``time`` operation: the broker's clock, for clients' clock-skew checks."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

from client import Client
from tests.conftest import RunningBroker
from tests.tools.wire import WireClient

Wire = Callable[..., Awaitable[WireClient]]


def _wall_ms() -> int:
    return time.time_ns() // 1_000_000


async def test_time_answers_the_brokers_clock(broker: RunningBroker, wire: Wire) -> None:
    client = await wire(broker)
    before = _wall_ms()
    body = await client.ok("time", {"a later field": 1})  # unknown keys are ignored
    after = _wall_ms()
    assert set(body) == {"now"}
    assert before <= body["now"] <= after  # same host, same clock


async def test_time_needs_the_handshake(broker: RunningBroker, wire: Wire) -> None:
    client = await wire(broker, hello=False)
    assert (await client.error("time", {})).code == "HANDSHAKE_REQUIRED"


async def test_client_broker_time_is_in_seconds(broker: RunningBroker) -> None:
    async with Client(f"jobwire://{broker.host}:{broker.port}") as client:
        before = time.time()
        broker_time = await client.broker_time()
        after = time.time()
    assert before - 0.001 <= broker_time <= after + 0.001  # milliseconds on the wire
