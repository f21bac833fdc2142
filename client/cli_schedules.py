"""``jobwire schedules``: list, create or update, and remove repeatable jobs (job schedulers).

::

    jobwire schedules                                   # every scheduler, with its next run
    jobwire schedules list --queue maintenance
    jobwire schedules upsert maintenance cleanup --every 1h --name cleanup --data '{"days": 7}'
    jobwire schedules upsert reports daily --cron "0 9 * * 1-5" --tz Europe/Berlin
    jobwire schedules remove maintenance cleanup

Registered by ``client/cli.py``; the broker keeps the schedulers and makes each run a delayed
job (``protocol/SPEC.md`` §8.25-8.27).
"""

from __future__ import annotations

import argparse
import json
from datetime import UTC, datetime
from typing import Any

from client.cli_common import add_common, command, jsonable, out, parse_duration, print_json
from client.queue import Client, all_schedulers
from client.schedules import Scheduler


def _when(text: str) -> float:
    """An ISO 8601 time (``2026-12-24T09:00:00+01:00``; naive means UTC) or Unix seconds."""
    try:
        return float(text)
    except ValueError:
        pass
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"not a time: {text!r} (ISO 8601 like 2026-12-24T09:00:00Z, or Unix seconds)"
        ) from None
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp()


def _json(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"--data is not JSON: {exc}") from None


def add_schedules_parser(subparsers: Any) -> None:
    """Add ``jobwire schedules`` with ``list``, ``upsert`` and ``remove``."""
    p = subparsers.add_parser(
        "schedules", help="list, create or remove repeatable jobs (job schedulers)",
        description="Repeatable jobs: the broker keeps each scheduler (durable, like jobs) and "
        "adds one job per run, delayed until its time, exactly once per run across restarts. "
        "A run missed while the broker was down runs once when it is back (not a burst). "
        "Without a subcommand: list every scheduler.",
    )
    add_common(p)
    p.set_defaults(func=command(_list), queue=None)
    sub = p.add_subparsers(dest="action", metavar="{list,upsert,remove}")

    q = sub.add_parser("list", help="list schedulers with their next run",
                       description="Every scheduler (or QUEUE's) with its rule and next run.")
    q.add_argument("--queue", "-q", help="only this queue's schedulers")
    add_common(q)
    q.set_defaults(func=command(_list))

    q = sub.add_parser(
        "upsert", help="create or update a scheduler (idempotent)",
        description="Create the scheduler KEY of QUEUE, or update it if its definition changed "
        "(the same definition again changes nothing: safe to run on every deploy). Give --every "
        "or --cron. A cron pattern has 5 fields (or 6 with seconds first) and is read in --tz "
        "(an IANA zone, default UTC), daylight saving time included.",
    )
    q.add_argument("queue", metavar="QUEUE")
    q.add_argument("key", metavar="KEY")
    rule = q.add_mutually_exclusive_group(required=True)
    rule.add_argument("--every", type=parse_duration, metavar="DURATION",
                      help="run every DURATION (250ms, 30s, 15m, 1h, 1d), from the first upsert "
                      "or --start")
    rule.add_argument("--cron", metavar="PATTERN", help='a cron pattern, e.g. "0 9 * * 1-5"')
    q.add_argument("--tz", metavar="ZONE", help="the cron pattern's time zone (Europe/Berlin)")
    q.add_argument("--start", type=_when, metavar="TIME", help="no run before TIME (ISO 8601 "
                   "or Unix seconds)")
    q.add_argument("--end", type=_when, metavar="TIME", help="no run after TIME")
    q.add_argument("--limit", type=int, metavar="N", help="at most N runs in all")
    q.add_argument("--name", help="each run's handler name (default: KEY)")
    q.add_argument("--data", type=_json, metavar="JSON", help="each run's data, as JSON")
    q.add_argument("--priority", type=int, help="each run's priority (lower first)")
    q.add_argument("--attempts", type=int, help="each run's attempts")
    add_common(q)
    q.set_defaults(func=command(_upsert))

    q = sub.add_parser("remove", help="remove a scheduler",
                       description="Remove the scheduler KEY of QUEUE and its next run's job if "
                       "it has not started; exit 1 if there was none.")
    q.add_argument("queue", metavar="QUEUE")
    q.add_argument("key", metavar="KEY")
    add_common(q)
    q.set_defaults(func=command(_remove))


async def _list(client: Client, args: argparse.Namespace) -> int:
    found = await all_schedulers(client.connection, args.queue, client.serializer)
    if args.json:
        print_json([_as_json(s) for s in found])
        return 0
    if not found:
        out("no schedulers")
        return 0
    rows = [("QUEUE", "KEY", "RULE", "NEXT RUN (UTC)", "RUNS", "NAME")]
    rows += [(s.queue, s.key, _rule(s), _time(s.next_run),
              f"{s.count}" if s.limit is None else f"{s.count}/{s.limit}", s.name) for s in found]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        out("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())
    return 0


async def _upsert(client: Client, args: argparse.Namespace) -> int:
    options = {name: value for name, value in
               (("priority", args.priority), ("attempts", args.attempts)) if value is not None}
    scheduler = await client.queue(args.queue).upsert_scheduler(
        args.key, every=args.every, cron=args.cron, tz=args.tz, start=args.start, end=args.end,
        limit=args.limit, name=args.name, data=args.data, **options)
    if args.json:
        print_json(_as_json(scheduler))
    else:
        what = "created" if scheduler.created else "updated" if scheduler.changed else "unchanged"
        out(f"{args.queue}/{args.key}: {what}; {_rule(scheduler)}; next run "
            f"{_time(scheduler.next_run)}")
    return 0


async def _remove(client: Client, args: argparse.Namespace) -> int:
    removed = await client.queue(args.queue).remove_scheduler(args.key)
    if args.json:
        print_json({"queue": args.queue, "key": args.key, "removed": removed})
    else:
        out(f"{args.queue}/{args.key}: {'removed' if removed else 'no such scheduler'}")
    return 0 if removed else 1


def _rule(s: Scheduler) -> str:
    if s.every is not None:
        return f"every {s.every:g}s"
    return f"cron {s.cron!r}" + (f" {s.tz}" if s.tz else " UTC")


def _time(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]


def _as_json(s: Scheduler) -> dict[str, Any]:
    fields = s._asdict()
    fields.pop("job")
    fields["data"] = jsonable(fields["data"])
    return fields
