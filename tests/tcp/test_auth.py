"""Authentication over real TCP against an in-process broker: UNAUTHORIZED then close, requests
before an authenticated hello refused, slowed retries.

The policy: ``tests/pure/test_auth.py``; real processes: ``tests/process/test_auth.py``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from broker.auth import FailureThrottle
from tests.conftest import RunningBroker
from tests.tools.wire import WireClient, job_spec

StartBroker = Callable[..., Awaitable[RunningBroker]]
Wire = Callable[..., Awaitable[WireClient]]
SECRET = "s3cret-T0ken-for-tests"


# --------------------------------------------------------------------------- over TCP


async def test_missing_or_wrong_token_gets_unauthorized_then_close(
    start_broker: StartBroker, wire: Wire
) -> None:
    broker = await start_broker(token=SECRET)
    for token in (None, "", "wrong", SECRET + "x", SECRET[:-1]):
        client = await wire(broker, hello=False)
        error = await client.error("hello", {"version": 1, "token": token})
        assert (error.code, error.message) == ("UNAUTHORIZED", "missing or wrong token")
        assert SECRET not in error.message
        await client.wait_closed()
        assert broker.server is not None
        broker.server.auth_failures.record_success("127.0.0.1")  # keep this test fast
    client = await wire(broker, token=SECRET)
    assert (await client.ok("ping", {}))["now"] > 0


async def test_requests_before_an_authenticated_hello_are_refused(
    start_broker: StartBroker, wire: Wire
) -> None:
    broker = await start_broker(token=SECRET)
    client = await wire(broker, hello=False)
    error = await client.error("enqueue", {"queue": "q", "jobs": [job_spec("x")]})
    assert error.code == "HANDSHAKE_REQUIRED"
    assert (await client.error("get", {"id": "x"})).code == "HANDSHAKE_REQUIRED"


async def test_repeated_failures_from_one_host_slow_its_next_handshakes(
    start_broker: StartBroker, wire: Wire
) -> None:
    broker = await start_broker(token=SECRET)
    assert broker.server is not None
    # The slot is counted from the broker's record of the previous failure (the broker runs on
    # this loop, so its clock is ours): measuring from when the test opened the next connection
    # would fail on a loaded machine, where that can come well after the failure.
    failed_at: list[float] = []

    class Recording(FailureThrottle):
        __slots__ = ()

        def record_failure(self, host: str, now: float) -> None:
            failed_at.append(now)
            super().record_failure(host, now)

    throttle = broker.server.auth_failures = Recording(base=0.2, cap=1.0)
    loop = asyncio.get_running_loop()
    for attempt in range(3):
        client = await wire(broker, hello=False)
        assert (await client.error("hello", {"version": 1, "token": "guess"})).code == (
            "UNAUTHORIZED")
        if attempt:
            # the n-th attempt was read only at the slot the n-1 failures before it imposed
            assert failed_at[attempt] >= failed_at[attempt - 1] + throttle.delay(attempt) - 0.02
        await client.wait_closed()
    assert throttle.failures("127.0.0.1") == 3

    client = await wire(broker, token=SECRET)  # even the right token waits for the slot
    assert loop.time() >= failed_at[-1] + throttle.delay(3) - 0.02
    assert throttle.failures("127.0.0.1") == 0  # a success forgives
    assert (await client.ok("ping", {}))["now"] > 0
