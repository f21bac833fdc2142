"""The gateway's errors as JSON: ``{"error": {"code": CODE, "message": TEXT}}``.

Codes are the wire protocol's (``protocol.errors.ErrorCode``: ``BAD_ARGUMENT``, ``NOT_FOUND``,
``UNAUTHORIZED``, ...) so a program reads the same code over HTTP as over TCP. Three codes exist
only here, for what has no wire equivalent: ``BROKER_UNAVAILABLE`` (the gateway cannot reach the
broker, or the broker refused the gateway's token), ``FORBIDDEN`` (a request a hostile web page
made a browser send: ``client.gateway.guards``) and ``METHOD_NOT_ALLOWED``. Each code has one HTTP
status (``STATUS``).
"""

from __future__ import annotations

from typing import Final

from starlette.responses import JSONResponse

from client.errors import (
    BrokerError,
    ConnectionClosedError,
    ConnectionLostError,
    JobwireError,
    RequestTimeoutError,
)
from protocol.errors import ErrorCode

BROKER_UNAVAILABLE: Final = "BROKER_UNAVAILABLE"
"""The gateway has no usable connection to the broker (down, unreachable, or refused its token)."""
METHOD_NOT_ALLOWED: Final = "METHOD_NOT_ALLOWED"
FORBIDDEN: Final = "FORBIDDEN"

STATUS: Final[dict[str, int]] = {
    ErrorCode.BAD_ARGUMENT: 400,
    ErrorCode.UNKNOWN_OP: 400,
    ErrorCode.BAD_FRAME: 400,
    ErrorCode.UNAUTHORIZED: 401,
    FORBIDDEN: 403,
    ErrorCode.NOT_FOUND: 404,
    METHOD_NOT_ALLOWED: 405,
    ErrorCode.CONFLICT: 409,
    ErrorCode.STALE_LEASE: 409,
    ErrorCode.PAYLOAD_TOO_LARGE: 413,
    ErrorCode.FRAME_TOO_LARGE: 413,
    ErrorCode.QUEUE_FULL: 429,
    ErrorCode.OVERLOADED: 429,
    ErrorCode.INTERNAL: 500,
    ErrorCode.DRAINING: 503,
    ErrorCode.JOURNAL_FAILURE: 503,
    BROKER_UNAVAILABLE: 503,
    ErrorCode.TIMEOUT: 504,
}
"""HTTP status per error code; a code not listed (a newer broker's) answers 502."""

RETRY_AFTER_S: Final[dict[str, int]] = {
    ErrorCode.QUEUE_FULL: 1,
    ErrorCode.OVERLOADED: 1,
    ErrorCode.DRAINING: 5,
    ErrorCode.JOURNAL_FAILURE: 1,
    BROKER_UNAVAILABLE: 2,
}
"""Seconds sent in ``Retry-After`` for the codes where trying again later is the remedy."""


class GatewayError(Exception):
    """A request the gateway answers with an error.

    Args:
        code: a wire error code or one of this module's gateway codes.
        message: for humans; for ``BAD_ARGUMENT`` it starts with the field's path and a colon.
    """

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message

    @property
    def status(self) -> int:
        return STATUS.get(self.code, 502)


def bad_argument(field: str, expected: str) -> GatewayError:
    """``BAD_ARGUMENT`` for one field, worded as the broker words it (``field: expected ...``)."""
    return GatewayError(ErrorCode.BAD_ARGUMENT, f"{field}: expected {expected}")


def from_client_error(exc: JobwireError) -> GatewayError:
    """Translate a client exception (a broker ERROR reply or a transport failure)."""
    if isinstance(exc, BrokerError):
        return GatewayError(exc.code, exc.message)
    if isinstance(exc, RequestTimeoutError):
        return GatewayError(ErrorCode.TIMEOUT, f"the broker did not answer in time: {exc}")
    if isinstance(exc, ConnectionLostError | ConnectionClosedError):
        return GatewayError(BROKER_UNAVAILABLE, f"lost the connection to the broker: {exc}")
    return GatewayError(BROKER_UNAVAILABLE, str(exc))


def error_response(error: GatewayError) -> JSONResponse:
    """The JSON response for ``error``, with ``Retry-After`` and ``WWW-Authenticate`` where due."""
    headers: dict[str, str] = {}
    retry_after = RETRY_AFTER_S.get(error.code)
    if retry_after is not None:
        headers["Retry-After"] = str(retry_after)
    if error.code == ErrorCode.UNAUTHORIZED:
        headers["WWW-Authenticate"] = 'Bearer realm="jobwire"'
    return JSONResponse(
        {"error": {"code": error.code, "message": error.message}},
        status_code=error.status, headers=headers,
    )
