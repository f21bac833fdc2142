"""Authentication policy: the token check, the slow-down of repeated failures, exposure warnings.

Pure policy, no I/O and no clock of its own: the session asks ``FailureThrottle.admit`` when a
connection opens (how long to leave it unread), ``token_matches`` at ``hello``, and records the
outcome; the server asks ``exposure_warning`` at start.

Invariants:

1. The token comparison takes the same time whatever the given token shares with the real one
   (``hmac.compare_digest`` on UTF-8 bytes).
2. A host's delay doubles with each failure within ``forget_after`` seconds of the previous one,
   from ``base`` up to ``cap``; its handshakes are read at most one per delay (the slots are
   handed out in order); a success or ``forget_after`` quiet seconds clear it.
3. The throttle remembers at most ``max_peers`` hosts (the least recently failing are dropped),
   so a flood of addresses cannot grow it without bound.
"""

from __future__ import annotations

import hmac
import ipaddress
from collections import OrderedDict
from typing import Final

DEFAULT_BASE_DELAY: Final = 0.1
DEFAULT_MAX_DELAY: Final = 5.0
DEFAULT_FORGET_AFTER: Final = 60.0
DEFAULT_MAX_BACKLOG: Final = 30.0
DEFAULT_MAX_PEERS: Final = 10_000


def token_matches(expected: str | None, given: str | None) -> bool:
    """Whether a hello's token is acceptable, in constant time.

    Args:
        expected: the broker's token, or ``None`` when none is configured (anything passes).
        given: the token the client sent (``None`` when it sent none).

    Returns:
        True when no token is configured or the given one equals it.
    """
    if expected is None:
        return True
    return hmac.compare_digest((given or "").encode(), expected.encode())


def peer_host(peername: object) -> str:
    """The host part of a transport's ``peername`` (``"?"`` when unknown)."""
    if isinstance(peername, tuple) and peername:
        return str(peername[0])
    return "?"


class FailureThrottle:
    """Per-host memory of recent authentication failures, and the wait they impose.

    A host with recent failures has its next connections' handshakes *scheduled*: each one is
    read only at the host's next free slot, ``delay`` seconds after the previous one, where
    ``delay`` doubles per recent failure. So a host can test at most one token per ``delay``
    however many connections it opens, and gains nothing by closing early.

    Args:
        base: seconds of delay after a first failure.
        cap: the longest delay.
        forget_after: seconds without a failure after which a host starts again from scratch.
        max_backlog: connections whose slot is further away than this are refused at once.
        max_peers: most hosts remembered at once.
    """

    __slots__ = ("_base", "_cap", "_failures", "_forget_after", "_max_backlog", "_max_peers")

    def __init__(
        self,
        base: float = DEFAULT_BASE_DELAY,
        cap: float = DEFAULT_MAX_DELAY,
        forget_after: float = DEFAULT_FORGET_AFTER,
        max_backlog: float = DEFAULT_MAX_BACKLOG,
        max_peers: int = DEFAULT_MAX_PEERS,
    ) -> None:
        self._base = base
        self._cap = cap
        self._forget_after = forget_after
        self._max_backlog = max_backlog
        self._max_peers = max_peers
        # host -> (recent failures, time of the last failure, the host's next free slot)
        self._failures: OrderedDict[str, tuple[int, float, float]] = OrderedDict()

    def delay(self, failures: int) -> float:
        """Seconds between two handshakes of a host with ``failures`` recent failures."""
        if failures <= 0:
            return 0.0
        return min(self._cap, self._base * 2.0 ** min(failures - 1, 62))

    def record_failure(self, host: str, now: float) -> None:
        """Count a failed handshake from ``host`` at ``now`` (monotonic seconds)."""
        count, last, slot = self._failures.pop(host, (0, now, now))
        if now - last > self._forget_after:
            count, slot = 0, now
        count += 1
        self._failures[host] = (count, now, max(slot, now + self.delay(count)))
        while len(self._failures) > self._max_peers:
            self._failures.popitem(last=False)

    def record_success(self, host: str) -> None:
        """Forget ``host``'s failures (it authenticated)."""
        self._failures.pop(host, None)

    def admit(self, host: str, now: float) -> float | None:
        """Schedule a new connection from ``host``: how long before its handshake is read.

        Returns:
            0 for a host without recent failures; else the seconds until the host's next slot
            (which this connection takes); ``None`` when that is beyond ``max_backlog`` (refuse).
        """
        entry = self._failures.get(host)
        if entry is None:
            return 0.0
        count, last, slot = entry
        if now - last > self._forget_after:
            del self._failures[host]
            return 0.0
        start = max(slot, now)
        if start - now > self._max_backlog:
            return None
        self._failures[host] = (count, last, start + self.delay(count))
        return start - now

    def failures(self, host: str) -> int:
        """Recent failures remembered for ``host``."""
        entry = self._failures.get(host)
        return 0 if entry is None else entry[0]


def is_loopback(host: str) -> bool:
    """Whether binding ``host`` only accepts connections from this machine.

    ``localhost`` and loopback addresses are; wildcard addresses (``0.0.0.0``, ``::``, empty),
    other addresses and other names are not.
    """
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def exposure_warning(host: str, token: str | None) -> str | None:
    """The warning to log when the broker listens beyond this machine without a token.

    Returns:
        The message, or ``None`` when the bind is loopback-only or a token is set.
    """
    if token is not None or is_loopback(host):
        return None
    return (f"listening on {host or 'every address'} without a token: anyone who can reach this "
            "port can enqueue, take and delete jobs; set --token-file (or JOBWIRE_TOKEN)")
