"""jobwire's HTTP gateway: a REST API, Prometheus ``/metrics`` and a web dashboard.

The gateway is a client of the wire protocol (it uses only ``client/``), never a second door into
the broker's core: it runs inside ``jobwire serve``'s process on the same event loop, or alone
(``jobwire http --broker jobwire://...``) on another machine. Everything it shows is available to
programs over TCP too.

::

    from client.gateway import serve_gateway
    await serve_gateway("127.0.0.1", 7480, "jobwire://127.0.0.1:7400")   # until cancelled

Needs the ``http`` extra: ``pip install 'jobwire[http]'`` (starlette, uvicorn, prometheus_client).
Durations in HTTP bodies are **milliseconds**.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from client.gateway.app import create_app
    from client.gateway.server import GatewayServer, serve_gateway

__all__ = ["GatewayServer", "create_app", "serve_gateway"]


def __getattr__(name: str) -> Any:
    # Imported on first use, so ``client.gateway.cli`` (argument parsing, ``--help``) loads
    # without the http extra; running the gateway then says what to install.
    if name == "create_app":
        from client.gateway.app import create_app

        return create_app
    if name in ("GatewayServer", "serve_gateway"):
        from client.gateway import server

        return getattr(server, name)
    raise AttributeError(f"module 'client.gateway' has no attribute {name!r}")
