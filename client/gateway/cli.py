"""``jobwire http``: the gateway as its own process, against a local or remote broker.

``register(subparsers)`` adds the subcommand to the ``jobwire`` console script; ``main`` runs it
alone (``python -m client.gateway``). For ``jobwire serve --http HOST:PORT`` (the gateway on the
broker's own event loop), ``add_serve_arguments`` adds the flags and ``local_broker_url`` says
where the embedded gateway connects.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
from collections.abc import Sequence
from typing import Any
from urllib.parse import quote

from client.endpoint import DEFAULT_URL
from client.gateway.listen import DEFAULT_LISTEN, parse_listen
from client.log import configure_cli_output


def listen_address(text: str) -> tuple[str, int]:
    """argparse type for ``HOST:PORT``."""
    try:
        return parse_listen(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def add_http_arguments(parser: argparse.ArgumentParser) -> None:
    """The gateway's options beside ``--listen``/``--http`` (shared with ``jobwire serve``)."""
    parser.add_argument(
        "--http-token", default=os.environ.get("JOBWIRE_HTTP_TOKEN"), metavar="TOKEN",
        help="bearer token HTTP callers must send (default: $JOBWIRE_HTTP_TOKEN, else the "
        "broker URL's token; '' for none)")
    parser.add_argument(
        "--http-serializer", choices=["msgpack", "json"], default="msgpack",
        help="how job data posted over HTTP is encoded for workers (default msgpack, the Python "
        "client's default)")
    parser.add_argument(
        "--http-max-streams", type=int, default=100, metavar="N",
        help="Server-Sent Events streams (GET /api/events) served at once; one more is answered "
        "429 OVERLOADED (default 100; all of them share one broker subscription)")


def add_serve_arguments(parser: argparse.ArgumentParser) -> None:
    """``--http HOST:PORT`` (off unless given, or ``$JOBWIRE_HTTP``) and the gateway's options,
    for a ``serve`` command that embeds the gateway."""
    env = os.environ.get("JOBWIRE_HTTP")
    parser.add_argument(
        "--http", type=listen_address, default=listen_address(env) if env else None,
        metavar="HOST:PORT", help="also serve the HTTP gateway (REST API, /metrics, dashboard) "
        "here, on the broker's event loop (default: off, or $JOBWIRE_HTTP; e.g. 127.0.0.1:7480)")
    add_http_arguments(parser)


def local_broker_url(host: str, port: int, token: str | None, *, tls: bool = False) -> str:
    """The URL an embedded gateway uses to reach the broker listening on ``host:port``.

    A wildcard listen address (``0.0.0.0``, ``::``) is reached over loopback.
    """
    if host in ("", "0.0.0.0"):
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    if ":" in host:
        host = f"[{host}]"
    auth = f"{quote(token, safe='')}@" if token else ""
    return f"{'jobwires' if tls else 'jobwire'}://{auth}{host}:{port}"


def register(subparsers: Any) -> argparse.ArgumentParser:
    """Add ``jobwire http``. Returns its parser."""
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "http", help="run the HTTP gateway (REST API, /metrics, dashboard)",
        description="Serve the REST API, Prometheus /metrics and the web dashboard for a broker. "
        "The gateway is a client of the broker's TCP protocol: run it anywhere that reaches the "
        "broker. Durations in HTTP bodies are MILLISECONDS. SIGTERM or SIGINT stops it (exit 0).")
    parser.add_argument(
        "--broker", default=os.environ.get("JOBWIRE_URL") or DEFAULT_URL,
        metavar="URL", help=f"broker URL, jobwire://[token@]host:port (default: $JOBWIRE_URL or "
        f"{DEFAULT_URL})")
    parser.add_argument(
        "--listen", type=listen_address, default=parse_listen(DEFAULT_LISTEN),
        metavar="HOST:PORT", help=f"where to serve HTTP (default {DEFAULT_LISTEN}; an address "
        "beyond loopback without a token logs a warning)")
    add_http_arguments(parser)
    parser.set_defaults(func=run_http)
    return parser


def run_http(args: argparse.Namespace) -> int:
    """Run the gateway until SIGTERM/SIGINT. Returns the exit code."""
    try:
        from client.gateway.server import GatewayServer
    except ImportError as exc:
        sys.stderr.write(f"jobwire http: error: {exc}; install the http extra: "
                         "pip install 'jobwire[http]'\n")
        return 1
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(message)s")
    configure_cli_output("info")
    host, port = args.listen

    async def run() -> None:
        # The handlers go in before the server answers: a signal that comes as soon as it does
        # (a supervisor's health check, then a stop) must stop it cleanly, not interrupt it.
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        server = GatewayServer(host, port, args.broker, token=args.http_token,
                               max_streams=args.http_max_streams,
                               serializer=args.http_serializer)
        await server.start()
        sys.stderr.write(f"jobwire http: serving http://{host}:{server.port}/ for "
                         f"{args.broker.split('@')[-1]}\n")
        waiter = asyncio.ensure_future(server.wait())
        stopper = asyncio.ensure_future(stop.wait())
        await asyncio.wait({waiter, stopper}, return_when=asyncio.FIRST_COMPLETED)
        stopper.cancel()
        await server.stop()

    try:
        with _runner() as runner:
            runner.run(run())
    except OSError as exc:
        sys.stderr.write(f"jobwire http: error: {exc}\n")
        return 1
    return 0


def _runner() -> asyncio.Runner:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency of jobwire
        return asyncio.Runner()
    return asyncio.Runner(loop_factory=uvloop.new_event_loop)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m client.gateway [options]``: the ``http`` subcommand alone."""
    parser = argparse.ArgumentParser(prog="jobwire")
    subparsers = parser.add_subparsers(title="commands", metavar="COMMAND")
    register(subparsers)
    args = parser.parse_args(["http", *(sys.argv[1:] if argv is None else argv)])
    return int(args.func(args))
