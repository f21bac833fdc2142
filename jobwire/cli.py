"""The ``jobwire`` console script: every layer's commands under one parser.

Each command's arguments and the function that runs it belong to its layer:

* ``serve``: ``broker/cli.py``;
* ``worker``: ``client/worker_cli.py``; ``stats``, ``job``, ``pause``, ``resume``, ``clean``,
  ``obliterate``, ``failed``: ``client/cli.py``;
* ``bench``: ``bench/cli.py``.

Each sets ``func`` (``Callable[[argparse.Namespace], int]``) on its parser; ``main`` calls it and
returns its exit code.

``bench`` is imported only when the command is ``bench``. It needs the bench extras (rich,
psutil, hdrhistogram, matplotlib), which ``pip install jobwire`` does not bring, and a broker or a
worker has no use for them in its process. Without them ``jobwire bench`` (``--help`` included)
prints one line saying how to install them and exits 2; every other command runs as if ``bench``
did not exist.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from broker.cli import Companion, add_serve_parser, serve
from broker.config import Settings
from client.cli import register as register_client_commands
from client.gateway.cli import add_serve_arguments as add_gateway_arguments
from client.gateway.cli import local_broker_url
from client.gateway.cli import register as register_http_command

BENCH_EXTRAS = frozenset({"hdrh", "rich", "psutil", "matplotlib"})
"""Top-level modules of the ``bench`` extra (``pyproject.toml``) that ``bench.cli`` imports."""

BENCH_HELP = "measure a broker: throughput, latency, memory, recovery"


def bench_extras_hint(missing: str) -> str:
    """The one line ``jobwire bench`` prints when a module of the bench extras is missing."""
    return (f"jobwire: error: `jobwire bench` needs the bench extras (no module {missing!r}): "
            "pip install 'jobwire[bench]' (from a checkout: pip install -e '.[bench]')")


def _serve_with_gateway(args: argparse.Namespace) -> int:
    """``jobwire serve``, with the HTTP gateway on the broker's loop when ``--http`` is given."""

    def gateway(settings: Settings) -> Companion | None:
        if args.http is None:
            return None
        if settings.port == 0:
            args.parser.error("--http needs a fixed --port (the gateway connects to it)")
        from client.gateway import GatewayServer  # needs the http extra only with --http

        url = local_broker_url(settings.host, settings.port, settings.token,
                               tls=settings.tls_cert is not None)
        host, port = args.http
        return GatewayServer(host, port, url, token=args.http_token,
                             serializer=args.http_serializer,
                             max_streams=args.http_max_streams)

    return serve(args, gateway)


def build_parser(*, with_bench: bool = False) -> argparse.ArgumentParser:
    """The whole ``jobwire`` parser.

    Args:
        with_bench: fill in ``bench``'s scenarios (imports ``bench.cli`` and the bench extras);
            otherwise ``bench`` is only listed.

    Returns:
        The parser.

    Raises:
        ModuleNotFoundError: ``with_bench`` and a module of the bench extras is not installed.
    """
    parser = argparse.ArgumentParser(
        prog="jobwire",
        description="jobwire: a standalone job broker (TCP, msgpack, SQLite journal).",
    )
    subparsers = parser.add_subparsers(title="commands", metavar="COMMAND")
    serve_parser = add_serve_parser(subparsers)
    add_gateway_arguments(serve_parser)
    serve_parser.set_defaults(func=_serve_with_gateway)
    register_client_commands(subparsers)
    register_http_command(subparsers)
    bench = subparsers.add_parser("bench", help=BENCH_HELP)
    if with_bench:
        from bench.cli import configure_parser

        configure_parser(bench)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``jobwire`` console script.

    Args:
        argv: arguments without the program name (``sys.argv[1:]`` when ``None``).

    Returns:
        The process exit code.
    """
    arguments = list(sys.argv[1:] if argv is None else argv)
    with_bench = arguments[:1] == ["bench"]
    try:
        parser = build_parser(with_bench=with_bench)
    except ModuleNotFoundError as exc:
        missing = (exc.name or "").partition(".")[0]
        if missing not in BENCH_EXTRAS:
            raise  # not a missing extra: a real error, shown in full
        sys.stderr.write(bench_extras_hint(missing) + "\n")
        return 2
    args = parser.parse_args(arguments)
    func = getattr(args, "func", None)
    if func is None:
        parser.print_help(sys.stderr)
        return 2
    code: int = func(args)
    return code
