"""The broker's enqueue path without I/O, for instruction counts: real ``enqueue`` frames of
plain jobs (no id, no option; 100-byte payloads) decoded as a session decodes them, handled by
the op's handler, and the reply frame encoded as the outbox encodes it. No timing: run it under
``valgrind --tool=cachegrind --cache-sim=no`` and compare instructions, which do not move with
the load of a shared machine.

Usage: ``python -m bench.bench_enqueuepath JOBS MODE [BATCH]`` (``BATCH`` 1,000 by default).
Each MODE does what the one before it does, and one more part:

- ``setup``: build the core and the request frames (the client's work: not the broker's);
- ``decode``: feed each frame to a ``FrameDecoder`` in 64 KiB reads and take the message
  (msgpack unpack);
- ``parse``: check the envelope and parse the request (``parse_request_body``: ``parse_jobs``);
- ``core``: run the ``enqueue`` handler through ``ops.handle`` (``Core.enqueue`` and the reply
  body), then take the changes and ready queues as the server does after each commit;
- ``reply``: encode the reply frame (``FrameEncoder.frame`` of the reply message, as
  ``Outbox.promise`` does).

Instructions per job of a part = (count of its mode - count of the mode before) / JOBS::

    for m in setup decode parse core reply; do valgrind --tool=cachegrind --cache-sim=no \\
        --cachegrind-out-file=/dev/null python -m bench.bench_enqueuepath 50000 $m 2>&1 \\
        | grep refs
    done
"""

from __future__ import annotations

import gc
import os
import random
import sys
from typing import Any

from broker.core import Core, CoreConfig
from broker.ops import handle
from protocol.codec import DEFAULT_MAX_FRAME, FrameDecoder, FrameEncoder
from protocol.messages import parse_request_body, reply_message, request_id_of, request_message
from protocol.model import JobSpec
from protocol.operations import Enqueue

MODES = ("setup", "decode", "parse", "core", "reply")
READ = 64 << 10  # bytes per data_received


class _Broker:
    """The part of ``OpContext`` the ``enqueue`` handler uses."""

    def __init__(self, core: Core) -> None:
        self.core = core
        self.draining = False


class _Conn:
    """The part of a session the ``enqueue`` handler's answer uses (``reply_after_commit``)."""

    def __init__(self, encode: bool) -> None:
        self.frame = FrameEncoder().frame if encode else None
        self.body: Any = None

    def reply_after_commit(self, request_id: int, body: dict[str, Any]) -> None:
        self.body = body
        if self.frame is not None:
            self.frame(reply_message(request_id, body))


def main(argv: list[str]) -> int:
    total, mode = int(argv[0]), argv[1]
    batch = int(argv[2]) if len(argv) > 2 else 1000
    level = MODES.index(mode)
    core = Core(CoreConfig(), rng=random.Random(0), token_base=1 << 40)
    encoder = FrameEncoder()
    frames = []
    for request_id in range(total // batch):
        jobs = tuple(JobSpec(None, "bench", bytes(100)) for _ in range(batch))
        frames.append(encoder.frame(request_message(request_id, Enqueue("q", jobs))))
    reads = [[frame[i:i + READ] for i in range(0, len(frame), READ)] for frame in frames]
    del frames
    broker = _Broker(core)
    conn = _Conn(encode=level >= MODES.index("reply"))
    decoder = FrameDecoder(DEFAULT_MAX_FRAME)
    now = 1_700_000_000_000
    gc.collect()
    gc.disable()
    if level == 0:
        return 0
    for chunks in reads:
        now += 1
        for chunk in chunks:
            decoder.feed(chunk)
        message = decoder.next_message()
        if level < 2:
            continue
        assert message is not None
        rid = request_id_of(message)
        assert rid is not None
        op, request = parse_request_body(message)
        if level < 3:
            continue
        handle(broker, conn, rid, op, request, now)  # type: ignore[arg-type]
        core.take_changes()
        core.take_ready()
    if level >= 3:
        assert len(conn.body["ids"]) == batch, conn.body
    return 0


if __name__ == "__main__":
    code = main(sys.argv[1:])
    os._exit(code)  # no teardown: freeing the core's jobs at exit is no part of the path
