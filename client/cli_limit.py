"""``jobwire limit QUEUE``: show, set or clear a queue's rate and concurrency limits.

::

    jobwire limit sms --rate 10/1s          # at most 10 starts in any second, every worker
    jobwire limit sms --concurrency 3       # at most 3 active at once
    jobwire limit sms --clear               # no limits
    jobwire limit sms                       # show them (and a "not now" pause, if one runs)

Registered by ``client/cli.py``; the broker enforces the limits (``protocol/SPEC.md`` §8.18).
"""

from __future__ import annotations

import argparse
import re
from datetime import UTC, datetime
from typing import Any, Final

from client.cli_common import add_common, command, out, parse_duration, print_json
from client.operations import QueueLimits
from client.queue import Client

_RATE: Final = re.compile(r"^\s*(\d+)\s*/\s*(.+)$")


def parse_rate(text: str) -> tuple[int, float]:
    """``"10/1s"``, ``"100/1m"``, ``"5/250ms"``, ``"10/s"`` → ``(max, seconds)``.

    Raises:
        argparse.ArgumentTypeError: not ``MAX/DURATION``.
    """
    match = _RATE.match(text)
    if match is None:
        raise argparse.ArgumentTypeError(f"not a rate: {text!r} (try 10/1s, 100/1m, 5/250ms)")
    period = match.group(2).strip()
    if period and period[0].isalpha():
        period = "1" + period  # "10/s" means 10 per 1 s
    return int(match.group(1)), parse_duration(period)


def add_limit_parser(subparsers: Any) -> None:
    """Add ``jobwire limit``."""
    p = subparsers.add_parser(
        "limit", help="show or set a queue's rate and concurrency limits",
        description="Show, set or clear QUEUE's flow control, which the broker enforces across "
        "every worker: --rate MAX/DURATION lets at most MAX jobs start in any window of DURATION "
        "(e.g. 10/1s, 100/1m); --concurrency N lets at most N run at once; --clear removes both. "
        "With no option, print them. Limits are stored with the queue and survive restarts.",
    )
    p.add_argument("queue", metavar="QUEUE")
    p.add_argument("--rate", type=parse_rate, metavar="MAX/DURATION",
                   help="at most MAX starts per DURATION (10/1s, 100/1m, 5/250ms)")
    p.add_argument("--concurrency", type=int, metavar="N", help="at most N active jobs at once")
    p.add_argument("--clear", action="store_true", help="remove the rate and concurrency limits")
    add_common(p)
    p.set_defaults(func=command(_limit))


async def _limit(client: Client, args: argparse.Namespace) -> int:
    queue = client.queue(args.queue)
    if args.clear and (args.rate is not None or args.concurrency is not None):
        raise ValueError("--clear cannot be combined with --rate or --concurrency")
    if args.clear:
        await queue.clear_rate_limit()
        limits = await queue.clear_concurrency()
    else:
        if args.rate is not None:
            limits = await queue.set_rate_limit(*args.rate)
        if args.concurrency is not None:
            limits = await queue.set_concurrency(args.concurrency)
        if args.rate is None and args.concurrency is None:
            limits = await queue.limits()
    if args.json:
        print_json({"queue": args.queue, **limits._asdict()})
    else:
        out(describe_limits(args.queue, limits))
    return 0


def describe_limits(queue: str, limits: QueueLimits) -> str:
    """One line: ``sms: rate 10 per 1s, concurrency 3`` (or ``no limits``)."""
    parts = []
    if limits.rate_max is not None and limits.rate_period is not None:
        parts.append(f"rate {limits.rate_max} per {limits.rate_period:g}s")
    if limits.concurrency is not None:
        parts.append(f"concurrency {limits.concurrency}")
    if limits.paused_until is not None:
        until = datetime.fromtimestamp(limits.paused_until, UTC).strftime("%H:%M:%S UTC")
        parts.append(f"paused (not now) until {until}")
    if limits.rate_free_at is not None:
        free = datetime.fromtimestamp(limits.rate_free_at, UTC).strftime("%H:%M:%S.%f")[:-3]
        parts.append(f"rate window full until {free} UTC")
    return f"{queue}: {', '.join(parts) if parts else 'no limits'}"
