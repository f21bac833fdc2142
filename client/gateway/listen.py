"""Listen addresses of the gateway (no third-party imports: the CLI parses flags with these even
where the ``http`` extra is not installed)."""

from __future__ import annotations

import ipaddress
from typing import Final

DEFAULT_LISTEN: Final = "127.0.0.1:7480"


def is_loopback(host: str) -> bool:
    """True for ``localhost`` and loopback addresses (127.0.0.0/8, ::1)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def parse_listen(text: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[::1]:7480`` for IPv6) → ``(host, port)``.

    Raises:
        ValueError: no port, or a port outside 0..65535.
    """
    host, sep, port_text = text.rpartition(":")
    if not sep or not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise ValueError(f"expected HOST:PORT, got {text!r}")
    return host.strip("[]") or "127.0.0.1", int(port_text)
