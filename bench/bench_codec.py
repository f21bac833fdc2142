"""Codec benchmark: encode + decode + validation throughput of the wire protocol, no sockets.

Each scenario does, per iteration, what the two ends of a connection do with one message (or a
request and its reply): build it from typed values, ``encode_frame``, feed the bytes to a
long-lived ``FrameDecoder`` (as a session does), take the message and validate it with
``parse_request`` (broker side) or ``parse_server_message`` plus the body parser (client side).
Each scenario runs for ``--seconds`` per round; the best of ``--rounds`` rounds is reported.

Scenarios:

* ``enqueue``: a request of 100 jobs with 100-byte payloads (target >= 500,000 jobs/s).
* ``reserve reply``: a reply handing out 100 jobs with 100-byte payloads (jobs/s).
* ``ack``: a request acking 100 jobs, and its reply of 100 outcomes (acks/s).
* ``small request``: one ``get`` request per feed (requests/s).
* ``small round trip``: a ``ping`` request and its ``{now}`` reply (round trips/s).
* ``pipelined small``: 100 ``get`` requests arriving in one read (requests/s).

Usage::

    .venv/bin/python -m bench.bench_codec [--seconds 1.0] [--rounds 3] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Final

import msgpack

from protocol.codec import FrameDecoder, encode_frame, encode_frames
from protocol.messages import parse_request, parse_server_message, reply_message, request_message
from protocol.model import AckItem, JobSpec
from protocol.operations import Ack, Enqueue, Get, Ping
from protocol.replies import Outcome, ReservedJob, parse_outcomes, parse_reserved

BATCH: Final = 100
PAYLOAD_BYTES: Final = 100
ENQUEUE_TARGET: Final = 500_000
"""jobs/s that the enqueue scenario must reach (issue 2)."""
NOW: Final = 1_767_225_600_000


@dataclass(frozen=True)
class Result:
    name: str
    unit: str
    per_second: float
    us_per_message: float
    frame_bytes: int


@dataclass(frozen=True)
class Scenario:
    name: str
    unit: str
    units_per_iteration: int
    frame_bytes: int
    iteration: Callable[[int], None]
    """Runs one iteration; the argument is a request id to use."""


def _payloads(rng: random.Random) -> list[bytes]:
    return [rng.randbytes(PAYLOAD_BYTES) for _ in range(BATCH)]


def enqueue_scenario(rng: random.Random) -> Scenario:
    request = Enqueue("emails", tuple(JobSpec(None, "send", p) for p in _payloads(rng)))
    decoder = FrameDecoder()

    def iteration(request_id: int) -> None:
        decoder.feed(encode_frame(request_message(request_id, request)))
        message = decoder.next_message()
        _, _, parsed = parse_request(message)
        assert len(parsed.jobs) == BATCH  # type: ignore[attr-defined]

    size = len(encode_frame(request_message(1, request)))
    return Scenario("enqueue 100 x 100 B", "jobs", BATCH, size, iteration)


def reserve_reply_scenario(rng: random.Random) -> Scenario:
    jobs = [
        ReservedJob(str(1_000_000 + i), "emails", "send", p, 1, 3, (1 << 61) + i, 30_000,
                    NOW + 30_000, NOW, None)
        for i, p in enumerate(_payloads(rng))
    ]
    decoder = FrameDecoder()

    def iteration(request_id: int) -> None:
        decoder.feed(encode_frames([reply_message(request_id, {"jobs": jobs})]))
        reply = parse_server_message(decoder.next_message())
        assert len(parse_reserved(reply.body)) == BATCH  # type: ignore[union-attr]

    size = len(encode_frame(reply_message(1, {"jobs": jobs})))
    return Scenario("reserve reply 100 x 100 B", "jobs", BATCH, size, iteration)


def ack_scenario(rng: random.Random) -> Scenario:
    request = Ack(tuple(AckItem(str(1_000_000 + i), (1 << 61) + i) for i in range(BATCH)))
    results = [Outcome("OK", "completed")] * BATCH
    broker_side, client_side = FrameDecoder(), FrameDecoder()

    def iteration(request_id: int) -> None:
        broker_side.feed(encode_frame(request_message(request_id, request)))
        got_id, _, parsed = parse_request(broker_side.next_message())
        assert len(parsed.items) == BATCH  # type: ignore[attr-defined]
        client_side.feed(encode_frames([reply_message(got_id, {"results": results})]))
        reply = parse_server_message(client_side.next_message())
        assert len(parse_outcomes(reply.body)) == BATCH  # type: ignore[union-attr]

    size = len(encode_frame(request_message(1, request)))
    return Scenario("ack 100 + reply", "acks", BATCH, size, iteration)


def small_request_scenario(rng: random.Random) -> Scenario:
    request = Get("1234567")
    decoder = FrameDecoder()

    def iteration(request_id: int) -> None:
        decoder.feed(encode_frame(request_message(request_id, request)))
        parse_request(decoder.next_message())

    size = len(encode_frame(request_message(1, request)))
    return Scenario("small request (get)", "requests", 1, size, iteration)


def small_round_trip_scenario(rng: random.Random) -> Scenario:
    broker_side, client_side = FrameDecoder(), FrameDecoder()
    ping = Ping()

    def iteration(request_id: int) -> None:
        broker_side.feed(encode_frame(request_message(request_id, ping)))
        got_id, _, _ = parse_request(broker_side.next_message())
        client_side.feed(encode_frames([reply_message(got_id, {"now": NOW})]))
        parse_server_message(client_side.next_message())

    size = len(encode_frame(request_message(1, ping)))
    return Scenario("small round trip (ping)", "round trips", 1, size, iteration)


def pipelined_scenario(rng: random.Random) -> Scenario:
    requests = [Get(str(1_000_000 + i)) for i in range(BATCH)]
    decoder = FrameDecoder()

    def iteration(request_id: int) -> None:
        decoder.feed(encode_frames(
            [request_message(request_id + i, r) for i, r in enumerate(requests)]
        ))
        while (message := decoder.next_message()) is not None:
            parse_request(message)

    size = len(encode_frame(request_message(1, requests[0])))
    return Scenario("pipelined small x100", "requests", BATCH, size, iteration)


SCENARIOS: Final = (
    enqueue_scenario, reserve_reply_scenario, ack_scenario, small_request_scenario,
    small_round_trip_scenario, pipelined_scenario,
)


def measure(scenario: Scenario, seconds: float, rounds: int) -> Result:
    """Best-of-``rounds`` throughput of one scenario, each round lasting about ``seconds``."""
    iteration = scenario.iteration
    for request_id in range(50):  # warm up
        iteration(request_id)
    best = 0.0
    request_id = 0
    for _ in range(rounds):
        count = 0
        start = time.perf_counter()
        deadline = start + seconds
        while True:
            for _ in range(20):
                iteration(request_id)
                request_id = (request_id + BATCH) & 0xFFFF_FFFF
            count += 20
            now = time.perf_counter()
            if now >= deadline:
                break
        best = max(best, count / (now - start))
    return Result(
        scenario.name, scenario.unit, best * scenario.units_per_iteration, 1e6 / best,
        scenario.frame_bytes,
    )


def run(seconds: float, rounds: int, seed: int = 1) -> list[Result]:
    """Run every scenario."""
    return [measure(make(random.Random(seed)), seconds, rounds) for make in SCENARIOS]


def table(results: list[Result]) -> str:
    lines = [
        f"{'scenario':<28} {'throughput':>16} {'unit':<12} {'us/iteration':>12} {'frame B':>8}",
        "-" * 80,
    ]
    for r in results:
        lines.append(
            f"{r.name:<28} {r.per_second:>16,.0f} {r.unit + '/s':<12} {r.us_per_message:>12.2f} "
            f"{r.frame_bytes:>8,}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.bench_codec",
        description="Protocol codec throughput (encode + decode + validation), no sockets.",
    )
    parser.add_argument("--seconds", type=float, default=1.0, help="length of a round (1.0)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds per scenario; best wins (3)")
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write the results here")
    args = parser.parse_args(argv)
    results = run(args.seconds, args.rounds)
    print(table(results))
    enqueue = results[0].per_second
    verdict = "ok" if enqueue >= ENQUEUE_TARGET else "BELOW TARGET"
    print(f"\nenqueue target >= {ENQUEUE_TARGET:,} jobs/s: {enqueue:,.0f} ({verdict})")
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({
            "benchmark": "codec",
            "python": platform.python_version(),
            "msgpack": ".".join(map(str, msgpack.version)),
            "machine": platform.machine(),
            "seconds": args.seconds,
            "rounds": args.rounds,
            "enqueue_target_jobs_per_s": ENQUEUE_TARGET,
            "results": [asdict(r) for r in results],
        }, indent=2) + "\n", encoding="utf-8")
    return 0 if enqueue >= ENQUEUE_TARGET else 1


if __name__ == "__main__":
    sys.exit(main())
