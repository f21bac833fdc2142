"""``jobwire bench``: run one scenario (or the standard suite) and print a table.

``configure_parser(parser)`` fills the ``bench`` parser of the ``jobwire`` console script
(``jobwire/cli.py`` imports this module only for ``jobwire bench``: it needs the bench extras).
Each scenario has its own sub-subcommand with the common options (``--jobs``,
``--payload-bytes``, ``--sync``, ``--connect``, ``--json``) and its own; ``jobwire bench suite``
runs ``bench.suite``. ``python -m bench`` is the same command.
"""

from __future__ import annotations

import argparse
import shlex
import sys

from bench.broker_proc import BrokerStartError
from bench.report import console as report_console
from bench.report import plot_series, table, write_json
from bench.runner import BenchError
from bench.scenarios import SCENARIOS, Params, run_scenario

_HELP = {
    "enqueue": "N jobs from P producer processes, in bulk (--batch B) or one at a time "
               "(--batch 1) with --in-flight K requests outstanding",
    "drain": "N jobs enqueued first, then W worker processes at concurrency C run a no-op "
             "(or --work sleep|spin --work-ms X) handler",
    "latency": "jobs at a steady --rate against idle workers: enqueue call -> handler start, "
               "and -> acknowledged completion",
    "mixed": "producers and workers together for --duration seconds, at --rate or flat out "
             "(--rate 0); steady-state throughput and latency; --plot PATH.png",
    "recovery": "a journal holding N jobs; time until a killed (or --signal term) and restarted "
                "broker answers hello+stats",
    "raw": "N one-job enqueue requests from a raw socket (bench/rawload.py: no client library, "
           "as a client in another language), --in-flight K outstanding",
}
_DEFAULT_JOBS = {"enqueue": 100_000, "drain": 50_000, "latency": 5_000, "mixed": 0,
                 "recovery": 200_000, "raw": 50_000}


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer >= 1")
    return value


def _add_common(parser: argparse.ArgumentParser, jobs: int) -> None:
    group = parser.add_argument_group("common options")
    group.add_argument("--jobs", type=int, default=jobs,
                       help=f"jobs to run (default {jobs:,})" if jobs else
                       "not used: the run lasts --duration")
    group.add_argument("--payload-bytes", type=int, default=100,
                       help="payload size per job (default 100)")
    group.add_argument("--sync", choices=("full", "normal", "off"), default="full",
                       help="the own broker's journal sync mode (default full)")
    group.add_argument("--connect", metavar="HOST:PORT",
                       help="use this broker instead of starting one (broker RSS/CPU are then "
                            "sampled only with --broker-pid)")
    group.add_argument("--broker-pid", type=int, help="with --connect: the broker's pid, to "
                                                      "sample its RSS and CPU")
    group.add_argument("--data-dir", help="where the own broker's temporary data directory goes "
                                          "(default: the system temp dir); fsync cost depends "
                                          "on this disk")
    group.add_argument("--broker-arg", action="append", default=[], metavar="ARG",
                       help="extra `jobwire serve` argument for the own broker (repeatable; "
                            "use --broker-arg=--flag for flags)")
    group.add_argument("--json", metavar="PATH", help="write the result as JSON (- for stdout)")
    group.add_argument("--quiet", action="store_true", help="no progress bar")
    group.add_argument("--timeout", type=float, default=900.0,
                       help="seconds a measured phase may last (default 900)")


def _add_load(parser: argparse.ArgumentParser, name: str) -> None:
    group = parser.add_argument_group(f"{name} options")
    if name in ("enqueue", "mixed"):
        group.add_argument("--producers", type=_positive, default=1, help="producer processes")
        group.add_argument("--batch", type=_positive, default=1000 if name == "enqueue" else 100,
                           help="jobs per enqueue request (1: one at a time with queue.add)")
        group.add_argument("--in-flight", type=_positive,
                           help="requests in flight per producer (default 1 in bulk, 100 one "
                                "at a time)")
        group.add_argument("--no-batch-adds", dest="batch_adds", action="store_false",
                           help="one at a time: one request per queue.add (the client batches "
                                "concurrent adds by default)")
        group.add_argument("--loop", choices=("uvloop", "asyncio"), default="uvloop",
                           help="the producers' event loop (default uvloop; asyncio: plain "
                                "asyncio.run, as a user's script runs it)")
    if name == "raw":
        group.add_argument("--in-flight", type=_positive, default=100,
                           help="requests outstanding (default 100)")
        group.add_argument("--mode", dest="raw_mode", choices=("split", "joined"),
                           default="split",
                           help="split (default): one send() per request; joined: one send() "
                                "for the requests freed by one recv()")
    if name in ("drain", "latency", "mixed"):
        group.add_argument("--workers", type=_positive, default=1, help="worker processes")
        group.add_argument("--concurrency", type=_positive, default=50,
                           help="handlers at once per worker (default 50)")
        group.add_argument("--work", choices=("none", "sleep", "spin"), default="none",
                           help="what the handler does (default nothing)")
        group.add_argument("--work-ms", type=float, default=0.0,
                           help="milliseconds the handler sleeps or spins")
    if name == "latency":
        group.add_argument("--rate", type=float, default=500.0, help="jobs/s (default 500)")
    if name == "mixed":
        group.add_argument("--rate", type=float, default=0.0,
                           help="target jobs/s over all producers (default 0: flat out)")
        group.add_argument("--duration", type=float, default=10.0, help="seconds (default 10)")
        group.add_argument("--warmup", type=float, default=2.0,
                           help="seconds left out of the steady-state figures (default 2)")
        group.add_argument("--max-backlog", type=int, default=2_000,
                           help="flat out: pause producing while more jobs than this wait "
                                "unfinished (default 2,000; 0: no limit)")
        group.add_argument("--plot", metavar="PATH.png",
                           help="draw throughput and latency over time (needs matplotlib)")
    if name == "recovery":
        group.add_argument("--signal", choices=("kill", "term"), default="kill",
                           help="how the broker is stopped before the restart (default kill)")


def params_from_args(args: argparse.Namespace) -> Params:
    """The scenario options of parsed ``jobwire bench`` arguments."""
    params = Params(
        jobs=args.jobs, payload_bytes=args.payload_bytes, sync=args.sync, connect=args.connect,
        quiet=args.quiet, data_dir=args.data_dir, broker_args=list(args.broker_arg),
        broker_pid=args.broker_pid, timeout=args.timeout,
    )
    for name in ("producers", "batch", "in_flight", "workers", "concurrency", "work", "work_ms",
                 "batch_adds", "loop", "raw_mode", "rate", "duration", "warmup", "max_backlog"):
        if hasattr(args, name):
            setattr(params, name, getattr(args, name))
    if hasattr(args, "signal"):
        params.stop_signal = args.signal
    return params


def _run(args: argparse.Namespace) -> int:
    console = report_console()
    params = params_from_args(args)
    if params.payload_bytes < 8 and args.scenario in ("latency", "mixed"):
        args.parser.error("latency and mixed stamp the enqueue time: --payload-bytes >= 8")
    try:
        result = run_scenario(args.scenario, params)
    except (BenchError, BrokerStartError) as exc:
        console.print(f"[red]bench {args.scenario} failed:[/red] {exc}")
        return 1
    argv = sys.argv[1:]
    result["command"] = "jobwire bench " + shlex.join(argv[1:] if argv[:1] == ["bench"] else argv)
    console.print(table([result], title=f"jobwire bench {args.scenario}"))
    if args.json:
        write_json(args.json, result)
    plot = getattr(args, "plot", None)
    if plot:
        try:
            plot_series(result, plot)
        except RuntimeError as exc:
            console.print(f"[red]{exc}[/red]")
            return 1
        console.print(f"plot written to {plot}")
    return 0


def _suite(args: argparse.Namespace) -> int:
    from bench.suite import run_suite

    return run_suite(args)


DESCRIPTION = ("Load-test jobwire. By default each run starts its own `jobwire serve` on a free "
               "port with a temporary data directory; load runs in separate processes.")


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """Give a ``bench`` parser its scenarios and ``suite``; ``jobwire/cli.py`` creates the parser.

    Args:
        parser: the parser of the ``bench`` command (or of ``python -m bench``).
    """
    parser.description = DESCRIPTION
    scenarios = parser.add_subparsers(title="scenarios", metavar="SCENARIO")
    for name in SCENARIOS:
        sub = scenarios.add_parser(name, help=_HELP[name], description=_HELP[name])
        _add_common(sub, _DEFAULT_JOBS[name])
        _add_load(sub, name)
        sub.set_defaults(func=_run, scenario=name, parser=sub)
    suite = scenarios.add_parser(
        "suite", help="the standard suite (every target of the bench issue), a few minutes",
        description="Run the standard suite, print the table, optionally write JSON and markdown.",
    )
    from bench.suite import add_suite_arguments

    add_suite_arguments(suite)
    suite.set_defaults(func=_suite, parser=suite)

    def usage(_args: argparse.Namespace) -> int:
        parser.print_help(sys.stderr)
        return 2

    parser.set_defaults(func=usage)


def main(argv: list[str] | None = None) -> int:
    """``python -m bench``: the same as ``jobwire bench``."""
    parser = argparse.ArgumentParser(prog="python -m bench")
    configure_parser(parser)
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    code: int = args.func(args)
    return code
