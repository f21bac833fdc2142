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
  of up to 1 MiB (``events_frame``), as the I/O layer will.
* ``10 subscribers, all events``: the same with ten subscriptions sharing each encoded event.

``--end-to-end`` measures the whole broker instead: with no subscriber, then one subscriber
process on every event that only counts the bytes it reads (the broker's own cost), then one
that decodes and counts every event, a fresh ``jobwire serve`` is filled with ``--jobs`` jobs in
bulk and drained by one worker process, as the suite's ``drain`` step does; the table gives
enqueue and drain jobs/s (median of ``--rounds``) and what the subscriber got.

Usage::

    .venv/bin/python -m bench.bench_events [--events 200000] [--rounds 3] [--json PATH]
    .venv/bin/python -m bench.bench_events --end-to-end [--jobs 50000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final

from bench.broker_proc import BrokerProcess
from bench.scenarios import Params, Target, drain
from broker.events import PendingEvents
from broker.subscriptions import SubscriptionLimits, Subscriptions
from protocol.codec import FrameDecoder, encode_frames
from protocol.observing import SUBSCRIBABLE, EventKind, events_frame

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
                        events_frame(sub.id, subs.take(sub, FRAME))
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


async def _count_events(address: str, decode: bool) -> dict[str, int]:
    """Subscribe to every event at ``address`` and count them until SIGTERM (without
    ``decode``, count only the bytes: the broker's cost without the subscriber's)."""
    host, _, port = address.rpartition(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, writer.close)
    writer.write(encode_frames([[0, 1, "hello", {"version": 1, "client": "bench-subscriber"}],
                                [0, 2, "subscribe", {}]]))
    decoder = FrameDecoder(1 << 30)
    counts = {"events": 0, "lagged": 0, "dropped": 0, "bytes": 0}
    ready = False
    while data := await reader.read(1 << 20):
        counts["bytes"] += len(data)
        if ready and not decode:
            continue
        decoder.feed(data)
        for message in decoder.messages():
            if message[0] == 1 and message[1] == 2 and not ready:
                ready = True
                sys.stdout.write("ready\n")
                sys.stdout.flush()
            elif message[0] == 3 and message[1] == "events":
                for event in message[2]["events"]:
                    if event["kind"] == "lagged":
                        counts["lagged"] += 1
                        counts["dropped"] += event["dropped"]
                    else:
                        counts["events"] += 1
    return counts


def _end_to_end_run(jobs: int, sync: str, subscribed: bool, decode: bool) -> dict[str, Any]:
    broker = BrokerProcess(sync=sync)
    broker.start()
    subscriber: subprocess.Popen[bytes] | None = None
    try:
        if subscribed:
            subscriber = subprocess.Popen(
                [sys.executable, "-m", "bench.bench_events", "--subscriber", broker.address,
                 *(() if decode else ("--no-decode",))],
                stdout=subprocess.PIPE,
            )
            assert subscriber.stdout is not None
            if subscriber.stdout.readline().strip() != b"ready":
                raise RuntimeError("the subscriber process did not subscribe")
        params = Params(jobs=jobs, sync=sync, connect=broker.address, broker_pid=broker.pid,
                        quiet=True)
        with Target(params) as target:
            result = drain(params, target)
        counts: dict[str, int] = {}
        if subscriber is not None:
            subscriber.send_signal(signal.SIGTERM)
            out, _ = subscriber.communicate(timeout=60)
            counts = json.loads(out.decode().splitlines()[-1])
    finally:
        if subscriber is not None and subscriber.poll() is None:
            subscriber.kill()
            subscriber.wait()
        broker.close()
    return {
        "enqueue_jobs_per_s": round(jobs / result["fill_s"], 1),
        "drain_jobs_per_s": result["jobs_per_s"],
        **counts,
    }


def end_to_end(jobs: int, sync: str, rounds: int) -> dict[str, Any]:
    """Median enqueue and drain jobs/s over ``rounds`` runs: no subscriber, one subscriber on
    every event that only counts bytes (the broker's cost), and one that decodes every event
    (on a small machine its own CPU competes with the broker's)."""
    out: dict[str, Any] = {}
    variants = (("no subscriber", False, False), ("1 subscriber, bytes only", True, False),
                ("1 subscriber, decoding", True, True))
    for label, subscribed, decode in variants:
        runs = [_end_to_end_run(jobs, sync, subscribed, decode) for _ in range(rounds)]
        out[label] = {
            "enqueue_jobs_per_s": statistics.median(r["enqueue_jobs_per_s"] for r in runs),
            "drain_jobs_per_s": statistics.median(r["drain_jobs_per_s"] for r in runs),
            "runs": runs,
        }
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.bench_events",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--end-to-end", action="store_true",
                        help="enqueue and drain through a broker process, 0 vs 1 subscriber")
    parser.add_argument("--jobs", type=int, default=50_000, help="with --end-to-end")
    parser.add_argument("--sync", default="full", choices=("full", "normal", "off"),
                        help="with --end-to-end: the broker's sync mode")
    parser.add_argument("--subscriber", metavar="HOST:PORT", help=argparse.SUPPRESS)
    parser.add_argument("--no-decode", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.subscriber:  # the subscriber process of --end-to-end
        counts = asyncio.run(_count_events(args.subscriber, not args.no_decode))
        sys.stdout.write(json.dumps(counts) + "\n")
        return 0
    if args.end_to_end:
        report: dict[str, Any] = end_to_end(args.jobs, args.sync, args.rounds)
        for label, row in report.items():
            got = row["runs"][-1]
            seen = f"  {got['bytes'] / 2**20:.1f} MiB" if "bytes" in got else ""
            if got.get("events"):
                seen += f", events {got['events']:,}, lagged {got['dropped']:,}"
            sys.stdout.write(f"{label:<25} enqueue {row['enqueue_jobs_per_s']:>9,.0f} jobs/s"
                             f"  drain {row['drain_jobs_per_s']:>9,.0f} jobs/s{seen}\n")
    else:
        results = {name: round(measure(run, args.events, args.rounds), 1)
                   for name, run in SCENARIOS}
        width = max(len(name) for name in results)
        for name, nanos in results.items():
            sys.stdout.write(f"{name:<{width}}  {nanos:>9.1f} ns/event\n")
        report = {"events": args.events, "ns_per_event": results}
    if args.json is not None:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
