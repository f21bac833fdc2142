"""A request paired with how to read its reply: what the async and the sync client share.

Every producer/admin operation is written once, without I/O, as a function that returns a
``Call`` (one request) or a ``BulkCall`` (several pipelined requests): the request to send and
the function that turns the reply body into the public result (a ``Job``, a ``JobState``, a
count...). ``client/operations.py`` and ``client/job.py`` build them; the asynchronous client
(``client/queue.py``, ``client.job.Job``) sends them on its ``Connection`` and the synchronous
one (``client/sync.py``) on its blocking socket. A change to an operation is made in one place.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Generic, Protocol, TypeVar

from client.endpoint import ServerInfo
from protocol.operations import Request

R = TypeVar("R")


class Call(Generic[R]):
    """One request and the parser of its reply body.

    Attributes:
        request: the typed request to send.
        parse: reply body → result; raises ``BrokerError`` subclasses for refusals found in
            the body.
        timeout: seconds to wait for the reply (``None``: the client's default).
    """

    __slots__ = ("parse", "request", "timeout")

    def __init__(
        self, request: Request, parse: Callable[[Mapping[str, Any]], R],
        timeout: float | None = None,
    ) -> None:
        self.request = request
        self.parse = parse
        self.timeout = timeout


class BulkCall(Generic[R]):
    """Several requests sent together (pipelined) and the parser of all their reply bodies.

    Attributes:
        requests: the requests, in order.
        parse: the reply bodies, in request order → result.
    """

    __slots__ = ("parse", "requests")

    def __init__(
        self, requests: Sequence[Request], parse: Callable[[Sequence[Mapping[str, Any]]], R]
    ) -> None:
        self.requests = requests
        self.parse = parse


class AsyncSender(Protocol):
    """What the asynchronous handles need of a connection (``client.Connection`` fits)."""

    request_timeout: float

    async def request(
        self, request: Request, *, timeout: float | None = None  # noqa: ASYNC109
    ) -> dict[str, Any]:
        """Send ``request`` and return its reply body."""
        ...


class PipelinedSender(Protocol):
    """What the worker's parts need of a connection: sending without a coroutine."""

    request_timeout: float

    @property
    def server(self) -> ServerInfo | None:
        """The broker's ``hello`` description (its limits), once connected."""

    @property
    def connected(self) -> bool:
        """True while requests can be sent."""

    def request_nowait(
        self, request: Request, *, timeout: float | None = None
    ) -> asyncio.Future[dict[str, Any]]:
        """Send ``request`` now and return the future of its reply body."""
        ...


async def send(sender: AsyncSender, call: Call[R]) -> R:
    """Send ``call`` on an asynchronous connection and return its parsed result."""
    return call.parse(await sender.request(call.request, timeout=call.timeout))
