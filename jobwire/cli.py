"""The ``jobwire`` console script: every layer's commands under one parser.

Each command's arguments and the function that runs it belong to its layer:

* ``serve``: ``broker/cli.py``;
* ``worker``: ``client/worker_cli.py``; ``stats``, ``job``, ``pause``, ``resume``, ``clean``,
  ``failed``: ``client/cli.py``;
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

from broker.cli import add_serve_parser
from client.cli import register as register_client_commands

BENCH_EXTRAS = frozenset({"hdrh", "rich", "psutil", "matplotlib"})
"""Top-level modules of the ``bench`` extra (``pyproject.toml``) that ``bench.cli`` imports."""

BENCH_HELP = "measure a broker: throughput, latency, memory, recovery"


def bench_extras_hint(missing: str) -> str:
    """The one line ``jobwire bench`` prints when a module of the bench extras is missing."""
    return (f"jobwire: error: `jobwire bench` needs the bench extras (no module {missing!r}): "
            "pip install 'jobwire[bench]' (from a checkout: pip install -e '.[bench]')")


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
    add_serve_parser(subparsers)
    register_client_commands(subparsers)
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
