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

Usage: ``python -m bench.bench_workerpath JOBS MODE``, MODE ``setup`` (reply items, imports, an
empty loop), ``reserve`` (reserve requests sent as ``Reserver._issue`` sends them, their reply
frames of 50 jobs through ``Wire.data_received`` to the reserve's callback, the jobs dropped),
``hold`` (and held and queued by ``Worker._deliver``, then forgotten), ``full`` (the whole path
above) or ``callback`` (and an empty ``on_completed``, as the drain bench registers one);
``parse`` is apart: the reply frames decoded and ``parse_reserved``, no loop. Instructions per job
of a part = (count of the mode with it - count of the mode before; ``reserve`` and ``parse``
minus ``setup``, ``full`` minus ``hold``: running, acks and their replies) / JOBS::

    for m in setup reserve hold full callback; do PYTHONHASHSEED=0 valgrind --tool=cachegrind \\
        --cache-sim=no --cachegrind-out-file=/dev/null python -m bench.bench_workerpath 20000 $m \\
        2>&1 | grep refs
    done

The µs/job printed on stderr is CPU time of the measured part (slower by ~50x under valgrind).
"""

from __future__ import annotations

import asyncio
import gc
import struct
import sys
import time
from collections.abc import Callable, Coroutine
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
MODES = ("setup", "parse", "reserve", "hold", "full", "callback")
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
    packed_id: bytes = msgpack.packb(request_id)
    message = b"\x93\x01" + packed_id + body
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


def _connected_worker(broker: FakeBroker, callback: bool) -> Worker:
    """A ``Worker`` whose connection is up over a ``Wire`` with a fake transport."""
    worker = Worker("jobwire://127.0.0.1:1", "bench", _handler, concurrency=CONCURRENCY,
                    serializer="raw", handle_signals=False, poll_wait=1.0)
    if callback:
        worker.on_completed(lambda ctx, result: None)
    loop = asyncio.get_running_loop()
    conn = worker.connection
    wire = Wire(conn)
    wire.connection_made(FakeTransport(broker))  # type: ignore[arg-type]
    broker.wire = wire
    conn._wire, conn._loop, conn.server = wire, loop, SERVER
    conn._ready.set()
    worker._loop = loop
    return worker


async def run_worker(items: list[bytes], callback: bool) -> int:
    """The real worker over a fake broker until every job is acked; returns jobs acked."""
    broker = FakeBroker(items)
    broker.done = asyncio.get_running_loop().create_future()
    worker = _connected_worker(broker, callback)
    runners = [asyncio.ensure_future(worker._runner()) for _ in range(CONCURRENCY)]
    tasks = [*runners, asyncio.ensure_future(worker._leases.run()),
             asyncio.ensure_future(worker._reserver.run())]
    await broker.done
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    return worker.statistics().completed


async def reserve_only(items: list[bytes], hold: bool) -> int:
    """Reserve requests sent and their replies taken in as the worker does (``Reserver._issue``,
    the reply frame through ``Wire.data_received`` to the reserve's callback), without running
    anything: the jobs are dropped (``hold`` false) or held and queued by ``Worker._deliver``,
    then forgotten; returns the jobs taken in."""
    broker = FakeBroker(items)
    broker.write = lambda data: None  # type: ignore[method-assign]  # replies fed below
    worker = _connected_worker(broker, False)
    reserver, wire = worker._reserver, broker.wire
    assert wire is not None
    taken = 0

    def deliver(jobs: Any) -> None:
        nonlocal taken
        taken += len(jobs)
        if hold:
            worker._deliver(jobs)
            worker._held.clear()
            worker._ready.clear()
            worker._leases.forget_all()

    reserver._deliver = deliver
    request_id = 0
    for start in range(0, len(items), CONCURRENCY):
        chunk = items[start:start + CONCURRENCY]
        reserver._issue(len(chunk))
        request_id = max(worker.connection._table.pending)
        wire.data_received(reply_frame(request_id, b"\x81\xa4jobs" + _array_header(len(chunk))
                                       + b"".join(chunk)))
        await asyncio.sleep(0)  # the reply's future callback
    return taken


def parse_only(items: list[bytes]) -> int:
    """Decode reserve reply frames of 50 jobs as the wire does, and parse them."""
    decoder = FrameDecoder(CLIENT_MAX_FRAME, strict=False)
    parsed = 0
    for start in range(0, len(items), CONCURRENCY):
        chunk = items[start:start + CONCURRENCY]
        decoder.feed(reply_frame(start + 1, b"\x81\xa4jobs" + _array_header(len(chunk))
                                 + b"".join(chunk)))
        message: Any = decoder.next_message()
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
    run: Callable[[Coroutine[Any, Any, Any]], Any] = asyncio.run
    try:
        import uvloop
    except ImportError:
        pass
    else:
        run = uvloop.run
    if mode == "setup":  # the same imports and an empty loop: what the other modes subtract
        run(asyncio.sleep(0))
        return 0
    started = time.process_time()
    if mode == "parse":
        done = parse_only(items)
    elif mode in ("reserve", "hold"):
        done = run(reserve_only(items, mode == "hold"))
    else:
        done = run(run_worker(items, mode == "callback"))
    spent = time.process_time() - started
    print(f"{mode}: {total} jobs ({done} done), {spent / total * 1e6:.3f} µs/job", file=sys.stderr)
    return 0 if done == total else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
