"""The Python client's enqueue path without I/O, for instruction counts: what ``Queue.add_bulk``
(and ``Queue.add``) spend per job on the producer's side, the part of a one-batch-in-flight
bench that runs serially with the broker.

Each batch goes through the code the client runs: ``QueueOperations.add_bulk_call`` (specs,
splitting), each request framed as ``Connection._enqueue`` frames it (``request_message`` and a
``FrameEncoder``), the broker's reply frame (``{ids, duplicates}``, ids as the broker makes them)
decoded as ``Wire.data_received`` decodes it, and the ``Job`` handles built by the call's
parser. No event loop, no socket.

Usage: ``python -m bench.bench_clientpath JOBS MODE``, MODE ``setup`` (items and reply frames
only), ``build`` (and ``add_bulk_call``), ``encode`` (and frame its requests), ``reply`` (and
decode the reply, build the jobs: the whole path), or ``add`` (``Queue.add``'s path, one job at
a time: request, frame, reply, job). Instructions per job of a part = (count of the mode with
it - count of the mode before; ``add`` minus ``setup``) / JOBS::

    for m in setup build encode reply add; do valgrind --tool=cachegrind --cache-sim=no \\
        --cachegrind-out-file=/dev/null python -m bench.bench_clientpath 50000 $m 2>&1 \\
        | grep refs
    done

Instructions do not move with the load of a shared machine; the µs/job printed on stderr (CPU
time of the measured loop, without setup) does, and is slower by ~50x under valgrind.
"""

from __future__ import annotations

import gc
import sys
import time
from typing import Any

from client.endpoint import ServerInfo
from client.job import Job
from client.operations import QueueOperations
from client.serializers import RAW
from client.wire import CLIENT_MAX_FRAME
from protocol.codec import FrameDecoder, FrameEncoder
from protocol.messages import reply_message, request_message

BATCH = 1000
PAYLOAD = bytes(100)
MODES = ("setup", "build", "encode", "reply", "add")
SERVER = ServerInfo(1, "bench", 0, 8 << 20, 1 << 20, 10_000, 10_000)
"""The broker's defaults, as its ``hello`` gives them."""


def reply_frames(total: int, size: int) -> list[bytes]:
    """The broker's enqueue reply frames for ``total`` jobs in requests of ``size``."""
    encoder = FrameEncoder()
    frames, seq = [], 1
    for request_id in range(1, total // size + 1):
        ids = tuple(str(seq + i) for i in range(size))
        seq += size
        frames.append(encoder.frame(reply_message(request_id, {"ids": ids, "duplicates": ()})))
    return frames


def bulk(ops: QueueOperations[Job], frames: list[bytes], mode: str) -> int:
    """``add_bulk``'s path for one batch per reply frame; returns the jobs made."""
    encoder, decoder = FrameEncoder(), FrameDecoder(CLIENT_MAX_FRAME, strict=False)
    made = 0
    for request_id, frame in enumerate(frames, 1):
        call = ops.add_bulk_call([("bench", PAYLOAD)] * BATCH, SERVER)
        if mode == "build":
            continue
        for request in call.requests:
            encoder.frame(request_message(request_id, request))
        if mode == "encode":
            continue
        decoder.feed(frame)
        message: Any = decoder.next_message()
        made += len(call.parse([message[2]]))
    return made


def single(ops: QueueOperations[Job], frames: list[bytes]) -> int:
    """``add``'s path (without a batcher), one job per reply frame; returns the jobs made."""
    encoder, decoder = FrameEncoder(), FrameDecoder(CLIENT_MAX_FRAME, strict=False)
    for request_id, frame in enumerate(frames, 1):
        request = ops.add_request("bench", PAYLOAD, {})
        encoder.frame(request_message(request_id, request))
        decoder.feed(frame)
        message: Any = decoder.next_message()
        ops.added(request, PAYLOAD, message[2])
    return len(frames)


def main(argv: list[str]) -> int:
    total, mode = int(argv[0]), argv[1]
    if mode not in MODES:
        print(f"MODE is one of {', '.join(MODES)}", file=sys.stderr)
        return 2
    ops: QueueOperations[Job] = QueueOperations(Job, None, "q", RAW, {})
    frames = reply_frames(total, BATCH)  # both sets in every mode: the same setup to subtract
    singles = reply_frames(total, 1)
    gc.collect()
    gc.freeze()  # the collector stays on, as in a producer, but skips what setup made
    if mode == "setup":
        return 0
    started = time.process_time()
    made = single(ops, singles) if mode == "add" else bulk(ops, frames, mode)
    spent = time.process_time() - started
    print(f"{mode}: {total} jobs ({made} handles), {spent / total * 1e6:.3f} µs/job",
          file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
