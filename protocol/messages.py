"""The four kinds of message, built and taken apart. Sans-I/O.

Theory of operation
-------------------
A message is a msgpack array whose first item is its kind:

* ``[0, request_id, op, args]``  REQUEST, client → broker. ``args`` is a map with str keys.
* ``[1, request_id, body]``      REPLY, broker → client; ``body`` is a map.
* ``[2, request_id, code, text]`` ERROR reply, broker → client.
* ``[3, event, body]``           EVENT, broker → client, not tied to any request.

The request id is chosen by the client (uint32); the reply echoes it, so one connection pipelines
many requests and the broker may answer them out of order. Events carry no request id, so a
client tells them apart by kind alone.

Each kind's builder and parser sit side by side: ``request_message`` / ``parse_request`` (the
``args`` map comes from the op's declaration in ``protocol.operations``), ``reply_message`` /
``error_message`` / ``event_message`` and ``parse_server_message``. The broker validates strictly
at this boundary; the hot paths (enqueue, reserve, ack, fail, extend) carry their items as
positional arrays, not maps, so a batch of jobs costs one tuple per job and no dict churn.
Payloads and results are msgpack ``bin``: the broker never decodes them.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import IntEnum, StrEnum
from typing import Any, Final, NamedTuple

from protocol.checks import MAX_NAME_LEN, MAX_REQUEST_ID
from protocol.errors import ErrorCode, ProtocolError, bad_argument
from protocol.observing import EVENTS
from protocol.operations import OPERATION_OF, OPERATIONS, Request
from protocol.scheduling import SCHEDULE_UPSERT  # noqa: F401  (declares the schedule_* ops)

PROTOCOL_VERSION: Final = 1


class Kind(IntEnum):
    """The first item of every message."""

    REQUEST = 0
    REPLY = 1
    ERROR = 2
    EVENT = 3


class Event(StrEnum):
    """Names of server-initiated events."""

    ERROR = "error"
    """``{"code": str, "message": str}``: a connection-level error; the broker closes after it."""
    DRAINING = "draining"
    """``{}``: the broker is shutting down; stop reserving, finish and ack what you hold."""
    EVENTS = EVENTS
    """``{"sub": int, "events": [Event map]}``: job events for a subscription
    (``protocol.observing``, which also declares its operations: importing it here puts them in
    ``OPERATIONS`` before ``_ENCODERS`` below is built)."""


# --------------------------------------------------------------------------- requests

_REQUEST: Final = Kind.REQUEST.value
_ENCODERS: Final = {cls: (op.name, op.args) for cls, op in OPERATION_OF.items()}


def request_message(request_id: int, request: Request) -> list[Any]:
    """The wire message for a typed request: ``[0, request_id, op, args]`` (client side)."""
    name, args = _ENCODERS[type(request)]
    return [_REQUEST, request_id, name, args(request)]


def request_id_of(message: Any) -> int | None:
    """The request id of a decoded message that looks like a request, else ``None``.

    The broker uses it to answer a malformed request with an ERROR reply (keeping the
    connection) rather than closing the connection.
    """
    if (
        type(message) is tuple
        and len(message) == 4
        and type(message[0]) is int
        and message[0] == Kind.REQUEST
        and type(message[1]) is int
        and 0 <= message[1] <= MAX_REQUEST_ID
    ):
        return message[1]
    return None


def parse_request(message: Any) -> tuple[int, str, Request]:
    """Validate a decoded REQUEST message (broker side).

    Returns:
        ``(request_id, op, request)`` where ``request`` is the op's typed tuple.

    Raises:
        ProtocolError: ``BAD_FRAME`` if the envelope is not ``[0, id, op, args]``; ``UNKNOWN_OP``;
            ``BAD_ARGUMENT`` naming the field.
    """
    request_id = request_id_of(message)
    if request_id is None:
        raise ProtocolError(ErrorCode.BAD_FRAME, "expected a request [0, request_id, op, args]")
    op, request = parse_request_body(message)
    return request_id, op, request


def parse_request_body(message: tuple[Any, ...]) -> tuple[str, Request]:
    """``parse_request`` for a message whose envelope ``request_id_of`` already accepted.

    Returns:
        ``(op, request)``.

    Raises:
        ProtocolError: ``UNKNOWN_OP``; ``BAD_ARGUMENT`` naming the field.
    """
    op, args = message[2], message[3]
    operation = OPERATIONS.get(op) if type(op) is str else None
    if operation is None:
        shown = repr(op[:MAX_NAME_LEN]) if type(op) is str else f"of type {type(op).__name__}"
        raise ProtocolError(ErrorCode.UNKNOWN_OP, f"unknown op {shown}", "op")
    if type(args) is not dict:
        raise bad_argument("args", "map")
    return op, operation.parse(args)


# --------------------------------------------------------------------------- broker → client


def reply_message(request_id: int, body: Mapping[str, Any]) -> list[Any]:
    """``[1, request_id, body]``."""
    return [1, request_id, body]


def error_message(request_id: int, code: ErrorCode, text: str) -> list[Any]:
    """``[2, request_id, code, text]``."""
    return [2, request_id, code.value, text]


def event_message(event: Event, body: Mapping[str, Any]) -> list[Any]:
    """``[3, event, body]``."""
    return [3, event.value, body]


class Reply(NamedTuple):
    request_id: int
    body: dict[str, Any]


class ErrorReply(NamedTuple):
    request_id: int
    code: str
    message: str


class ServerEvent(NamedTuple):
    event: str
    body: dict[str, Any]


def parse_server_message(message: Any) -> Reply | ErrorReply | ServerEvent:
    """Classify a decoded broker → client message (client side).

    Raises:
        ProtocolError: ``BAD_FRAME`` if it is none of REPLY, ERROR or EVENT.
    """
    if type(message) is tuple and message and type(message[0]) is int:
        kind = message[0]
        if kind == Kind.REPLY and len(message) == 3 and type(message[1]) is int:
            body = message[2]
            if type(body) is dict:
                return Reply(message[1], body)
        elif (
            kind == Kind.ERROR and len(message) == 4 and type(message[1]) is int
            and type(message[2]) is str and type(message[3]) is str
        ):
            return ErrorReply(message[1], message[2], message[3])
        elif (
            kind == Kind.EVENT and len(message) == 3 and type(message[1]) is str
            and type(message[2]) is dict
        ):
            return ServerEvent(message[1], message[2])
    raise ProtocolError(ErrorCode.BAD_FRAME, "expected a reply, error or event message")
