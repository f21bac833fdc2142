"""``jobwire worker`` and the admin subcommands: ``stats``, ``job``, ``jobs``, ``pause``,
``resume``, ``clean``, ``failed``, ``events``, ``workers`` (``limit`` is in
``client/cli_limit.py``, ``schedules`` in ``client/cli_schedules.py``).

``register(subparsers)`` adds them to the ``jobwire`` console script (``jobwire/cli.py`` calls
it); each sets ``func(args) -> exit code``. Every command takes ``--url`` (default ``$JOBWIRE_URL``,
else ``jobwire://127.0.0.1:7400``); the admin commands print readable tables, or JSON with
``--json``. Errors print one ``jobwire: error: ...`` line on stderr and exit non-zero
(1 for a broker or connection error, 2 for bad usage).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, TextIO

from client.cli_common import (
    add_common,
    command,
    err,
    jsonable,
    out,
    parse_duration,
    print_json,
    set_streams,
)
from client.cli_limit import add_limit_parser
from client.cli_schedules import add_schedules_parser
from client.errors import NotFoundError
from client.job import Job, JobRecord
from client.queue import Client
from client.serializers import get_serializer
from client.watch_cli import (
    RATE_HEADERS,
    WORKER_HEADERS,
    event_json,
    event_line,
    rate_columns,
    worker_row,
)
from protocol.checks import MAX_LIST_LIMIT
from protocol.model import JobState
from protocol.observing import SUBSCRIBABLE
from protocol.replies import JobInfo, QueueStats


def register(subparsers: Any) -> None:
    """Add ``worker`` and the admin subcommands (see the module docstring)."""
    from client.worker_cli import add_worker_parser

    add_worker_parser(subparsers)

    p = subparsers.add_parser("stats", help="show queue counters, rates and durations",
                              description="Counts per state for every queue (or one), jobs "
                              "added and completed per second over the last minute, and the "
                              "median and 99th percentile of waiting and processing times.")
    p.add_argument("--queue", "-q", help="only this queue")
    add_common(p)
    p.set_defaults(func=command(_stats))

    p = subparsers.add_parser("job", help="show one job", description="Everything the broker "
                              "knows about one job: state, attempts, progress, result, last error.")
    p.add_argument("job_id", metavar="ID")
    p.add_argument("--queue", "-q", help="the job's queue (needed when a user-given id is a "
                   "job's in several queues: ids are unique per queue)")
    p.add_argument("--serializer", default="msgpack", help="how to decode data and result "
                   "(msgpack, json, raw; default msgpack)")
    add_common(p)
    p.set_defaults(func=command(_job))

    for name, verb in (("pause", "stop handing out"), ("resume", "resume handing out")):
        p = subparsers.add_parser(name, help=f"{verb} a queue's jobs",
                                  description=f"{verb.capitalize()} the jobs of QUEUE.")
        p.add_argument("queue", metavar="QUEUE")
        if name == "pause":
            p.add_argument("--for", dest="for_", type=parse_duration, metavar="DURATION",
                           help='only for this long (30s, 15m...): a "not now" pause that ends '
                           "by itself (`jobwire limit QUEUE` shows until when)")
        add_common(p)
        p.set_defaults(func=command(_pause if name == "pause" else _resume))

    p = subparsers.add_parser("clean", help="delete old jobs of one state",
                              description="Delete QUEUE's jobs in STATE older than a duration.")
    p.add_argument("queue", metavar="QUEUE")
    p.add_argument("--state", required=True,
                   choices=["completed", "failed", "waiting", "delayed"])
    p.add_argument("--older-than", type=parse_duration, default=0.0, metavar="DURATION",
                   help="only jobs older than this (e.g. 1h, 7d; default 0: all)")
    p.add_argument("--limit", type=int, help="delete at most this many")
    add_common(p)
    p.set_defaults(func=command(_clean))

    p = subparsers.add_parser("jobs", help="list a queue's jobs by state",
                              description="List QUEUE's jobs in one or more states: waiting in "
                              "run order, delayed by run time, active by lease deadline (with "
                              "the holding connection), completed and failed newest first. "
                              "Payloads are not shown (jobwire job ID shows one job in full).")
    p.add_argument("queue", metavar="QUEUE")
    p.add_argument("--state", action="append", choices=[state.value for state in JobState],
                   help="the state to list (repeatable: listed one after the other; "
                   "default waiting)")
    p.add_argument("--limit", type=int, default=20, help="list at most this many (default 20, "
                   "at most 1000)")
    p.add_argument("--offset", type=int, default=0, help="skip this many first (default 0)")
    add_common(p)
    p.set_defaults(func=command(_jobs))

    p = subparsers.add_parser("obliterate", help="delete a queue and all its jobs",
                              description="Delete QUEUE and every job in it (the queue leaves "
                              "`jobwire stats`). Refused while jobs are active unless --force, "
                              "which revokes their leases. Asks first on a terminal; elsewhere "
                              "it needs --yes.")
    p.add_argument("queue", metavar="QUEUE")
    p.add_argument("--force", action="store_true", help="also delete active jobs")
    p.add_argument("--yes", "-y", action="store_true", help="do not ask for confirmation")
    add_common(p)
    p.set_defaults(func=command(_obliterate))

    p = subparsers.add_parser("failed", help="list (and retry) failed jobs",
                              description="List QUEUE's failed jobs, newest first; --retry moves "
                              "them back to waiting.")
    p.add_argument("queue", metavar="QUEUE")
    p.add_argument("--limit", type=int, default=50, help="list at most this many (default 50)")
    p.add_argument("--retry", action="store_true", help="retry them (all, or --id)")
    p.add_argument("--id", dest="ids", action="append", metavar="ID",
                   help="with --retry: only this job (repeatable)")
    add_common(p)
    p.set_defaults(func=command(_failed))
    add_limit_parser(subparsers)
    add_schedules_parser(subparsers)

    p = subparsers.add_parser(
        "events", help="print job events as they happen",
        description="Follow job events (added, active, progress, completed, failed, ...) of "
        "QUEUE... (every queue when none is named), one line each, until Ctrl-C (exit 130) or "
        "--count. A 'lagged' line says how many events this terminal missed because it fell "
        "behind.")
    p.add_argument("queues", metavar="QUEUE", nargs="*")
    p.add_argument("--kind", dest="kinds", action="append", choices=sorted(SUBSCRIBABLE),
                   metavar="KIND", help="only this kind (repeatable; default all): "
                   + ", ".join(sorted(SUBSCRIBABLE)))
    p.add_argument("--count", type=int, help="stop after this many events")
    add_common(p)
    p.set_defaults(func=command(_events))

    p = subparsers.add_parser(
        "workers", help="list the connected workers",
        description="Connections that reserve jobs: client name, host, queues, jobs held, "
        "completed and failed on this connection, connected since, last seen.")
    p.add_argument("--all", dest="include_all", action="store_true",
                   help="every connection, not only workers")
    add_common(p)
    p.set_defaults(func=command(_workers))




# --------------------------------------------------------------------------- commands


async def _why_not_failed(client: Client, job_id: str, queue: str) -> str:
    """Say why ``retry_failed`` left ``job_id`` alone: gone, elsewhere, or not failed."""
    try:
        job = await client.get_job(job_id)
    except NotFoundError:
        return "it no longer exists (removed, cleaned or pruned by retention)"
    if job.queue != queue:
        return f"it is in queue {job.queue}, not {queue}"
    return f"it is {job.state.value if job.state else 'in an unknown state'}, not failed"


async def _stats(client: Client, args: argparse.Namespace) -> int:
    stats = await client.stats(args.queue)
    if args.queue and args.queue not in stats:
        stats[args.queue] = QueueStats(0, 0, 0, 0, 0, False, None, 0, 0)
    metrics = await client.metrics([args.queue] if args.queue else None)
    per_queue = metrics["queues"]
    if args.json:
        print_json({name: {**s.to_wire(), "metrics": per_queue.get(name)}
                     for name, s in sorted(stats.items())})
        return 0
    if not stats:
        out("no queues yet")
        return 0
    headers = ["QUEUE", "WAITING", "DELAYED", "ACTIVE", "COMPLETED", "FAILED", "PAUSED",
               "OLDEST WAITING", "TOTAL DONE", "TOTAL FAILED", *RATE_HEADERS]
    uptime = metrics["broker"].get("uptime_ms", 0)
    rows = [[name, s.waiting, s.delayed, s.active, s.completed, s.failed,
             "yes" if s.paused else "no", _age(s.oldest_waiting_ms), s.total_completed,
             s.total_failed, *rate_columns(per_queue.get(name), uptime)]
            for name, s in sorted(stats.items())]
    out(table(headers, rows))
    return 0


async def _events(client: Client, args: argparse.Namespace) -> int:
    printed = 0
    async with client.events(args.queues or None, kinds=args.kinds) as stream:
        async for event in stream:
            out(event_json(event) if args.json else event_line(event))
            printed += 1
            if args.count is not None and printed >= args.count:
                break
    return 0


async def _workers(client: Client, args: argparse.Namespace) -> int:
    workers = await client.workers(include_all=args.include_all)
    if args.json:
        print_json(workers)
    elif not workers:
        out("no workers connected")
    else:
        out(table(WORKER_HEADERS, [worker_row(worker) for worker in workers]))
    return 0


async def _job(client: Client, args: argparse.Namespace) -> int:
    job = await client.get_job(args.job_id, serializer=get_serializer(args.serializer),
                               queue=args.queue)
    described = describe_job(job)
    if args.json:
        print_json(described)
        return 0
    width = max(len(key) for key in described)
    for key, value in described.items():
        text = value if isinstance(value, str) else json.dumps(value, default=repr)
        if key == "error" and value:
            text = "\n" + "\n".join("    " + line for line in str(value).splitlines())
        out(f"{key.ljust(width)}  {'-' if value is None else text}")
    return 0


async def _pause(client: Client, args: argparse.Namespace) -> int:
    await client.queue(args.queue).pause(for_=args.for_)
    if args.for_ is None:
        _say(args, {"queue": args.queue, "paused": True}, f"paused {args.queue}")
    else:
        _say(args, {"queue": args.queue, "paused": False, "for": args.for_},
             f"paused {args.queue} for {args.for_:g}s (not now)")
    return 0


async def _resume(client: Client, args: argparse.Namespace) -> int:
    await client.queue(args.queue).resume()
    _say(args, {"queue": args.queue, "paused": False}, f"resumed {args.queue}")
    return 0


async def _clean(client: Client, args: argparse.Namespace) -> int:
    removed = await client.queue(args.queue).clean(
        JobState(args.state), older_than=args.older_than, limit=args.limit
    )
    _say(args, {"queue": args.queue, "state": args.state, "removed": removed},
         f"removed {removed} {args.state} job(s) from {args.queue}")
    return 0


async def _obliterate(client: Client, args: argparse.Namespace) -> int:
    queue = client.queue(args.queue)
    if not args.yes:
        if not sys.stdin.isatty():
            raise ValueError(f"obliterate deletes {args.queue!r} and all its jobs: pass --yes "
                             "to confirm (stdin is not a terminal to ask)")
        s = await queue.stats()
        held = s.waiting + s.delayed + s.active + s.completed + s.failed
        prompt = (f"Delete queue {args.queue!r} and its {held} job(s) ({s.waiting} waiting, "
                  f"{s.delayed} delayed, {s.active} active, {s.completed} completed, "
                  f"{s.failed} failed)? [y/N] ")
        answer = await asyncio.to_thread(input, prompt)
        if answer.strip().lower() not in ("y", "yes"):
            err("jobwire: not deleted")
            return 1
    removed = await queue.obliterate(force=args.force)
    _say(args, {"queue": args.queue, "removed": removed},
         f"obliterated {args.queue}: {removed} job(s) deleted")
    return 0


async def _failed(client: Client, args: argparse.Namespace) -> int:
    queue = client.queue(args.queue)
    if args.retry:
        if not args.ids:
            retried = await queue.retry_failed()
            _say(args, {"queue": args.queue, "retried": retried},
                 f"retried {retried} failed job(s) in {args.queue}")
            return 0
        retried, not_failed = await queue.retry_failed_ids(args.ids)
        why = {job_id: await _why_not_failed(client, job_id, args.queue)
               for job_id in not_failed}
        _say(args, {"queue": args.queue, "retried": retried, "not_retried": why},
             "\n".join([f"retried {retried} failed job(s) in {args.queue}",
                        *(f"job {job_id} not retried: {reason}" for job_id, reason in
                          why.items())]))
        return 1 if why else 0
    jobs: list[Job] = []
    total = 0
    while len(jobs) < args.limit:  # a page stops short when it fills a frame: page on
        page, total = await queue.failed_page(
            limit=min(args.limit - len(jobs), MAX_LIST_LIMIT), offset=len(jobs)
        )
        jobs += page
        if not page or len(jobs) >= total:
            break
    if args.json:
        print_json({"total": total, "jobs": [describe_job(job) for job in jobs]})
        return 0
    if not jobs:
        out(f"no failed jobs in {args.queue}")
        return 0
    rows = [[job.id, job.name, f"{job.attempts}/{job.max_attempts}", _when(job.finished_at),
             _first_line(job.error, 60)] for job in jobs]
    out(table(["ID", "NAME", "ATTEMPTS", "FAILED AT", "ERROR"], rows))
    if total > len(jobs):
        out(f"({len(jobs)} of {total} shown; --limit to see more)")
    return 0


async def _jobs(client: Client, args: argparse.Namespace) -> int:
    page = await client.queue(args.queue).jobs(
        tuple(args.state or ("waiting",)), offset=args.offset, limit=args.limit
    )
    listed = [_listed(info, page.holders.get(info.id)) for info in page.jobs]
    if args.json:
        print_json({"total": page.total, "offset": args.offset, "jobs": listed})
        return 0
    if not listed:
        out(f"no jobs in {args.queue} ({page.total} in those states)")
        return 0
    keys = ["id", "name", "state", "priority", "attempts", "created_at", "run_at",
            "lease_deadline", "conn", "error"]
    rows = [[_first_line(job[key], 40) if key == "error" else job[key] for key in keys]
            for job in listed]
    out(table([key.upper().replace("_", " ") for key in keys], rows))
    out(f"({args.offset + 1}..{args.offset + len(listed)} of {page.total})")
    return 0


def _listed(info: JobInfo, conn: int | None) -> dict[str, Any]:
    """A listed job as a JSON-friendly mapping (times as ISO 8601 UTC; no payload)."""
    def at(ms: int | None) -> str | None:
        return None if ms is None else _iso(ms / 1000)

    return {
        "id": info.id, "name": info.name, "state": str(info.state), "priority": info.priority,
        "attempts": f"{info.attempts}/{info.max_attempts}", "created_at": at(info.created_at),
        "run_at": at(info.run_at), "started_at": at(info.started_at),
        "finished_at": at(info.finished_at), "lease_deadline": at(info.lease_deadline),
        "conn": conn, "error": info.error,
    }


# --------------------------------------------------------------------------- formatting


def describe_job(job: JobRecord) -> dict[str, Any]:
    """A job as a JSON-friendly mapping (times as ISO 8601 UTC, bytes as base64)."""
    return {
        "id": job.id, "queue": job.queue, "name": job.name,
        "state": None if job.state is None else job.state.value,
        "priority": job.priority, "attempts": job.attempts, "max_attempts": job.max_attempts,
        "created_at": _iso(job.created_at), "run_at": _iso(job.run_at),
        "started_at": _iso(job.started_at), "finished_at": _iso(job.finished_at),
        "progress": jsonable(job.progress), "data": jsonable(_safe(lambda: job.data)),
        "result": jsonable(_safe(lambda: job.result)), "error": job.error,
    }


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A plain-text table: left-aligned text, right-aligned numbers."""
    cells = [[_cell(value) for value in row] for row in rows]
    widths = [len(h) for h in headers]
    for row in cells:
        for i, text in enumerate(row):
            widths[i] = max(widths[i], len(text))
    numeric = [all(isinstance(row[i], int) for row in rows) if rows else False
               for i in range(len(headers))]

    def line(values: Sequence[str]) -> str:
        parts = [v.rjust(widths[i]) if numeric[i] else v.ljust(widths[i])
                 for i, v in enumerate(values)]
        return "  ".join(parts).rstrip()

    return "\n".join([line(list(headers)), *(line(row) for row in cells)])


def _cell(value: Any) -> str:
    return "-" if value is None else str(value)


def _say(args: argparse.Namespace, data: Mapping[str, Any], text: str) -> None:
    if args.json:
        print_json(data)
    else:
        out(text)




def _safe(get: Callable[[], Any]) -> Any:
    try:
        return get()
    except Exception:
        return "<undecodable with this serializer: try --serializer>"




def _iso(seconds: float | None) -> str | None:
    if seconds is None:
        return None
    return datetime.fromtimestamp(seconds, UTC).isoformat(timespec="milliseconds")


def _when(seconds: float | None) -> str | None:
    if seconds is None:
        return None
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%d %H:%M:%S")


def _age(ms: int | None) -> str:
    if ms is None:
        return "-"
    seconds = ms / 1000
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.1f}{unit}"
    return f"{seconds:.1f}s"


def _first_line(text: str | None, limit: int) -> str:
    line = (text or "").split("\n", 1)[0]
    return line if len(line) <= limit else line[: limit - 1] + "…"


def main(
    argv: Sequence[str] | None = None, *, stdout: TextIO | None = None,
    stderr: TextIO | None = None,
) -> int:
    """Run the client subcommands alone (``python -m client.cli``); ``jobwire`` has them too.

    Args:
        argv: the arguments (``sys.argv[1:]`` when ``None``).
        stdout: where command output goes (default ``sys.stdout``).
        stderr: where error lines go (default ``sys.stderr``).

    Returns:
        The exit code.
    """
    parser = argparse.ArgumentParser(prog="jobwire")
    register(parser.add_subparsers(title="commands", metavar="COMMAND"))
    args = parser.parse_args(argv)
    func = getattr(args, "func", None)
    if func is None:
        parser.print_help(sys.stderr)
        return 2
    set_streams(stdout, stderr)
    try:
        code: int = func(args)
    finally:
        set_streams(None, None)
    return code


__all__ = ["describe_job", "main", "parse_duration", "register", "table"]

if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
