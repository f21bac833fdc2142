"""The gateway's one broker connection, shared by every HTTP request.

The gateway is a client of the wire protocol like any other: one pipelined, self-reconnecting
``Client`` carries every request of every HTTP caller (concurrent requests overlap on it). It is
started in the background, so the gateway serves (``503 BROKER_UNAVAILABLE``) while the broker is
down and recovers by itself when it comes back.
"""

from __future__ import annotations

import asyncio
import contextlib
from ssl import SSLContext
from typing import Final

from starlette.requests import Request

from client.endpoint import ServerInfo
from client.errors import JobwireError, RequestTimeoutError
from client.gateway.errors import BROKER_UNAVAILABLE, GatewayError
from client.queue import Client
from client.serializers import Serializer, get_serializer

CONNECT_GRACE_S: Final = 2.0
"""How long a request waits for a broker connection that is down before answering 503."""
DEFAULT_MAX_FRAME: Final = 8 << 20


class Gateway:
    """What the routes share: the broker client, the serializer, and the HTTP token.

    Args:
        broker_url: ``jobwire://[token@]host:port`` of the broker.
        token: the bearer token HTTP callers must send (``None``: no authentication).
        serializer: how job data is encoded on enqueue and tried first when shown.
        request_timeout: seconds one broker request may take before ``504 TIMEOUT``.
        ssl: the TLS context for a ``jobwires://`` broker (default: the system's CAs).
    """

    def __init__(self, broker_url: str, *, token: str | None, serializer: str = "msgpack",
                 request_timeout: float = 10.0, ssl: SSLContext | None = None) -> None:
        self.client = Client(broker_url, request_timeout=request_timeout,
                             client_name="jobwire-gateway", ssl=ssl)
        self.token = token
        self.serializer_name = serializer
        self.serializer: Serializer = get_serializer(serializer)
        self._connecting: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Start connecting in the background (returns at once)."""
        self._connecting = asyncio.create_task(self._connect(), name="jobwire-gateway-connect")

    async def _connect(self) -> None:
        # wait=True: keep retrying with backoff; a refused token ends it (the connection closes
        # and every request then answers 503 with the reason).
        with contextlib.suppress(JobwireError):
            await self.client.connect(wait=True)

    async def close(self) -> None:
        """Close the broker connection. Safe to call twice."""
        await self.client.close()
        if self._connecting is not None:
            task, self._connecting = self._connecting, None
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def ready(self) -> Client:
        """The client, once connected (waits up to ``CONNECT_GRACE_S``).

        Raises:
            GatewayError: ``BROKER_UNAVAILABLE`` when the broker is not reachable.
        """
        connection = self.client.connection
        if connection.connected:
            return self.client
        reason = connection.close_reason
        if reason is None:
            try:
                await connection.wait_connected(timeout=CONNECT_GRACE_S)
                return self.client
            except (RequestTimeoutError, JobwireError) as exc:
                reason = connection.close_reason or exc
        raise GatewayError(BROKER_UNAVAILABLE, f"cannot reach the broker at "
                           f"{connection.endpoint.host}:{connection.endpoint.port}: {reason}")

    @property
    def server(self) -> ServerInfo | None:
        """What the broker announced in its handshake (limits), once connected."""
        return self.client.connection.server

    @property
    def max_frame(self) -> int:
        server = self.server
        return server.max_frame if server is not None else DEFAULT_MAX_FRAME

    @property
    def max_payload(self) -> int:
        server = self.server
        return server.max_payload if server is not None else 1 << 20


def gateway_of(request: Request) -> Gateway:
    """The ``Gateway`` of the app serving ``request``."""
    gateway: Gateway = request.app.state.gateway
    return gateway
