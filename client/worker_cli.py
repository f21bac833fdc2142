"""``jobwire worker module:attribute --queue emails --concurrency 50``.

``attribute`` names (dotted paths allowed) one of:

* a handler function (``async def`` or plain ``def``) that runs every job of the queues;
* a mapping ``{job_name: handler}``;
* a ``Worker`` instance, run as it is configured: the flags that configure a worker
  (``--queue``, ``--concurrency``, ``--prefetch``, ``--lease``, ``--timeout``, ``--grace``,
  ``--serializer``, ``--url``) are refused with it rather than silently ignored;
  ``--log-level`` applies.

The current directory is put on ``sys.path`` first, so ``jobwire worker tasks:handlers`` finds
``./tasks.py``. SIGTERM or SIGINT shuts down gracefully (``--grace`` seconds for running
handlers; a second signal skips the wait). Exit code 0 after a graceful stop.

``--processes N`` (or ``auto``) runs N such workers as child processes under a supervisor
(``client/processes.py``): the target and flags are checked here first, then each child runs
this module again (``python -m client.worker_cli worker ...``) with the hidden
``--supervisor-fd``.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import importlib
import os
import sys
from collections.abc import Callable, Coroutine, Mapping
from typing import Any

from client.endpoint import DEFAULT_URL
from client.errors import JobwireError
from client.log import configure_cli_output
from client.processes import (
    SUPERVISOR_FD_FLAG,
    ProcessSupervisor,
    leave_stuck_handlers,
    parse_processes,
    run_supervised,
)
from client.worker import Worker


def _err(text: str) -> None:
    sys.stderr.write(text + "\n")


def add_worker_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add ``jobwire worker`` to an argparse subparsers object."""
    p: argparse.ArgumentParser = subparsers.add_parser(
        "worker", help="run a worker process (or several: --processes)",
        description="Run jobs from one or more queues with the handler(s) at MODULE:ATTRIBUTE "
        "(a function, a {job_name: function} mapping, or a Worker instance). A Worker instance "
        "runs as it is configured: the flags below other than --log-level and --processes are "
        "refused with it.",
    )
    p.add_argument("target", metavar="MODULE:ATTRIBUTE")
    p.add_argument("--queue", "-q", dest="queues", action="append", metavar="QUEUE",
                   help="queue to serve (repeatable; earlier queues first; default: default)")
    p.add_argument("--concurrency", "-c", type=int,
                   help="jobs handled at once (default 10)")
    p.add_argument("--prefetch", type=parse_prefetch, metavar="N|auto",
                   help="jobs reserved ahead of free handlers, past --concurrency (auto, the "
                   "default: as many as would start within ~2 ms at the handlers' measured "
                   "pace, at most --concurrency; 0: never ahead)")
    p.add_argument("--lease", type=float, metavar="SECONDS",
                   help="lease length to ask for (default: each job's own)")
    p.add_argument("--timeout", type=float, metavar="SECONDS",
                   help="cancel a handler after this long and fail the attempt (this worker's own "
                   "limit; a job's own timeout, set when it was added, also applies: the "
                   "earlier wins)")
    p.add_argument("--grace", type=float, metavar="SECONDS",
                   help="on SIGTERM/SIGINT, how long running handlers may finish (default 30); "
                   "with --processes, a child still running 5 s after that is killed")
    p.add_argument("--processes", type=parse_processes, default=1, metavar="N|auto",
                   help="run N worker processes under a supervisor (auto: one per CPU; "
                   "default 1, this process). Each has its own loop, connection and "
                   "--concurrency; a child that dies is restarted (backoff 0.5 s doubling to "
                   "30 s); SIGTERM stops all gracefully; if the supervisor is killed, its "
                   "children stop by themselves")
    p.add_argument("--serializer",
                   help="payload serializer: msgpack (default), json, raw")
    p.add_argument("--url",
                   help=f"broker URL (default: $JOBWIRE_URL or {DEFAULT_URL})")
    p.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    p.add_argument(SUPERVISOR_FD_FLAG, type=int, dest="supervisor_fd", help=argparse.SUPPRESS)
    p.set_defaults(func=run_worker_command)
    return p


def parse_prefetch(text: str) -> str:
    """``--prefetch``: ``auto`` or a whole number >= 0 (kept as text for the child command)."""
    if text == "auto" or (text.isdigit() and text.isascii()):
        return text
    raise argparse.ArgumentTypeError(f"expected a number >= 0 or auto, got {text!r}")


def load_target(target: str) -> Any:
    """Import ``module:attribute`` (attribute may be dotted).

    Raises:
        ValueError: the target is malformed or cannot be found.
    """
    module_name, sep, attribute = target.partition(":")
    if not sep or not module_name or not attribute:
        raise ValueError(f"expected MODULE:ATTRIBUTE, got {target!r}")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        obj: Any = importlib.import_module(module_name)
    except ImportError as exc:
        raise ValueError(f"cannot import {module_name!r}: {exc}") from exc
    for part in attribute.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise ValueError(f"{module_name!r} has no attribute {attribute!r}") from None
    return obj


def build_worker(args: argparse.Namespace, target: Any) -> Worker:
    """The ``Worker`` for the parsed arguments and the loaded target.

    Raises:
        ValueError: the target is not a handler, a mapping or a Worker.
    """
    if isinstance(target, Worker):
        # Every worker flag defaults to None, so a flag given on the command line is seen here.
        given = [flag for flag, dest in _WORKER_FLAGS if getattr(args, dest) is not None]
        if given:
            raise ValueError(
                f"{args.target} is a configured Worker: drop {', '.join(given)} (it has its own "
                f"settings: queues {', '.join(target.queues)}, concurrency {target.concurrency}; "
                "change them where the Worker is created)")
        return target
    if not (callable(target) or isinstance(target, Mapping)):
        raise ValueError(f"{args.target} is not a function, a mapping of functions or a Worker")
    return Worker(
        args.url or os.environ.get("JOBWIRE_URL") or DEFAULT_URL, args.queues or ["default"],
        target, concurrency=10 if args.concurrency is None else args.concurrency,
        prefetch=None if args.prefetch in (None, "auto") else int(args.prefetch),
        lease=args.lease, job_timeout=args.timeout,
        grace=30.0 if args.grace is None else args.grace,
        serializer=args.serializer or "msgpack",
    )


# (flag, argparse dest) of the flags that configure a Worker built from a handler.
_WORKER_FLAGS = [("--queue", "queues"), ("--concurrency", "concurrency"),
                 ("--prefetch", "prefetch"), ("--lease", "lease"),
                 ("--timeout", "timeout"), ("--grace", "grace"), ("--serializer", "serializer"),
                 ("--url", "url")]


def run_worker_command(args: argparse.Namespace) -> int:
    """``func`` of ``jobwire worker``: returns the exit code."""
    configure_cli_output(args.log_level)
    try:
        worker = build_worker(args, load_target(args.target))
    except (ValueError, TypeError) as exc:
        _err(f"jobwire: error: {exc}")
        return 2
    if args.processes > 1 and args.supervisor_fd is None:
        supervisor = ProcessSupervisor(child_command(args), args.processes, worker.grace)
        try:
            return asyncio.run(supervisor.run())
        except KeyboardInterrupt:  # pragma: no cover - SIGINT is handled while run() runs
            return 130
    # The handler's module and everything it imported live as long as the process: take them
    # out of the cyclic collector's scans, as the broker's CLI does after recovery. Without
    # this an oldest-generation collection rescans all of them while jobs wait (measured in a
    # 50,000-job drain: worst pause 13-20 ms, under 1 ms frozen; bench/README.md). The library
    # leaves this to the application that embeds a Worker.
    gc.collect()
    gc.freeze()
    try:
        if args.supervisor_fd is None:
            _run(worker.run)
        else:
            fd = args.supervisor_fd
            _run(lambda: run_supervised(worker, fd))
            leave_stuck_handlers()
    except (JobwireError, OSError) as exc:
        _err(f"jobwire: error: {exc}")
        return 1
    except KeyboardInterrupt:
        return 130
    return 0


def child_command(args: argparse.Namespace) -> list[str]:
    """The command line of one supervised child: this command again, minus ``--processes``."""
    argv = [sys.executable, "-m", "client.worker_cli", "worker", args.target,
            "--log-level", args.log_level]
    for queue in args.queues or ():
        argv += ["--queue", queue]
    for flag, dest in _WORKER_FLAGS[1:]:
        value = getattr(args, dest)
        if value is not None:
            argv += [flag, str(value)]
    return argv


def _run(main: Callable[[], Coroutine[Any, Any, None]]) -> None:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency
        asyncio.run(main())
        return
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(main())


def main(argv: list[str] | None = None) -> int:
    """``python -m client.worker_cli worker ...``: how the supervisor starts its children."""
    parser = argparse.ArgumentParser(prog="jobwire")
    add_worker_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    code: int = args.func(args)
    return code


if __name__ == "__main__":
    sys.exit(main())
