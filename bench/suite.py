"""``jobwire bench suite``: the standard suite, one row per target of the bench issue.

Each step runs one scenario against a fresh broker of its own (so no step inherits another's
backlog), checks its target and adds a row. Then the micro benchmarks that exist in ``bench/``
(``bench_disk``: the disk's ``fdatasync`` alone, the floor of every durable latency;
``bench_codec``, ``bench_core``, ``bench_journal``: codec, core and journal alone, written with
the protocol and broker) run as subprocesses and their output is kept verbatim. ``--json``
writes ``{"results": [...], "micro": [...], ...}``; ``--markdown`` writes the table
``bench/README.md`` shows. ``--scale`` multiplies job counts and durations (the smoke test runs
the whole suite at a tiny scale; figures at a small scale say nothing about speed).
"""

from __future__ import annotations

import argparse
import importlib.util
import math
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Final

from rich.console import Console

from bench.broker_proc import BrokerStartError
from bench.report import (
    check_target,
    conditions,
    jobwire_version,
    lookup,
    markdown,
    table,
    write_json,
)
from bench.report import console as report_console
from bench.runner import BenchError
from bench.scenarios import Params, run_scenario


@dataclass(frozen=True, slots=True)
class Step:
    """One suite row: a scenario with fixed options and its target."""

    name: str
    scenario: str
    options: dict[str, Any]
    target: str = ""
    checks: tuple[tuple[str, str, float], ...] = ()
    scaled: tuple[str, ...] = ("jobs",)
    repeat: int = 1
    """Runs of the step; the row is the median run by ``median_of`` (all runs' figures kept)."""
    median_of: str = "jobs_per_s"
    """The figure that ranks the runs: jobs/s for throughput steps, p99 for a latency step
    (its rate is fixed: every run has the same jobs/s)."""


ISSUE_JOBS: Final = 50_000
"""Jobs per run of the issue 17 steps: its workload (50,000 jobs of 100 bytes)."""

STANDARD: tuple[Step, ...] = (
    Step("enqueue-bulk", "enqueue",
         {"jobs": 300_000, "batch": 1000, "in_flight": 2, "producers": 1},
         ">= 100,000 jobs/s", (("jobs_per_s", ">=", 100_000),), repeat=3),
    Step("enqueue-single", "enqueue",
         {"jobs": 200_000, "batch": 1, "in_flight": 100, "producers": 1},
         ">= 40,000 jobs/s", (("jobs_per_s", ">=", 40_000),), repeat=3),
    # Issue 17's workload and targets: 50,000 jobs of 100 bytes; a user's script.
    Step("bulk-one-in-flight", "enqueue",
         {"jobs": ISSUE_JOBS, "batch": 1000, "in_flight": 1, "producers": 1},
         ">= 150,000 jobs/s", (("jobs_per_s", ">=", 150_000),), repeat=3),
    Step("single-asyncio", "enqueue",
         {"jobs": ISSUE_JOBS, "batch": 1, "in_flight": 100, "producers": 1, "loop": "asyncio"},
         ">= 45,000 jobs/s", (("jobs_per_s", ">=", 45_000),), repeat=3),
    Step("single-raw", "raw", {"jobs": ISSUE_JOBS, "in_flight": 100, "raw_mode": "split"},
         ">= 30,000 jobs/s", (("jobs_per_s", ">=", 30_000),), repeat=3),
    Step("drain", "drain", {"jobs": ISSUE_JOBS, "workers": 1, "concurrency": 50},
         ">= 50,000 jobs/s", (("jobs_per_s", ">=", 50_000),), repeat=3),
    Step("latency-500", "latency", {"jobs": 5_000, "rate": 500.0, "workers": 1,
                                    "concurrency": 50},
         "start p50 <= 1 ms, p99 <= 1 ms",
         (("latency_ms.p50", "<=", 1.0), ("latency_ms.p99", "<=", 1.0)),
         repeat=3, median_of="latency_ms.p99"),
    # Issue 17's lever "payload bytes written once": 10 KiB payloads, MB/s in the table.
    Step("enqueue-10k", "enqueue",
         {"jobs": 20_000, "batch": 100, "in_flight": 2, "producers": 1,
          "payload_bytes": 10_240}),
    Step("drain-10k", "drain",
         {"jobs": 20_000, "workers": 1, "concurrency": 50, "payload_bytes": 10_240}),
    Step("mixed", "mixed", {"jobs": 0, "duration": 15.0, "warmup": 3.0, "producers": 1,
                            "workers": 1, "concurrency": 50, "batch": 100, "in_flight": 2,
                            "max_backlog": 2_000},
         ">= 20,000 jobs/s", (("jobs_per_s", ">=", 20_000),), scaled=("duration", "warmup")),
    Step("rss-1m-waiting", "enqueue",
         {"jobs": 1_000_000, "batch": 1000, "in_flight": 2, "producers": 1},
         "RSS end <= 600 MiB", (("broker.rss_mb_end", "<=", 600.0),)),
    Step("recovery-1m", "recovery", {"jobs": 1_000_000, "stop_signal": "kill"},
         "serving again <= 10 s", (("seconds", "<=", 10.0),)),
)

MICRO: tuple[tuple[str, tuple[str, ...]], ...] = (
    # First: the --sync full floor (fdatasync alone) beside latency-500, in the brokers' directory.
    ("bench.bench_disk", ()),
    ("bench.bench_codec", ()),
    ("bench.bench_core", ("--jobs", "300000", "--repeat", "1", "--memory-jobs", "1000000")),
    ("bench.bench_journal", ("--jobs", "100000")),
)


def add_suite_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``jobwire bench suite`` options."""
    parser.add_argument("--json", metavar="PATH", help="write every result as JSON")
    parser.add_argument("--markdown", metavar="PATH", help="write the table as markdown")
    parser.add_argument("--only", metavar="NAMES",
                        help="comma-separated step names (default: all): "
                             + ", ".join(step.name for step in STANDARD))
    parser.add_argument("--scale", type=float, default=1.0,
                        help="multiply job counts and durations (default 1)")
    parser.add_argument("--sync", choices=("full", "normal", "off"), default="full",
                        help="the brokers' journal sync mode (default full)")
    parser.add_argument("--data-dir", help="where the brokers' temporary data directories go")
    parser.add_argument("--no-micro", action="store_true",
                        help="skip the codec/core/journal micro benchmarks")
    parser.add_argument("--repeat", type=int, metavar="N",
                        help="runs per step, the median run reported (by jobs/s; by p99 for "
                             "latency-500) (default: 3 for the short throughput steps and "
                             "latency-500, 1 for the others)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")


def scaled_step(step: Step, scale: float) -> Step:
    """``step`` with its scaled options multiplied by ``scale`` (at least 1 job, 2 seconds)."""
    if scale == 1.0:
        return step
    options = dict(step.options)
    for key in step.scaled:
        if key == "jobs":
            options[key] = max(1, int(options[key] * scale))
        elif key == "duration":
            options[key] = max(2.0, math.ceil(options[key] * scale))
        else:
            options[key] = max(1.0, math.floor(options[key] * scale))
    return replace(step, options=options)


def step_command(step: Step, sync: str) -> str:
    """The ``jobwire bench`` command line that runs the same as ``step``."""
    flags = {"stop_signal": "signal", "raw_mode": "mode"}
    parts = ["jobwire", "bench", step.scenario]
    for key, value in step.options.items():
        if step.scenario == "mixed" and key == "jobs":
            continue
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        parts += [f"--{flags.get(key, key).replace('_', '-')}", str(value)]
    parts += ["--sync", sync]
    return " ".join(parts)


@dataclass(slots=True)
class SuiteRun:
    """Everything a suite run produced."""

    results: list[dict[str, Any]] = field(default_factory=list)
    micro: list[dict[str, Any]] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)


def run_micro(module: str, extra: tuple[str, ...], timeout: float = 600.0) -> dict[str, Any]:
    """Run one micro benchmark module as a subprocess; its output is kept verbatim."""
    command = [sys.executable, "-m", module, *extra]
    started = time.monotonic()
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout,
                              check=False)
        output, code = done.stdout + done.stderr, done.returncode
    except subprocess.TimeoutExpired as exc:
        partial = exc.stdout or b""
        text = partial.decode(errors="replace") if isinstance(partial, bytes) else partial
        output, code = f"timed out after {timeout} s\n{text}", -1
    return {"module": module, "command": "python -m " + " ".join([module, *extra]),
            "returncode": code, "seconds": round(time.monotonic() - started, 2),
            "output": output.strip()}


def execute(args: argparse.Namespace, console: Console) -> SuiteRun:
    """Run the selected steps and micro benchmarks, printing progress and failures."""
    wanted = {name.strip() for name in args.only.split(",")} if args.only else None
    steps = [scaled_step(step, args.scale) for step in STANDARD
             if wanted is None or step.name in wanted]
    if wanted is not None and len(steps) != len(wanted):
        known = {step.name for step in STANDARD}
        raise BenchError(f"unknown step(s): {', '.join(sorted(wanted - known))}")
    out = SuiteRun()
    for step in steps:
        params = Params(sync=args.sync, data_dir=args.data_dir, quiet=args.quiet)
        for key, value in step.options.items():
            setattr(params, key, value)
        console.print(f"[bold]{step.name}[/bold]: {step_command(step, args.sync)}")
        repeat = max(1, args.repeat or step.repeat)
        runs: list[dict[str, Any]] = []
        try:
            for _ in range(repeat):
                # Flush dirty pages left by earlier runs (the 1M-job journals), so their
                # writeback does not compete with this run's fsyncs.
                os.sync()
                runs.append(run_scenario(step.scenario, params))
        except (BenchError, BrokerStartError) as exc:
            out.failures.append(f"{step.name}: {exc}")
            console.print(f"[red]{step.name} failed:[/red] {exc}")
            continue
        result = median_run(runs, step.median_of)
        result["name"] = step.name
        result["command"] = step_command(step, args.sync)
        if step.checks:
            check_target(result, step.target, step.checks)
        out.results.append(result)
    if not args.no_micro:
        for module, extra in MICRO:
            if importlib.util.find_spec(module) is None:
                continue
            if module == "bench.bench_disk" and args.data_dir:
                extra = (*extra, "--dir", args.data_dir)
            console.print(f"[bold]micro[/bold]: python -m {module} {' '.join(extra)}")
            out.micro.append(run_micro(module, extra))
    return out


def median_run(runs: list[dict[str, Any]], of: str = "jobs_per_s") -> dict[str, Any]:
    """The run with the median figure ``of`` (a dotted path; the lower middle of an even
    count; a run without the figure ranks first), carrying ``runs_of`` (the path) and
    ``runs_figures`` (every run's figure in the order they ran) when there are several runs;
    ``runs_jobs_per_s`` too when ranked by jobs/s."""
    ranked = sorted(runs, key=lambda result: lookup(result, of) or 0.0)
    chosen = dict(ranked[(len(ranked) - 1) // 2])
    if len(runs) > 1:
        chosen["runs_of"] = of
        chosen["runs_figures"] = [lookup(result, of) for result in runs]
        if of == "jobs_per_s":
            chosen["runs_jobs_per_s"] = chosen["runs_figures"]
    return chosen


def runs_note(result: dict[str, Any]) -> str | None:
    """``"NAME: N runs, jobs/s A, B, C (in run order); ..."`` for a repeated step, else None."""
    figures = result.get("runs_figures")
    if not figures:
        return None
    of = result.get("runs_of", "jobs_per_s")
    if of == "jobs_per_s":
        label, shown = "jobs/s", ", ".join(f"{figure:,.0f}" for figure in figures)
    else:
        label = of.replace("latency_ms.", "") + " ms" if of.startswith("latency_ms.") else of
        shown = ", ".join("-" if figure is None else f"{figure:,.3f}" for figure in figures)
    return (f"{result['name']}: {len(figures)} runs, {label} {shown} (in run order); "
            "the row is the median run")


def suite_markdown(run: SuiteRun, scale: float) -> str:
    """The markdown report: the table, conditions, commands and the micro outputs."""
    notes = []
    if scale != 1.0:
        notes.append(f"scale {scale}: job counts and durations scaled; not comparable figures")
    notes += [f"FAILED {failure}" for failure in run.failures]
    notes += [note for note in map(runs_note, run.results) if note]
    text = markdown(run.results, notes)
    for micro in run.micro:
        text += f"\n`{micro['command']}` (exit {micro['returncode']}, {micro['seconds']} s):\n\n"
        text += "```\n" + micro["output"] + "\n```\n"
    return text


def run_suite(args: argparse.Namespace) -> int:
    """``jobwire bench suite``: run, print the table, write JSON and markdown.

    Returns:
        0 when every step ran (met targets or not), 1 when a step failed to run.
    """
    console = report_console()
    try:
        run = execute(args, console)
    except BenchError as exc:
        console.print(f"[red]{exc}[/red]")
        return 2
    console.print(table(run.results, title="jobwire bench suite"))
    console.print(conditions(run.results))
    for result in run.results:
        note = runs_note(result)
        if note:
            console.print(note)
    for micro in run.micro:
        console.print(f"\n[bold]{micro['command']}[/bold] (exit {micro['returncode']})")
        console.print(micro["output"], markup=False, highlight=False)
    if args.json:
        write_json(args.json, {
            "version": jobwire_version(), "scale": args.scale, "sync": args.sync,
            "conditions": conditions(run.results), "results": run.results,
            "micro": run.micro, "failures": run.failures,
        })
    if args.markdown:
        write_text(args.markdown, suite_markdown(run, args.scale))
    for failure in run.failures:
        console.print(f"[red]FAILED[/red] {failure}")
    return 1 if run.failures else 0


def write_text(path: str, text: str) -> None:
    """Write the markdown report (creating its directory)."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(text)
