"""``create_app``: the gateway's ASGI application (Starlette).

Layout: ``/api/...`` (REST, ``client.gateway.routes``), ``/metrics`` (Prometheus),
``/openapi.json``, and the dashboard (``/``, ``/queues/{queue}``, ``/jobs/{job_id}``,
``/workers`` serve one HTML shell; ``/static/`` its script and styles, shipped in the package).
Server-Sent Events streams share one broker subscription (``client.gateway.hub``). The app owns
one broker connection (``client.gateway.state.Gateway``), opened in its lifespan.

Authentication and browser safety: ``client.gateway.guards``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from importlib.resources import files
from ssl import SSLContext
from typing import Final

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from client.endpoint import parse_url
from client.errors import JobwireError
from client.gateway.errors import (
    METHOD_NOT_ALLOWED,
    GatewayError,
    error_response,
    from_client_error,
)
from client.gateway.guards import BearerAuth, BrowserGuard
from client.gateway.hub import DEFAULT_MAX_STREAMS, EventHub
from client.gateway.routes import API_ROUTES, openapi_document
from client.gateway.sse import event_encoder
from client.gateway.state import Gateway
from client.log import get_logger
from protocol.errors import ErrorCode

log = get_logger("jobwire.gateway")

VERSION: Final = "0.1.0"
STATIC = files("client.gateway") / "static"


def create_app(broker_url: str, *, token: str | None = None, serializer: str = "msgpack",
               request_timeout: float = 10.0, loopback_only: bool = False,
               ssl: SSLContext | None = None,
               max_streams: int = DEFAULT_MAX_STREAMS) -> Starlette:
    """The gateway application for the broker at ``broker_url``.

    Args:
        broker_url: ``jobwire://[token@]host:port``; the gateway connects with that token.
        token: the bearer token HTTP callers must send. ``None`` (default): the broker URL's
            token, so a broker with a token gets a gateway with the same one; ``""``: none.
        serializer: how job data from HTTP is encoded for workers (``msgpack``, the Python
            client's default, or ``json``); also the first decoder tried when showing a job.
        request_timeout: seconds one broker request may take (then ``504 TIMEOUT``).
        loopback_only: answer only requests whose ``Host`` is a loopback name (set when the
            gateway listens on loopback: a DNS-rebinding page cannot reach it then).
        ssl: the TLS context for a ``jobwires://`` broker (default: the system's CAs; a broker
            with its own CA needs a context that trusts it).
        max_streams: Server-Sent Events streams (``/api/events``) served at once; one more
            answers ``429 OVERLOADED``.

    Returns:
        A Starlette app; run it with ``serve_gateway`` or any ASGI server.
    """
    http_token = parse_url(broker_url).token if token is None else (token or None)
    gateway = Gateway(broker_url, token=http_token, serializer=serializer,
                      request_timeout=request_timeout, ssl=ssl)
    hub = EventHub(gateway.client, event_encoder(gateway), max_streams=max_streams)

    @asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        await gateway.start()
        try:
            yield
        finally:
            await hub.close()
            await gateway.close()

    routes: list[BaseRoute] = [
        Route(route.path, route.endpoint, methods=[route.method]) for route in API_ROUTES
    ]
    document = openapi_document(VERSION)
    shell = (STATIC / "index.html").read_text(encoding="utf-8")

    async def dashboard_page(_request: Request) -> Response:
        """The dashboard's HTML shell; ``static/app.js`` renders the page for the URL."""
        return HTMLResponse(shell, headers={"Cache-Control": "no-cache"})

    routes += [
        Route("/openapi.json", lambda _request: JSONResponse(document), methods=["GET"]),
        Route("/", dashboard_page, methods=["GET"]),
        Route("/queues/{queue}", dashboard_page, methods=["GET"]),
        Route("/jobs/{job_id}", dashboard_page, methods=["GET"]),
        Route("/workers", dashboard_page, methods=["GET"]),
        Mount("/static", StaticFiles(directory=str(STATIC)), name="static"),
    ]
    app = Starlette(
        routes=routes, lifespan=lifespan,
        exception_handlers={
            GatewayError: on_gateway_error,
            JobwireError: on_client_error,
            HTTPException: on_http_exception,
            Exception: on_bug,
        },
    )
    app.state.gateway = gateway
    app.state.events = hub
    # Added last runs first: the browser guard, then authentication, then the routes.
    app.add_middleware(BearerAuth, token=http_token)
    app.add_middleware(BrowserGuard, loopback_only=loopback_only)
    return app


async def on_gateway_error(_request: Request, exc: Exception) -> Response:
    assert isinstance(exc, GatewayError)
    return error_response(exc)


async def on_client_error(_request: Request, exc: Exception) -> Response:
    assert isinstance(exc, JobwireError)
    return error_response(from_client_error(exc))


async def on_bug(request: Request, exc: Exception) -> Response:
    """A bug in the gateway: logged with its traceback, answered as JSON ``500 INTERNAL``."""
    log.error("gateway request failed", path=request.url.path, exc_info=exc)
    return JSONResponse({"error": {"code": ErrorCode.INTERNAL,
                                   "message": f"a bug in the gateway: {type(exc).__name__}"}},
                        status_code=500)


async def on_http_exception(_request: Request, exc: Exception) -> Response:
    """The router's own 404/405 as JSON errors like every other."""
    assert isinstance(exc, HTTPException)
    if exc.status_code == 405:
        return error_response(GatewayError(METHOD_NOT_ALLOWED, "method not allowed here"))
    if exc.status_code == 404:
        return error_response(GatewayError(ErrorCode.NOT_FOUND, "no such route"))
    return JSONResponse({"error": {"code": "HTTP_ERROR", "message": str(exc.detail)}},
                        status_code=exc.status_code)
