"""``jobwire serve``: the broker daemon's command line.

The flags are declared in ``broker/config.py``, each with its ``JOBWIRE_*`` variable. The
``jobwire`` console script (``jobwire/cli.py``, the one package above every layer) adds ``serve``
to its parser with ``add_serve_parser``; ``main`` is ``python -m broker``, the same command on its
own. Like all of ``broker``, this module imports nothing from ``client`` or ``bench``.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from broker.config import ConfigError, Settings, add_arguments, load_settings
from broker.log import configure_logging, get_logger

DESCRIPTION = (
    "Run the jobwire broker. Every flag has a JOBWIRE_* environment variable; a flag wins over "
    "its variable, which wins over the default. Durations take ms, s, m, h or d (a plain number "
    "is seconds); sizes take KiB, MiB or GiB (a plain number is bytes). SIGTERM or SIGINT drains "
    "and stops the broker, exit code 0."
)


class Companion(Protocol):
    """Something that runs beside the broker on its event loop (the HTTP gateway of
    ``jobwire serve --http``): started before the journal opens (so a busy port stops ``serve``
    at once), told when the broker accepts connections, stopped after it shut down."""

    async def start(self) -> None: ...

    def broker_ready(self) -> None: ...

    async def stop(self) -> None: ...


def _serve(args: argparse.Namespace) -> int:
    return serve(args)


def serve(args: argparse.Namespace,
          companion: Callable[[Settings], Companion | None] | None = None) -> int:
    """Run the broker with the parsed ``serve`` arguments until it is stopped.

    Args:
        args: the namespace of a parser made by ``add_serve_parser``.
        companion: builds, from the resolved settings, something to run beside the broker on
            its loop (``None``: nothing). Layers above ``broker`` pass it (``jobwire/cli.py``).

    Returns:
        The exit code.
    """
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
    # them again and again (measured in bench/README.md, "Where the time goes"). Collect young
    # objects less often, and take what recovery loaded out of future scans.
    gc.set_threshold(50_000, 20, 10)
    try:
        beside = companion(settings) if companion is not None else None

        def ready(_server: object) -> None:
            gc.freeze()
            if beside is not None:
                beside.broker_ready()

        async def run() -> None:
            if beside is not None:
                await beside.start()
            try:
                await run_broker(settings, on_ready=ready)
            finally:
                if beside is not None:
                    await beside.stop()

        with _event_loop_runner() as runner:
            runner.run(run())
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


def _configure(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    add_arguments(parser)
    parser.set_defaults(func=_serve, parser=parser)
    return parser


def add_serve_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add ``jobwire serve`` to an argparse subparsers object.

    Returns:
        The ``serve`` parser; its ``func`` default runs the broker and returns the exit code.
    """
    return _configure(subparsers.add_parser("serve", help="run the broker daemon",
                                            description=DESCRIPTION))


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m broker``: the same as ``jobwire serve``.

    Args:
        argv: arguments without the program name (``sys.argv[1:]`` when ``None``).

    Returns:
        The process exit code (2 for bad settings, from argparse).
    """
    parser = _configure(argparse.ArgumentParser(prog="python -m broker", description=DESCRIPTION))
    return _serve(parser.parse_args(argv))
