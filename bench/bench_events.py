"""Events benchmark: what publishing job events costs the broker, alone (no sockets, no core).

Per event, in nanoseconds (best of ``--rounds``), for a stream of ``completed`` events with a
100-byte result:

* ``empty loop``: the bare loop, to read the others against.
* ``guard, 0 subscribers``: the hot path with nobody subscribed: one ``subscriptions.active``
  test per write, nothing built (what every enqueue/ack pays when events are unused).
* ``record+publish, 0 subscribers``: recording anyway and publishing to nobody (never done by
  the broker; shows what the guard saves).
* ``1 subscriber, other queue``: recorded, committed, published; the one subscription follows
  another queue, so only the index lookups are paid.
* ``1 subscriber, all events``: recorded, committed, published, encoded and taken in frames
  of up to 1 MiB (``events_message``), as the I/O layer will.
* ``10 subscribers, all events``: the same with ten subscriptions sharing each encoded event.

Usage::

    .venv/bin/python -m bench.bench_events [--events 200000] [--rounds 3] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Final

from broker.events import SUBSCRIBABLE, EventKind, PendingEvents, events_message
from broker.subscriptions import SubscriptionLimits, Subscriptions

COMPLETED: Final = EventKind.COMPLETED
RESULT: Final = b"r" * 100
BATCH: Final = 500
"""Events per commit, about what a busy broker's group commit carries."""
FRAME: Final = 1 << 20


def _empty(events: int) -> None:
    for _ in range(events):
        pass


def _guard(events: int) -> None:
    subs = Subscriptions()
    pending = PendingEvents()
    for index in range(events):
        if subs.active:
            pending.record(COMPLETED, index, "q", "id", "task", (1, RESULT))


def _record_publish_none(events: int) -> None:
    subs = Subscriptions()
    pending = PendingEvents()
    for start in range(0, events, BATCH):
        for index in range(start, min(start + BATCH, events)):
            pending.record(COMPLETED, index, "q", "id", "task", (1, RESULT))
        pending.begin_batch()
        subs.publish(pending.commit_succeeded())


def _with_subscribers(count: int, queue: str) -> Callable[[int], None]:
    def run(events: int) -> None:
        subs = Subscriptions(SubscriptionLimits(max_events=2 * BATCH))
        pending = PendingEvents()
        for conn in range(count):
            subs.subscribe(conn, [queue], SUBSCRIBABLE, 1)
        everyone = subs.of_connection
        for start in range(0, events, BATCH):
            for index in range(start, min(start + BATCH, events)):
                if subs.active:
                    pending.record(COMPLETED, index, "q", str(index), "task", (1, RESULT))
            pending.begin_batch()
            for sub in subs.publish(pending.commit_succeeded()):
                del sub  # the I/O layer would schedule a send; the loop below sends them all
            for conn in range(count):
                for sub in everyone(conn):
                    while sub.buffer:
                        events_message(sub.id, subs.take(sub, FRAME))
    return run


SCENARIOS: Final[tuple[tuple[str, Callable[[int], None]], ...]] = (
    ("empty loop", _empty),
    ("guard, 0 subscribers", _guard),
    ("record+publish, 0 subscribers", _record_publish_none),
    ("1 subscriber, other queue", _with_subscribers(1, "other")),
    ("1 subscriber, all events", _with_subscribers(1, "q")),
    ("10 subscribers, all events", _with_subscribers(10, "q")),
)


def measure(run: Callable[[int], None], events: int, rounds: int) -> float:
    """Best nanoseconds per event over ``rounds`` runs."""
    best = float("inf")
    for _ in range(rounds):
        started = time.perf_counter_ns()
        run(events)
        best = min(best, (time.perf_counter_ns() - started) / events)
    return best


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.bench_events",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args(argv)
    results = {name: round(measure(run, args.events, args.rounds), 1) for name, run in SCENARIOS}
    width = max(len(name) for name in results)
    for name, nanos in results.items():
        sys.stdout.write(f"{name:<{width}}  {nanos:>9.1f} ns/event\n")
    if args.json is not None:
        args.json.write_text(json.dumps({"events": args.events, "ns_per_event": results},
                                        indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
