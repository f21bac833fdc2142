"""The smaller SPEC promises of issue 16, item 4, each checked over real TCP."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from client.endpoint import parse_url
from tests.conftest import RunningBroker
from tests.tools.wire import R_ID, R_TOKEN, WireClient, job_spec

StartBroker = Callable[..., Awaitable[RunningBroker]]
Wire = Callable[..., Awaitable[WireClient]]


async def test_hello_versions(broker: RunningBroker, wire: Wire) -> None:
    client = await wire(broker, hello=False)
    assert (await client.error("hello", {"version": -1})).code == "BAD_ARGUMENT"
    assert (await client.error("hello", {"version": "1"})).code == "BAD_ARGUMENT"
    assert (await client.error("hello", {"version": 2})).code == "UNSUPPORTED_VERSION"


async def test_a_token_sent_to_a_broker_without_one_is_ignored(
    broker: RunningBroker, wire: Wire
) -> None:
    client = await wire(broker, hello=False)
    assert (await client.ok("hello", {"version": 1, "token": "anything"}))["version"] == 1


def test_reserved_characters_of_a_token_are_percent_encoded_in_urls() -> None:
    assert parse_url("jobwire://a%40b%3Ac%2Fd%25e@127.0.0.1:7400").token == "a@b:c/d%e"


async def test_retry_failed_with_a_repeated_id(broker: RunningBroker, wire: Wire) -> None:
    client = await wire(broker)
    await client.enqueue("rf", job_spec("rf-1", max_attempts=1))
    [job] = await client.reserve("rf")
    await client.ok("fail", {"items": [[job[R_ID], job[R_TOKEN], "boom"]]})
    body = await client.ok("retry_failed", {"queue": "rf", "ids": ["rf-1", "rf-1"]})
    assert body["retried"] == 1 and list(body["not_failed"]) == []


async def test_release_after_cancel_is_not_found(broker: RunningBroker, wire: Wire) -> None:
    client = await wire(broker)
    await client.enqueue("rc", job_spec("rc-1"))
    [job] = await client.reserve("rc")
    assert (await client.ok("cancel", {"id": "rc-1"}))["state"] == "active"
    body = await client.ok("release", {"items": [[job[R_ID], job[R_TOKEN]]]})
    assert body["results"][0][0] == "NOT_FOUND"


async def test_idle_time_counts_from_the_answer_of_a_long_poll(
    start_broker: StartBroker, wire: Wire
) -> None:
    broker = await start_broker(idle_timeout=1.0)
    client = await wire(broker)
    loop = asyncio.get_running_loop()
    request = client.send("reserve", {"queues": ["idle"], "max": 1, "wait_ms": 1_500})
    await client.answer(request)  # answered empty after 1.5 s, with nothing received meanwhile
    answered = loop.time()
    await asyncio.sleep(0.5)  # counted from the answer, the connection is not idle yet
    assert (await client.ok("ping", {}))["now"] > 0
    event = await client.next_event(within=5)
    assert event.body["code"] == "TIMEOUT" and loop.time() - answered >= 1.0
