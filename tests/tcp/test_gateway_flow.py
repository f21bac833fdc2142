"""The gateway's job timeout, flow-control and scheduler routes against a real broker (in-process,
port 0, real SQLite): durations in milliseconds in and out, bad input refused naming the field."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import pytest

from client import Client, JobContext, JobState, RateLimited
from tests.tcp.test_flow import make_worker, state_is
from tests.tcp.test_gateway_errors import assert_error
from tests.tools.clienttools import running, until
from tests.tools.gatewaytools import RunningGateway, client, gateway, http, make_gateway
from tests.tools.wire import WireClient

__all__ = ["client", "gateway", "http", "make_gateway"]  # fixtures, imported for pytest


async def test_a_job_timeout_in_ms_reaches_the_worker(
        http: httpx.AsyncClient, gateway: RunningGateway,
        wire: Callable[..., Awaitable[WireClient]]) -> None:
    reply = await http.post("/api/queues/slow/jobs", json={"name": "x",
                                                           "opts": {"timeout": 1234}})
    assert reply.status_code == 201, reply.text
    [job] = await (await wire(gateway.broker)).reserve("slow")
    assert job[11] == 1234  # ReservedJob.timeout_ms: milliseconds in, milliseconds on the wire


@pytest.mark.parametrize("bad", [0, -5, 1.5, "1s", True, 7 * 86_400_000 + 1])
async def test_a_bad_timeout_is_400_naming_it(http: httpx.AsyncClient, bad: Any) -> None:
    reply = await http.post("/api/queues/q/jobs", json={"name": "x", "opts": {"timeout": bad}})
    assert_error(reply, 400, "BAD_ARGUMENT", "opts.timeout")
    assert_error(await http.get("/api/queues/q"), 404, "NOT_FOUND")


async def test_limits_are_set_read_changed_and_cleared(
        http: httpx.AsyncClient, client: Client) -> None:
    reply = await http.put("/api/queues/sms/limits",
                           json={"rate": {"max": 10, "per": 1500}, "concurrency": 3})
    assert reply.status_code == 200, reply.text
    assert reply.json() == {"queue": "sms", "rate": {"max": 10, "per": 1500},
                            "concurrency": 3, "paused_until": None, "rate_free_at": None}
    limits = await client.queue("sms").limits()  # what the Python client reads back
    assert (limits.rate_max, limits.rate_period, limits.concurrency) == (10, 1.5, 3)

    # A field left out is unchanged; null clears it.
    changed = (await http.put("/api/queues/sms/limits", json={"concurrency": None})).json()
    assert changed["rate"] == {"max": 10, "per": 1500} and changed["concurrency"] is None
    assert (await http.get("/api/queues/sms/limits")).json() == changed

    cleared = await http.delete("/api/queues/sms/limits")
    assert cleared.status_code == 200
    assert cleared.json() == {"queue": "sms", "rate": None, "concurrency": None,
                              "paused_until": None, "rate_free_at": None}
    assert await client.queue("sms").limits() == (None, None, None, None, None)


async def test_both_limits_change_in_one_broker_request(
        http: httpx.AsyncClient, gateway: RunningGateway) -> None:
    """The broker's ``limit`` op sets both or neither: one request, so a failure cannot leave
    the rate changed and the concurrency not."""
    connection = gateway.server.app.state.gateway.client.connection
    before = connection.statistics().requests_sent
    reply = await http.put("/api/queues/both/limits",
                           json={"rate": {"max": 4, "per": 1000}, "concurrency": 2})
    assert reply.status_code == 200, reply.text
    assert connection.statistics().requests_sent - before == 1
    before = connection.statistics().requests_sent
    assert (await http.delete("/api/queues/both/limits")).status_code == 200
    assert connection.statistics().requests_sent - before == 2  # the queue's lookup, then one


async def test_a_not_now_pause_shows_as_paused_until(
        http: httpx.AsyncClient, client: Client, gateway: RunningGateway) -> None:
    await http.put("/api/queues/api/limits", json={"concurrency": 5})
    job = await client.queue("api").add("call")

    async def not_now(ctx: JobContext) -> None:
        raise RateLimited(600, pause_queue=True)

    before = time.time() * 1000
    async with running(make_worker(gateway.broker_url, "api", not_now)):
        await until(lambda: state_is(job, JobState.DELAYED))
    paused_until = (await http.get("/api/queues/api/limits")).json()["paused_until"]
    assert paused_until is not None and paused_until >= before + 500_000


@pytest.mark.parametrize(("body", "field"), [
    ({}, "body"),
    ({"rate": 5}, "rate"),
    ({"rate": {"max": 5}}, "rate"),
    ({"rate": {"max": 0, "per": 1000}}, "rate.max"),
    ({"rate": {"max": 5, "per": 0}}, "rate.per"),
    ({"rate": {"max": 5, "per": 32 * 86_400_000}}, "rate.per"),
    ({"concurrency": 0}, "concurrency"),
    ({"concurrency": "3"}, "concurrency"),
    ({"concurrency": 1, "burst": 2}, "burst"),
])
async def test_bad_limits_are_400_naming_the_field(
        http: httpx.AsyncClient, body: dict[str, Any], field: str) -> None:
    assert_error(await http.put("/api/queues/q/limits", json=body), 400, "BAD_ARGUMENT", field)
    assert_error(await http.get("/api/queues/q/limits"), 404, "NOT_FOUND")  # nothing created


async def test_limits_of_an_unknown_queue_are_404(http: httpx.AsyncClient) -> None:
    assert_error(await http.get("/api/queues/nope/limits"), 404, "NOT_FOUND")
    assert_error(await http.delete("/api/queues/nope/limits"), 404, "NOT_FOUND")


async def test_a_scheduler_is_upserted_listed_and_removed(
        http: httpx.AsyncClient, client: Client) -> None:
    body = {"every": 60_000, "name": "report", "data": {"kind": "daily"}, "limit": 5,
            "opts": {"attempts": 2, "timeout": 30_000, "backoff": {"type": "fixed", "delay": 500},
                     "remove_on_complete": 10}}
    created = await http.put("/api/queues/reports/schedulers/hourly", json=body)
    assert created.status_code == 201, created.text
    view = created.json()["scheduler"]
    assert view["key"] == "hourly" and view["every"] == 60_000 and view["cron"] is None
    assert view["name"] == "report" and view["data"] == {"kind": "daily"}
    assert view["limit"] == 5 and view["count"] == 1  # the first run is made at once
    assert view["opts"] == {"priority": 0, "attempts": 2, "timeout": 30_000,
                            "backoff": {"type": "fixed", "delay": 500, "jitter": 0.0},
                            "remove_on_complete": {"count": 10}}
    assert isinstance(view["next_run"], int)

    again = await http.put("/api/queues/reports/schedulers/hourly", json=body)
    assert again.status_code == 200 and again.json()["changed"] is False

    cron = await http.put("/api/queues/reports/schedulers/morning",
                          json={"cron": "0 9 * * *", "tz": "Europe/Berlin"})
    assert cron.status_code == 201, cron.text
    assert cron.json()["scheduler"]["name"] == "morning"  # the key when no name is given

    listed = (await http.get("/api/queues/reports/schedulers")).json()
    assert listed["total"] == 2
    assert [s["key"] for s in listed["schedulers"]] == ["hourly", "morning"]
    assert listed["schedulers"][1]["tz"] == "Europe/Berlin"
    # The Python client sees the same schedulers, in seconds.
    assert [s.every for s in await client.queue("reports").schedulers()] == [60.0, None]

    removed = await http.delete("/api/queues/reports/schedulers/hourly")
    assert removed.status_code == 200 and removed.json()["removed"] is True
    assert_error(await http.delete("/api/queues/reports/schedulers/hourly"), 404, "NOT_FOUND")
    keys = [s["key"] for s in (await http.get("/api/queues/reports/schedulers")).json()[
        "schedulers"]]
    assert keys == ["morning"]


@pytest.mark.parametrize(("body", "field"), [
    ([], "body"),
    ({}, "every"),
    ({"every": 1000, "cron": "* * * * *"}, "every"),
    ({"every": 0}, "every"),
    ({"every": 1.5}, "every"),
    ({"every": 1000, "tz": "UTC"}, "tz"),
    ({"cron": ""}, "cron"),
    ({"cron": "not a pattern"}, "cron"),
    ({"cron": "0 9 * * *", "tz": "Mars/Olympus"}, "tz"),
    ({"every": 1000, "start": 2000, "end": 1000}, "end"),
    ({"every": 1000, "limit": 0}, "limit"),
    ({"every": 1000, "name": 5}, "name"),
    ({"every": 1000, "opts": {"delay": 5}}, "opts.delay"),
    ({"every": 1000, "opts": {"job_id": "x"}}, "opts.job_id"),
    ({"every": 1000, "opts": {"timeout": 0}}, "opts.timeout"),
    ({"every": 1000, "repeat": True}, "repeat"),
])
async def test_bad_schedulers_are_400_naming_the_field(
        http: httpx.AsyncClient, body: Any, field: str) -> None:
    reply = await http.put("/api/queues/q/schedulers/k", json=body)
    assert_error(reply, 400, "BAD_ARGUMENT", field)
    assert_error(await http.get("/api/queues/q/schedulers"), 404, "NOT_FOUND")


async def test_a_too_long_key_is_400_and_an_unknown_queue_404(http: httpx.AsyncClient) -> None:
    reply = await http.put(f"/api/queues/q/schedulers/{'k' * 161}", json={"every": 1000})
    assert_error(reply, 400, "BAD_ARGUMENT", "key")
    assert_error(await http.get("/api/queues/nope/schedulers"), 404, "NOT_FOUND")
    assert_error(await http.delete("/api/queues/nope/schedulers/k"), 404, "NOT_FOUND")


async def test_openapi_documents_the_new_routes(http: httpx.AsyncClient) -> None:
    paths = (await http.get("/openapi.json")).json()["paths"]
    assert set(paths["/api/queues/{queue}/limits"]) == {"get", "put", "delete"}
    assert set(paths["/api/queues/{queue}/schedulers"]) == {"get"}
    assert set(paths["/api/queues/{queue}/schedulers/{key}"]) == {"put", "delete"}
