"""Fixtures for the HTTP gateway tests: a real broker (in-process, port 0, real SQLite), the
gateway on the same event loop (port 0, as ``jobwire serve --http`` runs it), and an httpx client.

A test module imports the fixtures it uses by name (``gateway``, ``http``, ``make_gateway``,
``client``) so pytest finds them.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from client import Client, Worker
from client.gateway import GatewayServer
from tests.conftest import RunningBroker
from tests.tools.clienttools import running, until


@dataclass
class RunningGateway:
    broker: RunningBroker
    server: GatewayServer

    @property
    def broker_url(self) -> str:
        token = self.broker.settings.token
        auth = f"{token}@" if token else ""
        return f"jobwire://{auth}{self.broker.host}:{self.broker.port}"

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server.port}"


@pytest.fixture
async def make_gateway() -> AsyncIterator[Callable[..., Awaitable[RunningGateway]]]:
    started: list[GatewayServer] = []

    async def make(broker: RunningBroker, *, broker_url: str | None = None,
                   **options: Any) -> RunningGateway:
        token = broker.settings.token
        url = broker_url or (f"jobwire://{token + '@' if token else ''}"
                             f"{broker.host}:{broker.port}")
        server = GatewayServer("127.0.0.1", 0, url, **options)
        await server.start()
        started.append(server)
        return RunningGateway(broker, server)

    yield make
    for server in started:
        await server.stop()


@pytest.fixture
async def gateway(broker: RunningBroker,
                  make_gateway: Callable[..., Awaitable[RunningGateway]]) -> RunningGateway:
    return await make_gateway(broker)


@pytest.fixture
async def http(gateway: RunningGateway) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=gateway.base_url, timeout=30) as session:
        yield session


@pytest.fixture
async def client(gateway: RunningGateway) -> AsyncIterator[Client]:
    async with Client(gateway.broker_url) as c:
        yield c


async def fail_jobs(url: str, queue: str, count: int, message: str = "boom") -> list[str]:
    """Enqueue ``count`` jobs with one attempt and run a real worker whose handler raises, until
    all of them are failed. Returns their ids (oldest first)."""
    def explode(job: Any) -> None:
        raise RuntimeError(f"{message} {job.data}")

    async with Client(url) as producer:
        jobs = await producer.queue(queue).add_bulk(
            [{"name": "explode", "data": i, "attempts": 1} for i in range(count)])
        async def all_failed() -> bool:
            return (await producer.queue(queue).stats()).failed >= count

        async with running(Worker(url, queue, explode, handle_signals=False, poll_wait=0.2)):
            await until(all_failed, 30)
    return [job.id for job in jobs]
