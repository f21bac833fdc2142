"""The ``jobwire`` console script: ``jobwire serve`` here, other subcommands from their packages.

``main`` builds one argparse parser with subcommands. ``serve`` is defined here. The client
package (``client/cli.py``: ``worker``, ``stats``, ``job``, ``pause``, ``resume``, ``clean``,
``failed``) and the bench package (``bench/cli.py``: ``bench``) add theirs through a
``register(subparsers)`` function, imported only when the module exists, so the broker runs
without them. Each subcommand sets ``func`` (``Callable[[argparse.Namespace], int]``) on its
parser with ``set_defaults``; ``main`` calls it and exits with its return code.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import importlib
import importlib.util
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any

from broker.config import ConfigError, add_arguments, load_settings
from broker.log import configure_logging, get_logger

EXTENSIONS = ("client.cli", "bench.cli")
"""Modules whose ``register(subparsers)`` adds subcommands, when they exist."""


def _serve(args: argparse.Namespace) -> int:
    try:
        settings = load_settings(args, os.environ)
    except ConfigError as exc:
        args.parser.error(str(exc))
    configure_logging(settings.log_level, settings.log_format)
    # Deferred: `jobwire --help` needs no journal imports.
    from broker.integrity import EXIT_DAMAGED, JournalDamaged
    from broker.server import run_broker

    log = get_logger("cli")
    # Jobs are many long-lived objects: at the default thresholds the cyclic GC rescans all of
    # them again and again (bench: enqueueing 1M jobs ran 1.5-2x slower with 0.5-0.9 s pauses).
    # Collect young objects less often, and take what recovery loaded out of future scans.
    gc.set_threshold(50_000, 20, 10)
    try:
        with _event_loop_runner() as runner:
            runner.run(run_broker(settings, on_ready=lambda _server: gc.freeze()))
    except KeyboardInterrupt:  # a second Ctrl-C while the runner was not yet handling signals
        log.warning("interrupted")
        return 130
    except JournalDamaged as exc:  # refused, files set aside: a distinct status for supervisors
        log.error("fatal", error=str(exc), set_aside=None if exc.set_aside is None
                  else str(exc.set_aside))
        return EXIT_DAMAGED
    except OSError as exc:
        log.error("fatal", error=str(exc))
        return 1
    except Exception as exc:  # the broker cannot go on: say why in one log line, exit 1
        log.exception("fatal", error=repr(exc))
        return 1
    return 0


def _event_loop_runner() -> asyncio.Runner:
    """An ``asyncio.Runner`` on uvloop when it is installed (it is a dependency)."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a declared dependency
        return asyncio.Runner()
    factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return asyncio.Runner(loop_factory=factory)


def add_serve_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add ``jobwire serve`` to an argparse subparsers object.

    Returns:
        The ``serve`` parser.
    """
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "serve",
        help="run the broker daemon",
        description="Run the jobwire broker. Every flag has a JOBWIRE_* environment variable; a "
        "flag wins over its variable, which wins over the default. Durations take ms, s, m, h or d "
        "(a plain number is seconds); sizes take KiB, MiB or GiB (a plain number is bytes). "
        "SIGTERM or SIGINT drains and stops the broker, exit code 0.",
    )
    add_arguments(parser)
    parser.set_defaults(func=_serve, parser=parser)
    return parser


def build_parser() -> argparse.ArgumentParser:
    """The whole ``jobwire`` parser, with every available subcommand."""
    parser = argparse.ArgumentParser(
        prog="jobwire",
        description="jobwire: a standalone job broker (TCP, msgpack, SQLite journal).",
    )
    subparsers = parser.add_subparsers(title="commands", metavar="COMMAND")
    add_serve_parser(subparsers)
    for name in EXTENSIONS:
        try:
            if importlib.util.find_spec(name) is None:
                continue
            register = getattr(importlib.import_module(name), "register", None)
            if callable(register):
                register(subparsers)
        except Exception as exc:  # a broken extension must not take `jobwire serve` down with it
            sys.stderr.write(f"jobwire: the commands of {name} are unavailable: {exc!r}\n")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``jobwire`` console script.

    Args:
        argv: arguments without the program name (``sys.argv[1:]`` when ``None``).

    Returns:
        The process exit code.
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    func = getattr(args, "func", None)
    if func is None:
        parser.print_help(sys.stderr)
        return 2
    code: int = func(args)
    return code


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
