"""Run the gateway with uvicorn on the current event loop: inside the broker's process or alone.

``GatewayServer`` binds its socket itself (so port 0 works and ``.port`` is known once started),
runs uvicorn's ``serve`` on the running loop (uvloop under ``jobwire serve``), and leaves signal
handling to its owner: the broker (or ``jobwire http``) decides when to stop and calls ``stop()``.
uvicorn's own handlers would replace the broker's and re-raise the signal after shutdown.

Beside a broker in one process, start the gateway first (a port in use then stops the command
before the broker opens its journal), call ``broker_ready()`` from the broker's ready hook, and
``stop()`` it after the broker has shut down::

    gateway = GatewayServer("127.0.0.1", 7480, local_broker_url(host, port, token))
    await gateway.start()
    try:
        await run_broker(settings, on_ready=lambda _server: gateway.broker_ready())
    finally:
        await gateway.stop()
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Iterator
from ssl import SSLContext
from typing import Final

import uvicorn

from client.gateway.app import create_app
from client.gateway.hub import DEFAULT_MAX_STREAMS
from client.gateway.listen import is_loopback
from client.log import get_logger

log = get_logger("jobwire.gateway")

SHUTDOWN_GRACE_S: Final = 5


class _Uvicorn(uvicorn.Server):
    """uvicorn without its signal handlers (the owner of the loop handles signals)."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


class GatewayServer:
    """The gateway on ``host:port``, for the broker at ``broker_url``.

    Args:
        host: address to listen on (loopback by default; another one without a token logs a
            warning, as the broker does).
        port: TCP port (0: any free one; read ``.port`` after ``start``).
        broker_url: ``jobwire://[token@]host:port``.
        token, serializer, request_timeout, ssl, max_streams: see ``create_app``.
    """

    def __init__(self, host: str, port: int, broker_url: str, *, token: str | None = None,
                 serializer: str = "msgpack", request_timeout: float = 10.0,
                 ssl: SSLContext | None = None,
                 max_streams: int = DEFAULT_MAX_STREAMS) -> None:
        self.host = host
        self.app = create_app(broker_url, token=token, serializer=serializer,
                              request_timeout=request_timeout, loopback_only=is_loopback(host),
                              ssl=ssl, max_streams=max_streams)
        config = uvicorn.Config(self.app, host=host, port=port, loop="none", lifespan="on",
                                log_config=None, access_log=False, server_header=False,
                                timeout_graceful_shutdown=SHUTDOWN_GRACE_S)
        self._server = _Uvicorn(config)
        self._socket: socket.socket | None = None
        self._task: asyncio.Task[None] | None = None
        self.port = port

    async def start(self) -> None:
        """Bind, and serve in a task of the running loop; returns once requests are accepted.

        Raises:
            OSError: the address cannot be bound.
            RuntimeError: the server stopped while starting.
        """
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((self.host, self.port))
        except OSError:
            sock.close()
            raise
        sock.set_inheritable(True)
        self._socket = sock
        self.port = sock.getsockname()[1]
        gateway = self.app.state.gateway
        if gateway.token is None and not is_loopback(self.host):
            log.warning("gateway listening beyond loopback without a token: anyone who can "
                        "reach it can read and change every queue", host=self.host)
        self._task = asyncio.create_task(self._server.serve(sockets=[sock]),
                                         name="jobwire-gateway")
        while not self._server.started:
            if self._task.done():
                await self._task
                raise RuntimeError("the gateway stopped while starting")
            await asyncio.sleep(0.01)
        log.info("gateway listening", url=f"http://{self.host}:{self.port}/")

    def broker_ready(self) -> None:
        """Connect to the broker now (call when it starts listening): a gateway started before
        its broker is otherwise in a reconnect back-off of up to 5 s."""
        self.app.state.gateway.client.connection.reconnect_now()

    async def stop(self) -> None:
        """Stop accepting, finish open requests (up to 5 s), close the broker connection.
        Safe to call twice."""
        # Event streams never finish by themselves: end them first, or the graceful shutdown
        # would wait its whole grace period for them.
        await self.app.state.events.close()
        self._server.should_exit = True
        task, self._task = self._task, None
        if task is not None:
            await task
        if self._socket is not None:
            self._socket.close()
            self._socket = None

    async def wait(self) -> None:
        """Until the server stops (after ``stop``, or by itself)."""
        if self._task is not None:
            await asyncio.shield(self._task)


async def serve_gateway(host: str, port: int, broker_url: str, *, token: str | None = None,
                        serializer: str = "msgpack", request_timeout: float = 10.0,
                        ssl: SSLContext | None = None) -> None:
    """Serve the gateway until cancelled, then stop it gracefully.

    Run it as a task next to the broker (same loop) or alone; cancel the task to stop.

    Raises:
        OSError: the address cannot be bound.
    """
    server = GatewayServer(host, port, broker_url, token=token, serializer=serializer,
                           request_timeout=request_timeout, ssl=ssl)
    await server.start()
    try:
        await server.wait()
    finally:
        await asyncio.shield(server.stop())
