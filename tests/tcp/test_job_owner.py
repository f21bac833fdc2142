"""``get`` shows an active job's lease holder (``owner``) and every job's ``timeout_ms``
(SPEC §9.6), over real TCP, and the Python client's ``Job.owner`` / ``Job.timeout``."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from client import Client
from tests.conftest import RunningBroker
from tests.tools.wire import R_ID, WireClient, job_spec

Wire = Callable[..., Awaitable[WireClient]]


async def test_get_names_the_lease_holder_and_the_timeout(
    broker: RunningBroker, wire: Wire
) -> None:
    worker = await wire(broker)
    looker = await wire(broker)
    await looker.ok("enqueue", {"queue": "q", "jobs": [job_spec("a", timeout_ms=5_000),
                                                       job_spec("b")]})
    waiting = (await looker.ok("get", {"id": "b", "queue": "q"}))["job"]
    assert waiting["timeout_ms"] is None
    assert "owner" not in waiting or waiting["owner"] is None
    reserved = (await worker.ok("reserve", {"queues": ["q"], "max": 1, "timeout_ms": 0}))["jobs"]
    assert [job[R_ID] for job in reserved] == ["a"]
    active = (await looker.ok("get", {"id": "a"}))["job"]
    assert active["state"] == "active"
    assert active["timeout_ms"] == 5_000
    workers = (await looker.ok("workers", {}))["workers"]
    holder = next(w for w in workers if w["held"] == 1)
    assert active["owner"] == {"conn": holder["conn"], "client": "tests", "host": holder["host"]}
    listed = (await looker.ok("list_jobs", {"queue": "q", "states": ["active"]}))["jobs"]
    assert "owner" not in listed[0] and listed[0]["conn"] == holder["conn"]  # lists unchanged


async def test_client_job_exposes_owner_and_timeout(broker: RunningBroker, wire: Wire) -> None:
    worker = await wire(broker)  # hello.client "tests"
    async with Client(f"jobwire://{broker.host}:{broker.port}") as producer:
        job = await producer.queue("q").add("task", {"n": 1}, timeout=2.5)
        await job.refresh()
        assert (job.timeout, job.owner) == (2.5, None)
        reserved = (await worker.ok("reserve", {"queues": ["q"], "max": 1, "timeout_ms": 0}))
        assert [j[R_ID] for j in reserved["jobs"]] == [job.id]
        await job.refresh()
        assert job.owner is not None and job.owner["client"] == "tests"
        assert job.timeout == 2.5
        untimed = await producer.queue("q").add("task", None)
        assert (await producer.get_job(untimed.id)).timeout is None
