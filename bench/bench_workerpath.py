"""The Python worker's per-job path without I/O, for instruction counts: what one worker process
spends per job of ``jobwire bench drain`` (one worker, concurrency 50, a trivial async handler).

``full`` runs the real ``Worker`` (its runners, ``Reserver``, ``LeaseKeeper`` and
``OutcomeBuffer`` tasks and callbacks, as ``Worker.run`` starts them) on an event loop (uvloop
when installed, as the bench's worker) over a real ``Connection`` and ``Wire`` whose transport
is a fake: the frames the worker writes go to a fake broker that answers each request in the next
loop iteration, with reply frames fed to ``Wire.data_received`` as a socket would: a ``reserve``
gets as many jobs as it asked for (50 at concurrency 50, ids and tokens as the broker makes
them, 100-byte payloads), an ``ack`` one ``["OK", "completed"]`` per item. So each job is
decoded (``parse_reserved``), held and delivered (``JobContext``, ``_deliver``, the lease
keeper's ``watch``), run by a runner (``HandlerTable``, the handler's coroutine), its outcome
buffered and sent in one batched ``ack`` request (framed by the connection, written by the
``Wire``), the ack reply decoded (``parse_outcomes``) and the job settled.

Left out: the socket and its system calls, the handshake and ``Worker.run``'s start and
shutdown (the harness starts the same tasks itself and cancels them once every job is acked),
lease extensions (no job lives long enough), the bench's own handler and ``on_completed`` work
(timestamps, histograms; mode ``callback`` adds an empty ``on_completed`` callback to count the
event machinery). The fake broker's own work (splitting frames, reading a request's id, op and
count from its bytes, joining ready-made reply bytes) is counted with the worker's: a few hundred
instructions per request, under 20 a job.

Usage: ``python -m bench.bench_workerpath JOBS MODE``, MODE ``setup`` (reply items only),
``parse`` (decode the reserve reply frames and ``parse_reserved``, no loop), ``full``,
``callback``. Instructions per job = (count of the mode - count of ``setup``) / JOBS::

    for m in setup parse full; do PYTHONHASHSEED=0 valgrind --tool=cachegrind --cache-sim=no \\
        --cachegrind-out-file=/dev/null python -m bench.bench_workerpath 20000 $m 2>&1 \\
        | grep refs
    done

The µs/job printed on stderr is CPU time of the measured part (slower by ~50x under valgrind).
"""

from __future__ import annotations

import asyncio
import gc
import struct
import sys
import time
from typing import Any

import msgpack

from client.context import JobContext
from client.endpoint import ServerInfo
from client.wire import CLIENT_MAX_FRAME, Wire
from client.worker import Worker
from protocol.codec import FrameDecoder
from protocol.replies import parse_reserved

CONCURRENCY = 50
PAYLOAD = bytes(100)
MODES = ("setup", "parse", "full", "callback")
SERVER = ServerInfo(1, "bench", 0, 8 << 20, 1 << 20, 10_000, 10_000)
_PREFIX = struct.Struct(">I")
_RESERVE = msgpack.packb("reserve")
_ACK = msgpack.packb("ack")
_OK = msgpack.packb(("OK", "completed"))


def _array_header(n: int) -> bytes:
    return bytes((0x90 | n,)) if n < 16 else b"\xdc" + n.to_bytes(2, "big")


def job_items(total: int) -> list[bytes]:
    """Each job of a reserve reply, packed as the broker packs it (12 items)."""
    now = 1_800_000_000_000
    return [
        msgpack.packb((f"{1000 + i}", "bench", "bench", PAYLOAD, 1, 3, 1_000 + i, 30_000,
                       now + 30_000, now, None, None))
        for i in range(total)
    ]


def reply_frame(request_id: int, body: bytes) -> bytes:
    """A REPLY frame ``[1, request_id, body]`` around an already packed body."""
    message = b"\x93\x01" + msgpack.packb(request_id) + body
    return _PREFIX.pack(len(message)) + message


def _request_head(frame: bytes) -> tuple[int, bytes]:
    """The request id and the packed op name of a request frame ``[0, id, op, args]``."""
    first = frame[6]
    if first < 0x80:
        request_id, at = first, 7
    elif first == 0xCC:
        request_id, at = frame[7], 8
    elif first == 0xCD:
        request_id, at = int.from_bytes(frame[7:9], "big"), 9
    else:
        request_id, at = int.from_bytes(frame[7:11], "big"), 11
    return request_id, frame[at:at + 1 + (frame[at] & 0x1F)]


def _int_after(frame: bytes, key: bytes) -> int:
    """The small int (a fixint or uint8) or array length that follows ``key`` in ``frame``."""
    at = frame.index(key) + len(key)
    head = frame[at]
    if head < 0x80:
        return head
    if head == 0xCC:
        return frame[at + 1]
    if 0x90 <= head <= 0x9F:
        return head & 0x0F
    assert head == 0xDC, head
    return int.from_bytes(frame[at + 1:at + 3], "big")


class FakeBroker:
    """Answers the worker's requests one loop iteration after they were written."""

    def __init__(self, items: list[bytes]) -> None:
        self.items = items
        self.next_job = 0
        self.acked = 0
        self.written: list[bytes] = []
        self.parked: list[int] = []
        self.wire: Wire | None = None
        self.done: asyncio.Future[None] | None = None
        self._scheduled = False

    def write(self, data: bytes) -> None:
        self.written.append(data)
        if not self._scheduled:
            self._scheduled = True
            asyncio.get_running_loop().call_soon(self.answer)

    def answer(self) -> None:
        self._scheduled = False
        data, self.written = b"".join(self.written), []
        replies = []
        at = 0
        while at < len(data):
            size = _PREFIX.unpack_from(data, at)[0] + 4
            frame = data[at:at + size]
            at += size
            request_id, op = _request_head(frame)
            if op == _RESERVE:
                count = min(_int_after(frame, b"\xa3max"), len(self.items) - self.next_job)
                if count == 0:
                    self.parked.append(request_id)
                    continue
                jobs = self.items[self.next_job:self.next_job + count]
                self.next_job += count
                body = b"\x81\xa4jobs" + _array_header(count) + b"".join(jobs)
            elif op == _ACK:
                count = _int_after(frame, b"\xa5items")
                self.acked += count
                body = b"\x81\xa7results" + _array_header(count) + _OK * count
            else:
                raise AssertionError(f"unexpected request {op!r}")
            replies.append(reply_frame(request_id, body))
        assert self.wire is not None
        for frame in replies:
            self.wire.data_received(frame)
        if self.acked == len(self.items) and self.done is not None and not self.done.done():
            self.done.set_result(None)


class FakeTransport:
    """What ``Wire`` needs of a transport; writes go to the fake broker."""

    def __init__(self, broker: FakeBroker) -> None:
        self.write = broker.write

    def is_closing(self) -> bool:
        return False

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return default

    def abort(self) -> None:
        pass


async def _handler(ctx: JobContext) -> None:
    return None


async def run_worker(items: list[bytes], callback: bool) -> int:
    """The real worker over a fake broker until every job is acked; returns jobs acked."""
    worker = Worker("jobwire://127.0.0.1:1", "bench", _handler, concurrency=CONCURRENCY,
                    serializer="raw", handle_signals=False, poll_wait=1.0)
    if callback:
        worker.on_completed(lambda ctx, result: None)
    loop = asyncio.get_running_loop()
    broker = FakeBroker(items)
    broker.done = loop.create_future()
    conn = worker.connection
    wire = Wire(conn)
    wire.connection_made(FakeTransport(broker))  # type: ignore[arg-type]
    broker.wire = wire
    conn._wire, conn._loop, conn.server = wire, loop, SERVER
    conn._ready.set()
    worker._loop = loop
    runners = [asyncio.ensure_future(worker._runner()) for _ in range(CONCURRENCY)]
    tasks = [*runners, asyncio.ensure_future(worker._leases.run()),
             asyncio.ensure_future(worker._reserver.run())]
    await broker.done
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    return worker.statistics().completed


def parse_only(items: list[bytes]) -> int:
    """Decode reserve reply frames of 50 jobs as the wire does, and parse them."""
    decoder = FrameDecoder(CLIENT_MAX_FRAME, strict=False)
    parsed = 0
    for start in range(0, len(items), CONCURRENCY):
        chunk = items[start:start + CONCURRENCY]
        decoder.feed(reply_frame(start + 1, b"\x81\xa4jobs" + _array_header(len(chunk))
                                 + b"".join(chunk)))
        message = decoder.next_message()
        parsed += len(parse_reserved(message[2]))
    return parsed


def main(argv: list[str]) -> int:
    total, mode = int(argv[0]), argv[1]
    if mode not in MODES:
        print(f"MODE is one of {', '.join(MODES)}", file=sys.stderr)
        return 2
    items = job_items(total)
    gc.collect()
    gc.freeze()
    try:
        from uvloop import run
    except ImportError:
        run = asyncio.run
    if mode == "setup":  # the same imports and an empty loop: what the other modes subtract
        run(asyncio.sleep(0))
        return 0
    started = time.process_time()
    done = parse_only(items) if mode == "parse" else run(run_worker(items, mode == "callback"))
    spent = time.process_time() - started
    print(f"{mode}: {total} jobs ({done} done), {spent / total * 1e6:.3f} µs/job", file=sys.stderr)
    return 0 if done == total else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
