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

from client.gateway.app import create_app
from client.gateway.server import GatewayServer, serve_gateway

__all__ = ["GatewayServer", "create_app", "serve_gateway"]
