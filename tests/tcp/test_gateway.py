"""The HTTP gateway's REST routes against a real broker (in-process, port 0, real SQLite) with
the gateway on the same event loop and a real HTTP client. Bad input: ``test_gateway_errors``."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import httpx
from starlette.routing import Route

from client import Client, JobState
from tests.tools.gatewaytools import RunningGateway, client, fail_jobs, gateway, http, make_gateway

__all__ = ["client", "gateway", "http", "make_gateway"]  # fixtures, imported for pytest


async def test_add_one_job_then_read_it_back_with_times_in_ms(
        http: httpx.AsyncClient, client: Client) -> None:
    reply = await http.post("/api/queues/emails/jobs", json={
        "name": "send", "data": {"to": "ada@example.com", "n": [1, 2]},
        "opts": {"delay": 1500, "attempts": 4, "priority": 3, "backoff": 250, "lease": 5000},
    })
    assert reply.status_code == 201
    added = reply.json()["job"]
    assert added["queue"] == "emails" and added["name"] == "send"
    assert added["state"] == "delayed" and added["duplicate"] is False

    job = (await http.get(f"/api/jobs/{added['id']}")).json()
    assert job["data"] == {"to": "ada@example.com", "n": [1, 2]}
    assert job["data_encoding"] == "msgpack"
    assert job["max_attempts"] == 4 and job["priority"] == 3 and job["state"] == "delayed"
    assert job["run_at"] - job["created_at"] == 1500  # milliseconds in, milliseconds out
    # The Python client (msgpack by default) reads what HTTP wrote.
    assert (await client.get_job(added["id"])).data == {"to": "ada@example.com", "n": [1, 2]}


async def test_a_batch_is_added_in_order_and_counted(http: httpx.AsyncClient) -> None:
    reply = await http.post("/api/queues/batch/jobs", json={"jobs": [
        {"name": "a", "data": 1}, {"name": "b"}, {"name": "c", "opts": {"delay": 60_000}},
    ]})
    assert reply.status_code == 201
    jobs = reply.json()["jobs"]
    assert [job["name"] for job in jobs] == ["a", "b", "c"]
    assert [job["state"] for job in jobs] == ["waiting", "waiting", "delayed"]
    queues = (await http.get("/api/queues")).json()
    (batch,) = [q for q in queues["queues"] if q["name"] == "batch"]
    assert (batch["waiting"], batch["delayed"], batch["paused"]) == (2, 1, False)
    assert queues["broker"]["connections"] >= 1
    assert (await http.get("/api/queues/batch")).json()["waiting"] == 2


async def test_a_known_job_id_answers_the_stored_job_with_200(http: httpx.AsyncClient) -> None:
    body = {"name": "once", "data": "first", "opts": {"job_id": "order-42"}}
    first = await http.post("/api/queues/orders/jobs", json=body)
    again = await http.post("/api/queues/orders/jobs", json={**body, "data": "second"})
    assert first.status_code == 201 and again.status_code == 200
    assert again.json()["job"]["duplicate"] is True
    assert (await http.get("/api/jobs/order-42")).json()["data"] == "first"


async def test_failed_jobs_page_with_traceback(gateway: RunningGateway,
                                               http: httpx.AsyncClient) -> None:
    ids = await fail_jobs(gateway.broker_url, "crashy", 3)
    first = (await http.get("/api/queues/crashy/failed", params={"limit": 2})).json()
    assert first["total"] == 3 and len(first["jobs"]) == 2 and first["next_offset"] == 2
    rest = (await http.get("/api/queues/crashy/failed",
                           params={"offset": 2, "limit": 2})).json()
    assert len(rest["jobs"]) == 1 and rest["next_offset"] is None
    listed = [job["id"] for job in first["jobs"] + rest["jobs"]]
    assert sorted(listed) == sorted(ids)
    job = first["jobs"][0]
    assert job["state"] == "failed" and job["attempts"] == 1
    assert job["error"].startswith("RuntimeError: boom") and "Traceback" in job["error"]


async def test_retry_one_then_all(gateway: RunningGateway, http: httpx.AsyncClient) -> None:
    ids = await fail_jobs(gateway.broker_url, "again", 3)
    one = await http.post("/api/queues/again/retry", json={"ids": [ids[0]]})
    assert one.status_code == 200 and one.json() == {"retried": 1}
    assert (await http.get(f"/api/jobs/{ids[0]}")).json()["state"] == "waiting"
    not_failed = await http.post("/api/queues/again/retry", json={"ids": [ids[0]]})
    assert not_failed.status_code == 409
    assert not_failed.json()["error"]["code"] == "CONFLICT"
    rest = await http.post("/api/queues/again/retry")
    assert rest.json() == {"retried": 2}
    queue = (await http.get("/api/queues/again")).json()
    assert (queue["failed"], queue["waiting"]) == (0, 3)


async def test_pause_and_resume(http: httpx.AsyncClient) -> None:
    await http.post("/api/queues/p/jobs", json={"name": "x"})
    paused = await http.post("/api/queues/p/pause")
    assert paused.json() == {"name": "p", "paused": True}
    assert (await http.get("/api/queues/p")).json()["paused"] is True
    await http.post("/api/queues/p/resume")
    assert (await http.get("/api/queues/p")).json()["paused"] is False


async def test_clean_by_state_and_limit(http: httpx.AsyncClient) -> None:
    await http.post("/api/queues/c/jobs", json={"jobs": [{"name": "x"}] * 5})
    reply = await http.post("/api/queues/c/clean", json={"state": "waiting", "limit": 2})
    assert reply.json() == {"removed": 2}
    reply = await http.post("/api/queues/c/clean",
                            json={"state": "waiting", "older_than": 3_600_000})
    assert reply.json() == {"removed": 0}  # none is an hour old
    assert (await http.get("/api/queues/c")).json()["waiting"] == 3


async def test_remove_a_job(http: httpx.AsyncClient) -> None:
    job_id = (await http.post("/api/queues/r/jobs", json={"name": "x"})).json()["job"]["id"]
    reply = await http.delete(f"/api/jobs/{job_id}")
    assert reply.json() == {"id": job_id, "removed": True, "state": JobState.WAITING.value}
    for again in (await http.get(f"/api/jobs/{job_id}"), await http.delete(f"/api/jobs/{job_id}")):
        assert again.status_code == 404 and again.json()["error"]["code"] == "NOT_FOUND"


async def test_json_serializer_writes_json_payloads(
        gateway: RunningGateway, make_gateway: Callable[..., Awaitable[RunningGateway]]) -> None:
    json_gateway = await make_gateway(gateway.broker, serializer="json")
    async with httpx.AsyncClient(base_url=json_gateway.base_url) as session:
        added = (await session.post("/api/queues/j/jobs",
                                    json={"name": "x", "data": {"a": 1}})).json()["job"]
        job = (await session.get(f"/api/jobs/{added['id']}")).json()
    assert (job["data"], job["data_encoding"]) == ({"a": 1}, "json")
    async with Client(gateway.broker_url, serializer="json") as reader:
        assert (await reader.get_job(added["id"])).data == {"a": 1}


async def test_openapi_lists_every_route(gateway: RunningGateway,
                                         http: httpx.AsyncClient) -> None:
    document = (await http.get("/openapi.json")).json()
    assert document["openapi"].startswith("3.")
    served = {
        (method.lower(), route.path)
        for route in gateway.server.app.routes
        if isinstance(route, Route) and (route.path.startswith("/api/") or route.path == "/metrics")
        for method in (route.methods or ()) if method != "HEAD"
    }
    documented = {(method, path) for path, ops in document["paths"].items() for method in ops}
    assert served and served <= documented
    assert "MILLISECONDS" in document["components"]["schemas"]["JobOptions"]["description"]
