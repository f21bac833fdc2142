"""Wire error codes and the protocol's exception.

Error codes are stable strings: they are part of the wire contract (``protocol/SPEC.md`` lists
when each occurs). New codes may be added in a later protocol version; existing ones never change
meaning. A client that meets a code it does not know treats it as a generic server error.
"""

from __future__ import annotations

from enum import StrEnum


class ErrorCode(StrEnum):
    """Every error code that can appear on the wire."""

    # Framing and encoding: the connection is closed after these.
    BAD_FRAME = "BAD_FRAME"
    """The bytes are not one valid msgpack message, or use a forbidden feature (ext types,
    non-string map keys, invalid UTF-8, nesting too deep)."""
    FRAME_TOO_LARGE = "FRAME_TOO_LARGE"
    """A length prefix exceeds the maximum frame size; refused before the body is read."""

    # Session.
    UNSUPPORTED_VERSION = "UNSUPPORTED_VERSION"
    """The handshake asked for a protocol version this peer does not speak."""
    HANDSHAKE_REQUIRED = "HANDSHAKE_REQUIRED"
    """A request other than ``hello`` arrived before the handshake completed, or a second
    ``hello`` arrived after it. The connection stays open."""
    UNAUTHORIZED = "UNAUTHORIZED"
    """The handshake's token is missing or wrong."""

    # Requests.
    UNKNOWN_OP = "UNKNOWN_OP"
    """The request names an operation this protocol version does not define."""
    BAD_ARGUMENT = "BAD_ARGUMENT"
    """A field is missing, has the wrong type, or is out of range; the message names the field."""
    PAYLOAD_TOO_LARGE = "PAYLOAD_TOO_LARGE"
    """A job payload, result or progress value exceeds the broker's per-job limit."""
    NOT_FOUND = "NOT_FOUND"
    """No job with that id (never existed, removed, or pruned by retention)."""
    AMBIGUOUS_ID = "AMBIGUOUS_ID"
    """The job id names jobs in several queues (user ids are unique per queue): give the
    ``queue`` field. Nothing was changed."""
    STALE_LEASE = "STALE_LEASE"
    """The lease token is not the job's current one: the lease expired, was revoked, or the job
    moved on. Nothing was changed."""
    CONFLICT = "CONFLICT"
    """The job exists but is not in a state the operation applies to (e.g. retrying a job that is
    not failed)."""

    # Capacity and lifecycle.
    QUEUE_FULL = "QUEUE_FULL"
    """Accepting the jobs would exceed the per-queue or total job limit. Retry later."""
    OVERLOADED = "OVERLOADED"
    """Too many connections or too many requests in flight on this connection."""
    DRAINING = "DRAINING"
    """The broker is shutting down and accepts no new jobs."""
    JOURNAL_FAILURE = "JOURNAL_FAILURE"
    """The write could not be made durable (disk full, I/O error): it is not acknowledged. The
    broker keeps the change in memory and writes it once the fault clears, so it may still take
    effect; retry idempotently (enqueue with the same job id)."""
    TIMEOUT = "TIMEOUT"
    """The peer did not complete something in time (e.g. the handshake deadline)."""
    INTERNAL = "INTERNAL"
    """A bug in the broker. The request may or may not have been applied."""


class ProtocolError(Exception):
    """A message violated the protocol.

    Attributes:
        code: the wire error code.
        message: a human-readable explanation; names the offending field when there is one.
        field: the dotted path of the offending field (``"jobs[3].priority"``), or ``None``.
    """

    __slots__ = ("code", "field", "message")

    def __init__(self, code: ErrorCode, message: str, field: str | None = None) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.field = field

    def __reduce__(self) -> tuple[type[ProtocolError], tuple[ErrorCode, str, str | None]]:
        return (type(self), (self.code, self.message, self.field))


def bad_argument(field: str, expected: str) -> ProtocolError:
    """Build the ``BAD_ARGUMENT`` error for one field.

    Args:
        field: dotted path of the field, e.g. ``"jobs[2].payload"``.
        expected: what the field should have been, e.g. ``"bin"`` or ``"int >= 1"``.
    """
    return ProtocolError(ErrorCode.BAD_ARGUMENT, f"{field}: expected {expected}", field)
