"""The gateway's newer routes against a real broker (port 0) and the gateway on the same loop:
job lists by state, workers, lease holders, and job events as Server-Sent Events (one shared
broker subscription, a bounded number of streams)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from client import Client, Worker
from tests.tools.clienttools import running, until
from tests.tools.gatewaytools import RunningGateway, client, fail_jobs, gateway, http, make_gateway

__all__ = ["client", "gateway", "http", "make_gateway"]  # fixtures, imported for pytest


async def test_jobs_by_state_page_in_each_states_order(http: httpx.AsyncClient,
                                                       client: Client) -> None:
    queue = client.queue("lists")
    await queue.add_bulk([{"name": "w", "data": i, "priority": 5 - i} for i in range(5)])
    await queue.add("later", 1, delay=60)
    page = (await http.get("/api/queues/lists/jobs?state=waiting&limit=2")).json()
    assert page["total"] == 5 and page["next_offset"] == 2
    assert [job["data"] for job in page["jobs"]] == [4, 3]  # lowest priority value runs first
    rest = (await http.get("/api/queues/lists/jobs?state=waiting&offset=2&limit=10")).json()
    assert [job["data"] for job in rest["jobs"]] == [2, 1, 0] and rest["next_offset"] is None
    both = (await http.get("/api/queues/lists/jobs?state=delayed,waiting")).json()
    assert both["total"] == 6 and both["jobs"][0]["name"] == "later"
    assert both["states"] == ["delayed", "waiting"]


async def test_job_lists_refuse_bad_states_and_unknown_queues(http: httpx.AsyncClient,
                                                              client: Client) -> None:
    await client.queue("known").add("x")
    for query, field in (("", "state"), ("state=sleeping", "state[0]"),
                         ("state=failed,failed", "state"), ("state=failed&limit=0", "limit")):
        reply = await http.get(f"/api/queues/known/jobs?{query}")
        assert reply.status_code == 400, query
        assert reply.json()["error"]["code"] == "BAD_ARGUMENT"
        assert reply.json()["error"]["message"].startswith(f"{field}:")
    missing = await http.get("/api/queues/nope/jobs?state=waiting")
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "NOT_FOUND"


async def test_workers_and_the_lease_holder_of_an_active_job(
        gateway: RunningGateway, http: httpx.AsyncClient, client: Client,
        monkeypatch: pytest.MonkeyPatch) -> None:
    started = asyncio.Event()
    release = asyncio.Event()

    async def hold(job: Any) -> str:
        started.set()
        await release.wait()
        return "done"

    async def no_scan(*args: Any) -> None:
        raise AssertionError("get names the holder: no list_jobs scan (older brokers only)")

    monkeypatch.setattr("client.gateway.api.lease_holder", no_scan)
    job = await client.queue("held").add("slow", {"n": 1}, timeout=30)
    worker = Worker(gateway.broker_url, "held", hold, handle_signals=False, poll_wait=0.2,
                    client_name="holder-7")
    async with running(worker):
        await asyncio.wait_for(started.wait(), 15)
        workers = (await http.get("/api/workers")).json()
        (mine,) = [w for w in workers["workers"] if w["client"] == "holder-7"]
        assert mine["queues"] == ["held"] and mine["held"] == 1
        everyone = (await http.get("/api/workers?all=true")).json()
        assert everyone["total"] > workers["total"]  # the gateway's and the test's connections
        view = (await http.get(f"/api/jobs/{job.id}")).json()
        assert view["state"] == "active" and view["lease_holder_known"] is True
        assert view["lease_holder"]["client"] == "holder-7"
        assert view["lease_holder"]["conn"] == mine["conn"]
        assert view["timeout_ms"] == 30_000
        active = (await http.get("/api/queues/held/jobs?state=active")).json()
        assert active["jobs"][0]["conn"] == mine["conn"]
        release.set()

        async def completed() -> bool:
            return (await client.queue("held").stats()).completed == 1

        await until(completed, 15)
    done = (await http.get(f"/api/jobs/{job.id}")).json()
    assert done["lease_holder"] is None and done["lease_holder_known"] is True
    assert (await http.get("/api/workers?all=maybe")).status_code == 400


async def sse_events(reply: httpx.Response) -> AsyncIterator[tuple[str, dict[str, Any]]]:
    """``(event, data)`` of each SSE message of a streaming response."""
    kind = ""
    async for line in reply.aiter_lines():
        if line.startswith("event: "):
            kind = line[7:]
        elif line.startswith("data: "):
            yield kind, json.loads(line[6:])


async def test_events_stream_as_server_sent_events_with_filters(
        gateway: RunningGateway, http: httpx.AsyncClient, client: Client) -> None:
    async with http.stream("GET", "/api/events?queue=watched&kind=added&kind=completed") as reply:
        assert reply.status_code == 200
        assert reply.headers["content-type"].startswith("text/event-stream")
        await client.queue("other").add("ignored")
        job = await client.queue("watched").add("seen", {"x": 1})
        async with running(Worker(gateway.broker_url, "watched", lambda j: {"ok": j.data["x"]},
                                  handle_signals=False, poll_wait=0.2)):
            got: list[tuple[str, dict[str, Any]]] = []
            async with asyncio.timeout(15):
                async for kind, data in sse_events(reply):
                    got.append((kind, data))
                    if kind == "completed":
                        break
    assert [kind for kind, _ in got] == ["added", "completed"]
    added, completed = got[0][1], got[1][1]
    assert added["job_id"] == job.id and added["queue"] == "watched" and added["state"] == "waiting"
    assert completed["result"] == {"ok": 1} and completed["result_encoding"] == "msgpack"
    assert completed["seq"] > added["seq"] and isinstance(completed["time"], int)
    bad = await http.get("/api/events?kind=lagged")
    assert bad.status_code == 400 and bad.json()["error"]["message"].startswith("kind:")


async def open_stream(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, int, bytes]:
    """A raw HTTP/1.1 GET /api/events: the connection, the status and what was read of it."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET /api/events HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    await writer.drain()
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    body = b""
    if status != 200:
        length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
        body = await reader.readexactly(length)
    return reader, writer, status, body


async def test_a_thousand_streams_get_429_past_the_limit_and_the_gateway_survives(
        gateway: RunningGateway, http: httpx.AsyncClient, client: Client) -> None:
    port = gateway.server.port
    opened = await asyncio.gather(*(open_stream(port) for _ in range(1000)))
    try:
        statuses = [status for _, _, status, _ in opened]
        assert statuses.count(200) == 100  # the default --http-max-streams
        assert statuses.count(429) == 900
        refused = json.loads(next(body for _, _, status, body in opened if status == 429))
        assert refused["error"]["code"] == "OVERLOADED"
        assert "--http-max-streams" in refused["error"]["message"]
        # The gateway still answers, and the open streams still get events.
        assert (await http.get("/api/queues")).status_code == 200
        await client.queue("after").add("ping")
        reader = next(r for r, _, status, _ in opened if status == 200)
        async with asyncio.timeout(15):
            while b"event: added" not in await reader.readline():
                pass
    finally:
        for _, writer, _, _ in opened:
            writer.close()
    # Closed streams leave the hub, so new ones are served again.
    await until(lambda: not gateway.server.app.state.events.listeners, 15)

    async def unsubscribed() -> bool:  # the last stream out ends the broker subscription
        return (await client.metrics())["broker"]["subscriptions"] == 0

    await until(unsubscribed, 15)
    async with http.stream("GET", "/api/events") as again:
        assert again.status_code == 200


async def test_metrics_carry_the_brokers_histograms_counters_and_process_gauges(
        gateway: RunningGateway, http: httpx.AsyncClient, client: Client) -> None:
    from prometheus_client.parser import text_string_to_metric_families

    await client.queue("measured").add_bulk([("ok", i) for i in range(4)])
    async with running(Worker(gateway.broker_url, "measured", lambda job: job.data,
                              handle_signals=False, poll_wait=0.2)):
        async def done() -> bool:
            return (await client.queue("measured").stats()).completed == 4

        await until(done, 15)
    await fail_jobs(gateway.broker_url, "measured", 1)
    reply = await http.get("/metrics")
    assert reply.status_code == 200
    families = {f.name: f for f in text_string_to_metric_families(reply.text)}  # raises if bad
    def value(family: str, sample: str, **labels: str) -> float:
        (found,) = [s.value for s in families[family].samples
                    if s.name == sample and s.labels == labels]
        return found

    assert families["jobwire_jobs_added"].type == "counter"
    assert value("jobwire_jobs_added", "jobwire_jobs_added_total", queue="measured") == 5
    assert value("jobwire_jobs_failed", "jobwire_jobs_failed_total", queue="measured") == 1
    for name in ("jobwire_jobs_retried", "jobwire_jobs_expired"):
        assert value(name, f"{name}_total", queue="measured") == 0
    processing = families["jobwire_job_processing_seconds"]
    assert processing.type == "histogram"
    assert value(processing.name, "jobwire_job_processing_seconds_count", queue="measured") == 4
    assert value(processing.name, "jobwire_job_processing_seconds_bucket", queue="measured",
                 le="+Inf") == 4
    buckets = [s.value for s in processing.samples if s.name.endswith("_bucket")
               and s.labels["queue"] == "measured"]
    assert buckets == sorted(buckets)  # cumulative
    assert value("jobwire_job_wait_seconds", "jobwire_job_wait_seconds_count",
                 queue="measured") == 5
    assert value("jobwire_journal_commit_batch_size", "jobwire_journal_commit_batch_size_count") > 0
    assert value("jobwire_journal_commit_seconds", "jobwire_journal_commit_seconds_count") > 0
    assert value("jobwire_broker_resident_memory_bytes",
                 "jobwire_broker_resident_memory_bytes") > 1 << 20
    assert value("jobwire_journal_bytes", "jobwire_journal_bytes") > 0
    assert value("jobwire_broker_connections", "jobwire_broker_connections") >= 2
