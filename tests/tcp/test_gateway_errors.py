"""Bad input to the HTTP gateway: each case gets a clear status and a JSON error with a code, and
nothing the broker would refuse reaches it. Real broker and gateway (in-process, port 0)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import pytest
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from tests.conftest import RunningBroker
from tests.tools.clienttools import until
from tests.tools.gatewaytools import RunningGateway, gateway, http, make_gateway

__all__ = ["gateway", "http", "make_gateway"]  # fixtures, imported for pytest

GatewayFactory = Callable[..., Awaitable[RunningGateway]]


def assert_error(reply: httpx.Response, status: int, code: str, field: str | None = None) -> None:
    assert reply.status_code == status, reply.text
    assert reply.headers["content-type"].startswith("application/json")
    error = reply.json()["error"]
    assert error["code"] == code
    assert error["message"]
    if field is not None:
        assert error["message"].startswith(f"{field}:"), error["message"]


@pytest.mark.parametrize(("body", "field"), [
    ('{"name": ', "body"),
    ("[1, 2", "body"),
    ('{"name": "x", "data": NaN}', "body"),
])
async def test_malformed_json_is_400(http: httpx.AsyncClient, body: str, field: str) -> None:
    reply = await http.post("/api/queues/q/jobs", content=body)
    assert_error(reply, 400, "BAD_ARGUMENT", field)


@pytest.mark.parametrize(("body", "field"), [
    ({}, "name"),
    ([{"name": "x"}], "body"),
    ({"name": 7}, "name"),
    ({"name": ""}, "name"),
    ({"name": "x" * 201}, "name"),
    ({"name": "x", "payload": 1}, "payload"),
    ({"name": "x", "opts": []}, "opts"),
    ({"name": "x", "opts": {"delay": "5s"}}, "opts.delay"),
    ({"name": "x", "opts": {"delay": 1.5}}, "opts.delay"),
    ({"name": "x", "opts": {"delay": -1}}, "opts.delay"),
    ({"name": "x", "opts": {"attempts": 0}}, "opts.attempts"),
    ({"name": "x", "opts": {"priority": True}}, "opts.priority"),
    ({"name": "x", "opts": {"priority": 2**31}}, "opts.priority"),
    ({"name": "x", "opts": {"lease": 99}}, "opts.lease"),
    ({"name": "x", "opts": {"job_id": 5}}, "opts.job_id"),
    ({"name": "x", "opts": {"backoff": {"type": "linear"}}}, "opts.backoff.type"),
    ({"name": "x", "opts": {"backoff": {"delay": 10, "jitter": 2}}}, "opts.backoff.jitter"),
    ({"name": "x", "opts": {"remove_on_complete": "yes"}}, "opts.remove_on_complete"),
    ({"name": "x", "opts": {"removeOnComplete": True}}, "opts.removeOnComplete"),
    ({"jobs": []}, "jobs"),
    ({"jobs": {"name": "x"}}, "jobs"),
    ({"jobs": [{"name": "x"}, {"name": 1}]}, "jobs[1].name"),
    ({"jobs": [{"name": "x"}], "extra": 1}, "extra"),
])
async def test_wrong_types_are_400_naming_the_field(
        http: httpx.AsyncClient, body: Any, field: str) -> None:
    reply = await http.post("/api/queues/q/jobs", json=body)
    assert_error(reply, 400, "BAD_ARGUMENT", field)
    # Nothing reached the broker: the queue was never created.
    assert_error(await http.get("/api/queues/q"), 404, "NOT_FOUND")


async def test_an_empty_body_is_400(http: httpx.AsyncClient) -> None:
    assert_error(await http.post("/api/queues/q/jobs"), 400, "BAD_ARGUMENT", "body")


@pytest.mark.parametrize(("path", "body", "field"), [
    ("/api/queues/x/clean", {"state": "active"}, "state"),
    ("/api/queues/x/clean", {}, "state"),
    ("/api/queues/x/clean", {"state": "failed", "older_than": "1h"}, "older_than"),
    ("/api/queues/x/clean", {"state": "failed", "limit": 0}, "limit"),
    ("/api/queues/x/retry", {"ids": "1"}, "ids"),
    ("/api/queues/x/retry", {"ids": [1]}, "ids"),
    ("/api/queues/x/retry", {"limit": -1}, "limit"),
    ("/api/queues/x/retry", {"all": True}, "all"),
    ("/api/queues/x/retry", [], "body"),
])
async def test_admin_bodies_are_checked(http: httpx.AsyncClient, path: str, body: Any,
                                        field: str) -> None:
    await http.post("/api/queues/x/jobs", json={"name": "n"})
    assert_error(await http.post(path, json=body), 400, "BAD_ARGUMENT", field)


@pytest.mark.parametrize("query", ["limit=0", "limit=1001", "limit=ten", "offset=-1"])
async def test_bad_paging_is_400(http: httpx.AsyncClient, query: str) -> None:
    await http.post("/api/queues/x/jobs", json={"name": "n"})
    reply = await http.get(f"/api/queues/x/failed?{query}")
    assert_error(reply, 400, "BAD_ARGUMENT", query.split("=")[0])


@pytest.mark.parametrize(("method", "path"), [
    ("GET", "/api/queues/ghost"),
    ("GET", "/api/queues/ghost/failed"),
    ("POST", "/api/queues/ghost/pause"),
    ("POST", "/api/queues/ghost/resume"),
    ("POST", "/api/queues/ghost/retry"),
    ("GET", "/api/jobs/no-such-job"),
    ("DELETE", "/api/jobs/no-such-job"),
])
async def test_unknown_queues_and_jobs_are_404(http: httpx.AsyncClient, method: str,
                                               path: str) -> None:
    assert_error(await http.request(method, path), 404, "NOT_FOUND")
    # A typo did not create the queue.
    names = [q["name"] for q in (await http.get("/api/queues")).json()["queues"]]
    assert "ghost" not in names


async def test_unknown_routes_and_methods_answer_json(http: httpx.AsyncClient) -> None:
    assert_error(await http.get("/api/nothing"), 404, "NOT_FOUND")
    assert_error(await http.put("/api/queues"), 405, "METHOD_NOT_ALLOWED")


async def test_a_payload_over_the_brokers_cap_is_413_before_the_broker(
        start_broker: Callable[..., Awaitable[RunningBroker]],
        make_gateway: GatewayFactory) -> None:
    broker = await start_broker(max_payload=1024)
    running = await make_gateway(broker)
    async with httpx.AsyncClient(base_url=running.base_url) as session:
        reply = await session.post("/api/queues/big/jobs", json={"name": "x", "data": "y" * 2000})
        assert_error(reply, 413, "PAYLOAD_TOO_LARGE", "data")
        batch = {"jobs": [{"name": "x"}, {"name": "x", "data": "y" * 2000}]}
        assert_error(await session.post("/api/queues/big/jobs", json=batch), 413,
                     "PAYLOAD_TOO_LARGE", "jobs[1].data")
        assert_error(await session.get("/api/queues/big"), 404, "NOT_FOUND")  # nothing created
        ok = await session.post("/api/queues/big/jobs", json={"name": "x", "data": "y" * 900})
        assert ok.status_code == 201


async def raw_http(port: int, head: bytes, body_chunks: tuple[bytes, ...] = ()) -> bytes:
    """Send ``head`` (and chunks), then read the response's status line and headers."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(head)
        for chunk in body_chunks:
            writer.write(chunk)
        await writer.drain()
        async with asyncio.timeout(20):  # bounds a hang only: a server waiting for the body
            return await reader.readuntil(b"\r\n\r\n")
    finally:
        writer.close()


async def test_an_oversized_body_is_refused_before_it_is_sent(gateway: RunningGateway) -> None:
    cap = gateway.server.app.state.gateway.max_frame
    head = (b"POST /api/queues/q/jobs HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            b"Content-Type: application/json\r\n"
            b"Content-Length: " + str(cap + 1).encode() + b"\r\n\r\n")
    answer = await raw_http(gateway.server.port, head)  # not one byte of the body is sent
    assert answer.startswith(b"HTTP/1.1 413 ")


async def test_a_chunked_body_is_cut_off_at_the_cap(
        start_broker: Callable[..., Awaitable[RunningBroker]],
        make_gateway: GatewayFactory) -> None:
    broker = await start_broker(max_payload=1024, max_frame=8192)
    running = await make_gateway(broker)
    chunk = b"x" * 4096
    framed = f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n"
    head = (b"POST /api/queues/q/jobs HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n")
    answer = await raw_http(running.server.port, head, (framed,) * 3)  # 12 KiB, no end chunk
    assert answer.startswith(b"HTTP/1.1 413 ")


async def test_bearer_token(start_broker: Callable[..., Awaitable[RunningBroker]],
                            make_gateway: GatewayFactory) -> None:
    broker = await start_broker(token="s3cret")
    running = await make_gateway(broker)  # the broker URL's token protects HTTP too
    async with httpx.AsyncClient(base_url=running.base_url) as session:
        missing = await session.get("/api/queues")
        assert_error(missing, 401, "UNAUTHORIZED")
        assert missing.headers["www-authenticate"].startswith("Bearer")
        assert_error(await session.get("/metrics"), 401, "UNAUTHORIZED")
        wrong = {"Authorization": "Bearer s3cre"}
        assert_error(await session.get("/api/queues", headers=wrong), 401, "UNAUTHORIZED")
        basic = {"Authorization": "Basic czNjcmV0"}
        assert_error(await session.get("/api/queues", headers=basic), 401, "UNAUTHORIZED")
        # Refused before the body is read: 401, not 413.
        huge = await session.post("/api/queues/q/jobs", content=b"x" * (9 << 20))
        assert_error(huge, 401, "UNAUTHORIZED")
        right = {"Authorization": "Bearer s3cret"}
        assert (await session.get("/api/queues", headers=right)).status_code == 200
        assert (await session.get("/metrics", headers=right)).status_code == 200
        # The dashboard's shell and the API description hold no broker data.
        assert (await session.get("/")).status_code == 200
        assert (await session.get("/openapi.json")).status_code == 200


async def test_a_separate_http_token(broker: RunningBroker, make_gateway: GatewayFactory) -> None:
    running = await make_gateway(broker, token="http-only")
    async with httpx.AsyncClient(base_url=running.base_url) as session:
        assert_error(await session.get("/api/queues"), 401, "UNAUTHORIZED")
        ok = await session.get("/api/queues", headers={"Authorization": "Bearer http-only"})
        assert ok.status_code == 200


async def test_broker_down_is_503_then_recovers(
        start_broker: Callable[..., Awaitable[RunningBroker]], make_gateway: GatewayFactory,
        tmp_path: Any) -> None:
    broker = await start_broker()
    running = await make_gateway(broker)
    async with httpx.AsyncClient(base_url=running.base_url, timeout=30) as session:
        assert (await session.get("/api/queues")).status_code == 200
        port = broker.port
        await broker.stop()
        down = await session.get("/api/queues")
        assert_error(down, 503, "BROKER_UNAVAILABLE")
        assert down.headers["retry-after"]
        assert_error(await session.get("/metrics"), 503, "BROKER_UNAVAILABLE")
        await start_broker(port=port, data_dir=broker.data_dir)

        async def answers() -> bool:
            return (await session.get("/api/queues")).status_code == 200

        await until(answers, 30)  # the gateway reconnects by itself


async def test_a_refused_broker_token_is_503_with_the_reason(
        start_broker: Callable[..., Awaitable[RunningBroker]],
        make_gateway: GatewayFactory) -> None:
    broker = await start_broker(token="right")
    running = await make_gateway(
        broker, broker_url=f"jobwire://wrong@{broker.host}:{broker.port}", token="")
    async with httpx.AsyncClient(base_url=running.base_url, timeout=30) as session:
        reply = await session.get("/api/queues")
        assert_error(reply, 503, "BROKER_UNAVAILABLE")
        assert "UNAUTHORIZED" in reply.json()["error"]["message"]


async def test_queue_full_is_429(start_broker: Callable[..., Awaitable[RunningBroker]],
                                 make_gateway: GatewayFactory) -> None:
    broker = await start_broker(max_queue_jobs=2)
    running = await make_gateway(broker)
    async with httpx.AsyncClient(base_url=running.base_url) as session:
        ok = await session.post("/api/queues/f/jobs", json={"jobs": [{"name": "x"}] * 2})
        assert ok.status_code == 201
        full = await session.post("/api/queues/f/jobs", json={"name": "x"})
        assert_error(full, 429, "QUEUE_FULL")
        assert full.headers["retry-after"] == "1"


async def test_a_bug_answers_json_500(gateway: RunningGateway, http: httpx.AsyncClient) -> None:
    async def broken(_request: Request) -> Response:
        raise ZeroDivisionError("a bug")

    gateway.server.app.router.routes.append(Route("/api/broken", broken))
    assert_error(await http.get("/api/broken"), 500, "INTERNAL")
    assert (await http.get("/api/queues")).status_code == 200  # and the gateway goes on


async def test_a_cross_site_change_is_refused(http: httpx.AsyncClient,
                                              gateway: RunningGateway) -> None:
    await http.post("/api/queues/x/jobs", json={"name": "n"})
    own = f"http://127.0.0.1:{gateway.server.port}"
    for origin in ("http://evil.example", "null", f"http://localhost:{gateway.server.port}"):
        reply = await http.post("/api/queues/x/pause", headers={"Origin": origin})
        assert_error(reply, 403, "FORBIDDEN")
        reply = await http.delete("/api/jobs/1", headers={"Origin": origin})
        assert_error(reply, 403, "FORBIDDEN")
    assert (await http.get("/api/queues/x")).json()["paused"] is False
    # The dashboard's own requests (same origin) and programs (no Origin) go through.
    assert (await http.post("/api/queues/x/pause", headers={"Origin": own})).status_code == 200
    assert (await http.post("/api/queues/x/resume")).status_code == 200
    # A cross-site GET is answered (the browser keeps the reply from the page: no CORS headers).
    assert (await http.get("/api/queues", headers={"Origin": "http://evil.example"})
            ).status_code == 200


async def test_a_loopback_gateway_answers_only_loopback_host_names(
        http: httpx.AsyncClient) -> None:
    for host in ("evil.example", "evil.example:7480", "10.0.0.1"):
        assert_error(await http.get("/api/queues", headers={"Host": host}), 403, "FORBIDDEN")
        assert_error(await http.get("/", headers={"Host": host}), 403, "FORBIDDEN")
    for host in ("localhost:1", "127.0.0.1", "[::1]:7480", "app.localhost"):
        assert (await http.get("/api/queues", headers={"Host": host})).status_code == 200
