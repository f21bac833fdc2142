"""What the client's CLI commands share: output streams, ``--url``/``--json``, duration parsing,
and running an async command with one error line on failure."""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import math
import os
import re
import sys
import threading
from collections.abc import Callable, Coroutine
from typing import Any, Final, TextIO

from client.endpoint import DEFAULT_URL, parse_url
from client.errors import JobwireError, NotFoundError
from client.log import configure_cli_output
from client.queue import Client

_UNITS: Final = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)?\s*$")


_streams = threading.local()
"""Per-thread output streams that ``main(stdout=, stderr=)`` sets; default: ``sys.std*``."""


def out(text: str) -> None:
    """Command output; the CLI's only way to print."""
    (getattr(_streams, "out", None) or sys.stdout).write(text + "\n")


def err(text: str) -> None:
    (getattr(_streams, "err", None) or sys.stderr).write(text + "\n")


def parse_duration(text: str) -> float:
    """``"90"``, ``"90s"``, ``"15m"``, ``"1h"``, ``"7d"``, ``"250ms"`` → seconds.

    Raises:
        argparse.ArgumentTypeError: not a duration.
    """
    match = _DURATION.match(text)
    if match is None:
        raise argparse.ArgumentTypeError(f"not a duration: {text!r} (try 30s, 15m, 1h, 7d)")
    return float(match.group(1)) * _UNITS[match.group(2) or "s"]


def default_url() -> str:
    return os.environ.get("JOBWIRE_URL") or DEFAULT_URL


def add_common(parser: argparse.ArgumentParser, *, json_flag: bool = True) -> None:
    parser.add_argument("--url", default=default_url(),
                        help="broker URL, jobwire://[token@]host:port (default: $JOBWIRE_URL or "
                        f"{DEFAULT_URL})")
    if json_flag:
        parser.add_argument("--json", action="store_true", help="print JSON instead of a table")


def command(
    body: Callable[[Client, argparse.Namespace], Coroutine[Any, Any, int]],
) -> Callable[[argparse.Namespace], int]:
    """Wrap an async command: connect, run, map errors to one stderr line and exit 1."""

    def run(args: argparse.Namespace) -> int:
        # The library's warnings on stderr: stdout carries the command's output (--json).
        configure_cli_output("warning", sys.stderr)

        async def main() -> int:
            async with Client(args.url, reconnect=False, client_name="jobwire-cli",
                              connect_timeout=5.0, request_timeout=30.0) as client:
                return await body(client, args)

        try:
            return asyncio.run(main())
        except KeyboardInterrupt:  # Ctrl-C: how `jobwire events` is meant to end; as tail -f
            return 130
        except ConnectionRefusedError:
            endpoint = parse_url(args.url)
            err(f"jobwire: error: no broker at {endpoint.host}:{endpoint.port}: is `jobwire "
                 "serve` running there? (--url or JOBWIRE_URL names another)")
            return 1
        except (JobwireError, OSError, ValueError) as exc:
            message = exc.message if isinstance(exc, NotFoundError) else str(exc)
            err(f"jobwire: error: {message or type(exc).__name__}")
            return 1

    return run


def print_json(data: Any) -> None:
    out(json.dumps(data, indent=2, sort_keys=False, default=repr))


def jsonable(value: Any) -> Any:
    """``value`` as JSON can hold it: bytes as ``{"base64": ...}``, and NaN and infinities (no
    JSON number) as the strings ``"NaN"``, ``"Infinity"``, ``"-Infinity"``."""
    if isinstance(value, float) and not math.isfinite(value):
        return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    if isinstance(value, bytes):
        return {"base64": base64.b64encode(value).decode()}
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    return value


def set_streams(stdout: TextIO | None, stderr: TextIO | None) -> None:
    """Send this thread's command output and error lines to these streams (``None``: sys's)."""
    _streams.out, _streams.err = stdout, stderr
