"""Where a connection goes and what it reports: broker URLs, reconnect delays, the handshake's
server description, connection states and the ``statistics()`` snapshot. Pure (no I/O)."""

from __future__ import annotations

import random
from dataclasses import dataclass
from enum import Enum
from typing import Any, Final
from urllib.parse import unquote, urlsplit

from protocol.messages import PROTOCOL_VERSION

DEFAULT_PORT: Final = 7400
DEFAULT_URL: Final = f"jobwire://127.0.0.1:{DEFAULT_PORT}"


class ConnectionState(Enum):
    """Where a connection is in its life."""

    IDLE = "idle"
    CONNECTING = "connecting"
    CONNECTED = "connected"
    CLOSED = "closed"


@dataclass(frozen=True, slots=True)
class Endpoint:
    """Where to connect, parsed from a URL."""

    host: str
    port: int
    token: str | None = None
    tls: bool = False


def parse_url(url: str) -> Endpoint:
    """Parse ``jobwire://[token@]host[:port]`` or ``jobwires://...`` (TLS).

    Args:
        url: the broker URL; a bare ``host:port`` is accepted too.

    Returns:
        The endpoint (port 7400 when none is given).

    Raises:
        ValueError: a scheme other than ``jobwire``/``jobwires``, or a bad port.
    """
    if "://" not in url:
        url = "jobwire://" + url
    parts = urlsplit(url)
    if parts.scheme not in ("jobwire", "jobwires"):
        raise ValueError(f"unsupported URL scheme {parts.scheme!r}: use jobwire:// or jobwires://")
    try:
        port = parts.port or DEFAULT_PORT
    except ValueError as exc:
        raise ValueError(f"bad port in {url!r}") from exc
    token = parts.username
    if parts.password is not None:  # jobwire://user:token@host: the token is the password part
        token = parts.password
    return Endpoint(
        host=parts.hostname or "127.0.0.1",
        port=port,
        token=unquote(token) if token else None,
        tls=parts.scheme == "jobwires",
    )


def reconnect_delay(attempt: int, base: float, cap: float, rng: random.Random) -> float:
    """Seconds to wait before reconnect attempt ``attempt`` (0-based): capped doubling, jittered.

    The delay is uniform in ``[d/2, d]`` where ``d = min(cap, base * 2**attempt)``, so many
    clients cut off together do not reconnect in lockstep.
    """
    ceiling = min(cap, base * 2.0 ** min(attempt, 32))
    return ceiling * (0.5 + rng.random() / 2)


@dataclass(frozen=True, slots=True)
class ServerInfo:
    """What the broker said about itself in the handshake."""

    version: int
    server: str
    now_ms: int
    max_frame: int
    max_payload: int
    max_batch: int
    max_inflight: int

    @classmethod
    def from_body(cls, body: dict[str, Any]) -> ServerInfo:
        return cls(
            version=int(body.get("version", PROTOCOL_VERSION)),
            server=str(body.get("server", "")),
            now_ms=int(body.get("now", 0)),
            max_frame=int(body.get("max_frame", 8 * 1024 * 1024)),
            max_payload=int(body.get("max_payload", 1 << 20)),
            max_batch=int(body.get("max_batch", 10_000)),
            max_inflight=int(body.get("max_inflight", 10_000)),
        )


@dataclass(frozen=True, slots=True)
class ConnectionStatistics:
    """A snapshot of a connection's counters (``Connection.statistics()``)."""

    state: ConnectionState
    endpoint: str
    connects: int
    """Successful handshakes, the first included."""
    connect_failures: int
    requests_sent: int
    replies: int
    error_replies: int
    events: int
    timeouts: int
    pending: int
    bytes_sent: int
    bytes_received: int
    server: ServerInfo | None
