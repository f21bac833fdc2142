"""The handshake throttle on the loop `jobwire serve` uses (uvloop), and what it must not do.

Issue 10, finding 7: under uvloop, ``transport.pause_reading()`` inside ``connection_made`` is
ignored, so a host's held handshakes were all read at once (12 wrong hellos answered together);
and the backlog refusal answered ``UNAUTHORIZED`` to every connection of the host, so healthy
workers with the right token took it for a verdict and exited. Every test here runs the
in-process broker on a uvloop event loop.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import pytest
import uvloop

from broker.auth import FailureThrottle
from broker.config import ConfigError, load_settings
from client import Client
from client.errors import OverloadedError
from tests.conftest import RunningBroker
from tests.tools.wire import WireClient

StartBroker = Callable[..., Awaitable[RunningBroker]]
Wire = Callable[..., Awaitable[WireClient]]
SECRET = "s3cret-T0ken-for-tests"


@pytest.fixture
def event_loop_policy() -> Iterator[asyncio.AbstractEventLoopPolicy]:
    yield uvloop.EventLoopPolicy()


async def test_the_loop_is_uvloop() -> None:
    assert isinstance(asyncio.get_running_loop(), uvloop.Loop)


async def test_held_handshakes_are_checked_one_per_slot_on_uvloop(
    start_broker: StartBroker, wire: Wire
) -> None:
    broker = await start_broker(token=SECRET)
    assert broker.server is not None
    throttle = broker.server.auth_failures = FailureThrottle(base=0.3, cap=0.3)
    throttle.record_failure("127.0.0.1", asyncio.get_running_loop().time())
    clients = [await wire(broker, hello=False) for _ in range(6)]
    sent = [c.send("hello", {"version": 1, "token": "guess"}) for c in clients]
    answers = [asyncio.ensure_future(c.answer(r)) for c, r in zip(clients, sent, strict=True)]
    done, _ = await asyncio.wait(answers, timeout=30, return_when=asyncio.FIRST_COMPLETED)
    assert done
    # One slot per 0.3 s: when the first verdict arrives, at most the handshakes whose slot
    # came have been checked. Before the fix uvloop read all six at once (7 failures here).
    assert throttle.failures("127.0.0.1") <= 3
    for answer in await asyncio.gather(*answers):
        assert getattr(answer, "code", None) == "UNAUTHORIZED"
    assert throttle.failures("127.0.0.1") == 7


async def test_a_throttled_host_is_told_to_slow_down_not_that_its_token_is_wrong(
    start_broker: StartBroker, wire: Wire
) -> None:
    broker = await start_broker(token=SECRET)
    assert broker.server is not None
    throttle = broker.server.auth_failures = FailureThrottle(
        base=0.2, cap=0.2, max_backlog=0.3, forget_after=1.0)
    now = asyncio.get_running_loop().time()
    for _ in range(5):
        throttle.record_failure("127.0.0.1", now)
    held = [await wire(broker, hello=False) for _ in range(3)]  # take the slots of the backlog
    refused = await wire(broker, hello=False)
    event = await refused.next_event()
    assert event.body["code"] == "OVERLOADED" and "slowed down" in event.body["message"]

    # A first attempt that is slowed down raises OverloadedError, not AuthenticationError...
    client = Client(f"jobwire://{SECRET}@{broker.host}:{broker.port}")
    with pytest.raises(OverloadedError, match="slowed down"):
        await client.connect()
    await client.close()
    # ...and a client that waits (as every Worker does) keeps trying with backoff and gets in.
    client = Client(f"jobwire://{SECRET}@{broker.host}:{broker.port}")
    await asyncio.wait_for(client.connect(wait=True), 30)
    assert (await client.ping()) > 0
    await client.close()
    for connection in held:
        await connection.close()


def test_a_token_no_hello_can_carry_is_refused_at_start(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="at most 4096"):
        load_settings({"token": "x" * 4097}, {})
    token_file = tmp_path / "token"
    token_file.write_text("y" * 5000)
    with pytest.raises(ConfigError, match="5000 characters"):
        load_settings({"token_file": str(token_file)}, {})
    assert load_settings({"token": "z" * 4096}, {}).token == "z" * 4096
