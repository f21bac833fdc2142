"""ASGI middleware in front of every route: bearer authentication and a guard against pages that
use a visitor's browser to reach the gateway.

``BearerAuth``: with a token, ``/api/...`` and ``/metrics`` need ``Authorization: Bearer TOKEN``
(compared in constant time, before any body is read). The dashboard's pages, static files and
``/openapi.json`` carry no broker data and are served to anyone; the dashboard's script asks for
the token and sends it with every API call.

``BrowserGuard``: a gateway on loopback without a token trusts whoever can connect, and a web
page the operator visits can make the browser connect. So a request that changes something
(``POST``, ``PUT``, ``PATCH``, ``DELETE``) with an ``Origin`` other than the gateway's own is
refused (cross-site request forgery: the dashboard's own requests are same-origin, curl and
programs send no ``Origin``), and a gateway listening on loopback answers only requests whose
``Host`` is a loopback name (``localhost``, ``127.0.0.1``, ``[::1]``): a page whose domain was
re-pointed at 127.0.0.1 (DNS rebinding) sends its own name as ``Host``. Both answer 403
``FORBIDDEN``.
"""

from __future__ import annotations

import hmac
from typing import Final
from urllib.parse import urlsplit

from starlette.types import ASGIApp, Receive, Scope, Send

from client.gateway.errors import FORBIDDEN, GatewayError, error_response
from client.gateway.listen import is_loopback
from protocol.errors import ErrorCode

PROTECTED_PREFIXES: Final = ("/api/", "/metrics")
UNSAFE_METHODS: Final = frozenset({"POST", "PUT", "PATCH", "DELETE"})


def header(scope: Scope, name: bytes) -> bytes | None:
    """The first value of header ``name`` (lower case), or ``None``."""
    for key, value in scope["headers"]:
        if key == name:
            return bytes(value)
    return None


def host_name(host: str) -> str:
    """``Host`` header value without its port (``[::1]:7480`` → ``::1``)."""
    if host.startswith("["):
        return host[1:host.find("]")] if "]" in host else host
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


class BrowserGuard:
    """Refuse cross-site state changes, and foreign ``Host`` names on a loopback gateway."""

    def __init__(self, app: ASGIApp, loopback_only: bool) -> None:
        self.app = app
        self.loopback_only = loopback_only

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            error = self.check(scope)
            if error is not None:
                await error_response(error)(scope, receive, send)
                return
        await self.app(scope, receive, send)

    def check(self, scope: Scope) -> GatewayError | None:
        host = (header(scope, b"host") or b"").decode("latin-1").lower()
        if self.loopback_only and not is_loopback(host_name(host)) \
                and not host_name(host).endswith(".localhost"):
            return GatewayError(FORBIDDEN, f"Host {host!r} is not a loopback name: this gateway "
                                "listens on loopback only (a guard against DNS rebinding)")
        origin = header(scope, b"origin")
        if origin is not None and scope["method"] in UNSAFE_METHODS:
            text = origin.decode("latin-1").lower()
            if text == "null" or urlsplit(text).netloc != host:
                return GatewayError(FORBIDDEN, f"a {scope['method']} from another site "
                                    f"({text}) is refused (cross-site request forgery guard)")
        return None


class BearerAuth:
    """ASGI middleware: ``Authorization: Bearer TOKEN`` on the protected paths.

    It answers before the route runs, so an unauthenticated request's body is never read.
    """

    def __init__(self, app: ASGIApp, token: str | None) -> None:
        self.app = app
        self.expected = None if token is None else token.encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (self.expected is None or scope["type"] != "http"
                or not scope["path"].startswith(PROTECTED_PREFIXES)):
            await self.app(scope, receive, send)
            return
        presented = b""
        for name, value in scope["headers"]:
            if name == b"authorization":
                scheme, _, credentials = value.partition(b" ")
                if scheme.lower() == b"bearer":
                    presented = credentials.strip()
                break
        if not presented:
            error = GatewayError(ErrorCode.UNAUTHORIZED,
                                 "missing Authorization: Bearer TOKEN header")
        elif not hmac.compare_digest(presented, self.expected):
            error = GatewayError(ErrorCode.UNAUTHORIZED, "wrong token")
        else:
            await self.app(scope, receive, send)
            return
        await error_response(error)(scope, receive, send)
