"""The drain path without I/O, for instruction counts: reserve and ack in 50-job requests, and
the journal rows each commit would write (``RowEncoder.job_row``). No timing: run it under
``valgrind --tool=cachegrind --cache-sim=no`` and compare instructions, which do not move with
the load of a shared machine (wall-clock and CPU time do, by ±30% here).

Usage: ``python -m bench.bench_drainpath JOBS MODE``, MODE ``setup`` (fill the queue only),
``core`` (and drain it through the core), ``rows`` (and build the rows too) or ``wire`` (drain it
as a session does instead: the ``reserve`` and ``ack`` request frames decoded and parsed, their
handlers run through ``ops.handle``, and their reply frames encoded). Instructions per job of a
part = (count of the mode with it - count of the mode before) / JOBS (``wire`` less ``core``:
the wire's own part)::

    for m in setup core rows wire; do valgrind --tool=cachegrind --cache-sim=no \\
        --cachegrind-out-file=/dev/null python -m bench.bench_drainpath 20000 $m 2>&1 | grep refs
    done
"""

from __future__ import annotations

import gc
import os
import random
import sys
from typing import Any

from broker.core import Core, CoreConfig
from broker.ops import OpContext, handle
from broker.records import RowEncoder
from protocol.codec import DEFAULT_MAX_FRAME, FrameDecoder, FrameEncoder
from protocol.messages import parse_request_body, reply_message, request_id_of, request_message
from protocol.model import AckItem, JobSpec
from protocol.operations import Ack, Reserve

BATCH = 50
TOKEN_BASE = 1 << 40


class _Committer:
    """What the handlers use of the group committer."""

    generation = 0

    def wake(self) -> None:
        pass


class _Conn:
    """What the handlers use of a session: replies are encoded as its outbox encodes them."""

    conn_id = 1
    worker = None
    unsent_bytes = 0

    def __init__(self) -> None:
        self.frame = FrameEncoder().frame
        self.body: Any = None

    def reply(self, request_id: int, body: dict[str, Any]) -> None:
        self.body = body
        self.frame(reply_message(request_id, body))

    reply_after_commit = reply


def client_frames(total: int) -> list[bytes]:
    """The worker's requests: a reserve of ``BATCH`` jobs, then the ack of those jobs (whose
    ids and tokens are known beforehand: the core hands out ids and tokens in order)."""
    encoder = FrameEncoder()
    frames = []
    for index in range(total // BATCH):
        first = index * BATCH
        frames.append(encoder.frame(request_message(2 * index, Reserve(("q",), BATCH))))
        frames.append(encoder.frame(request_message(2 * index + 1, Ack(tuple(
            AckItem(str(first + i + 1), TOKEN_BASE + 1 + first + i) for i in range(BATCH)
        )))))
    return frames


def wire(core: Core, frames: list[bytes], now: int) -> None:
    """Drain the queue as a session does: request frames in, handlers, reply frames out."""
    broker = OpContext(
        core, _Committer(), max_frame=DEFAULT_MAX_FRAME, output_budget=1 << 20,  # type: ignore[arg-type]
        max_parked=1, max_parked_per_connection=1, clock=lambda: now,
        broker_stats=lambda now: {}, observe=None, connections=lambda: 1,  # type: ignore[arg-type]
    )
    conn = _Conn()
    decoder = FrameDecoder(DEFAULT_MAX_FRAME)
    for frame in frames:
        decoder.feed(frame)
        message = decoder.next_message()
        assert message is not None
        request_id = request_id_of(message)
        assert request_id is not None
        op, request = parse_request_body(message)
        if op == "reserve":
            now += 1
        handle(broker, conn, request_id, op, request, now)  # type: ignore[arg-type]
        if op == "ack":
            assert len(conn.body["results"]) == BATCH and all(
                outcome.ok for outcome in conn.body["results"]), conn.body
        core.take_changes()
        core.take_finished()
        core.take_ready()


def main(argv: list[str]) -> int:
    total, mode = int(argv[0]), argv[1]
    core = Core(CoreConfig(), rng=random.Random(0), token_base=TOKEN_BASE)
    encoder = RowEncoder()
    now = 1_700_000_000_000
    core.enqueue("q", [JobSpec(None, "bench", bytes(100)) for _ in range(total)], now)
    core.take_changes()
    core.take_ready()
    frames = client_frames(total)  # made in every mode: the client's work is no part
    gc.collect()
    gc.disable()
    if mode == "setup":
        return 0
    if mode == "wire":
        wire(core, frames, now)
        return 0
    rows = mode == "rows"
    for _ in range(total // BATCH):
        now += 1
        reserved = core.reserve(("q",), BATCH, None, 1, now)
        changed = core.take_changes().jobs.values()
        if rows:
            for job in changed:
                if job is not None:
                    encoder.job_row(job)
        core.ack([AckItem(job.job_id, job.token, None) for job in reserved], now)
        changed = core.take_changes().jobs.values()
        if rows:
            for job in changed:
                if job is not None:
                    encoder.job_row(job)
        core.take_finished()
        core.take_ready()
    return 0


if __name__ == "__main__":
    code = main(sys.argv[1:])
    os._exit(code)  # no teardown: freeing what is left at exit is no part of the path
