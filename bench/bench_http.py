"""HTTP gateway: REST enqueue throughput, one job per POST and in batches; the SSE event rate.

Run: ``.venv/bin/python -m bench.bench_http [--jobs 20000] [--concurrency 32]
[--batch-concurrency 4] [--batches 1,100,1000] [--sse-jobs 100000] [--sse-streams 1,10]
[--sync full] [--json PATH]``. Starts its own
broker (``jobwire serve``) and gateway (``python -m client.gateway``, what ``jobwire http`` runs)
as two processes, then POSTs jobs of 100 bytes of JSON data on keep-alive connections (one driver
process, a minimal HTTP/1.1 client): ``--jobs`` jobs one per request with ``--concurrency``
requests in flight, then ``5 x --jobs`` jobs per batch size as ``{"jobs": [...N...]}`` with
``--batch-concurrency`` requests in flight. Each job is durable
(committed) before its response. The SSE steps open ``--sse-streams`` streams of
``/api/events?queue=sse-N&kind=added`` and enqueue ``--sse-jobs`` jobs over TCP (batches of
100, paced at each of ``--sse-rates`` jobs/s; 0: flat out in batches of 1,000), then count the
``added`` events each stream received (and what ``lagged`` events said were lost) and the time
from the first to the last. The driver, the gateway and the broker share
the machine's cores, so the figures are a floor for a gateway on its own host.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import psutil

from bench.broker_proc import BrokerProcess

DATA = {"to": "user@example.com", "template": "welcome", "pad": "x" * 44}  # ~100 bytes of JSON


def start_gateway(broker: BrokerProcess, port: int, log_path: Path) -> subprocess.Popen[bytes]:
    with log_path.open("ab") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "client.gateway", "--broker", f"jobwire://{broker.address}",
             "--listen", f"127.0.0.1:{port}"],
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
    deadline = time.monotonic() + 60
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"the gateway exited:\n{log_path.read_text()[-2000:]}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/api/queues", timeout=2).status_code == 200:
                return proc
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError("the gateway did not answer within 60 s")
        time.sleep(0.05)


class HttpLane:
    """One keep-alive HTTP/1.1 connection sending one request at a time.

    A few lines over asyncio streams instead of an HTTP client library: httpx spent more CPU per
    request than the gateway and the broker together, so it measured itself.
    """

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def open(cls, port: int) -> HttpLane:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        return cls(reader, writer)

    async def post(self, path: str, body: bytes) -> tuple[int, bytes]:
        self.writer.write(
            f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head[9:12])
        length = 0
        for line in head.split(b"\r\n"):
            if line[:15].lower() == b"content-length:":
                length = int(line[15:])
        return status, await self.reader.readexactly(length)

    def close(self) -> None:
        self.writer.close()


async def enqueue_step(port: int, queue: str, jobs: int, batch: int,
                       concurrency: int) -> dict[str, Any]:
    """POST ``jobs`` jobs in requests of ``batch``, ``concurrency`` at a time."""
    requests = [min(batch, jobs - start) for start in range(0, jobs, batch)]
    body_of = {
        size: json.dumps({"name": "send", "data": DATA} if batch == 1
                         else {"jobs": [{"name": "send", "data": DATA}] * size}).encode()
        for size in set(requests)
    }
    latencies: list[float] = []
    pending = iter(requests)
    path = f"/api/queues/{queue}/jobs"
    lanes = [await HttpLane.open(port) for _ in range(concurrency)]

    async def run(lane: HttpLane) -> None:
        for size in pending:
            sent = time.perf_counter()
            status, reply = await lane.post(path, body_of[size])
            latencies.append(time.perf_counter() - sent)
            if status != 201:
                raise RuntimeError(f"HTTP {status}: {reply[:200]!r}")

    try:
        started = time.perf_counter()
        await asyncio.gather(*(run(lane) for lane in lanes))
        seconds = time.perf_counter() - started
    finally:
        for lane in lanes:
            lane.close()
    latencies.sort()
    return {
        "step": f"http-enqueue-batch-{batch}", "jobs": jobs, "batch": batch,
        "requests": len(requests), "concurrency": concurrency, "seconds": round(seconds, 3),
        "jobs_per_s": round(jobs / seconds), "requests_per_s": round(len(requests) / seconds),
        "p50_ms": round(latencies[len(latencies) // 2] * 1000, 2),
        "p99_ms": round(latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))] * 1000, 2),
    }


class SseReader:
    """One raw ``/api/events`` stream: counts ``added`` events and what ``lagged`` ones drop."""

    def __init__(self) -> None:
        self.added = 0
        self.dropped = 0
        self.lagged = 0
        self.first: float | None = None
        self.last = 0.0

    async def run(self, port: int, queue: str, expected: int) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(f"GET /api/events?queue={queue}&kind=added HTTP/1.1\r\n"
                     "Host: 127.0.0.1\r\n\r\n".encode())
        await reader.readuntil(b"\r\n\r\n")
        buffer = b""
        try:
            while self.added + self.dropped < expected:
                chunk = await reader.read(1 << 16)
                if not chunk:
                    return
                buffer += chunk
                end = buffer.rfind(b"\n\n")
                if end < 0:
                    continue
                complete, buffer = buffer[:end + 2], buffer[end + 2:]
                now = time.perf_counter()
                added = complete.count(b"event: added\n")
                if added and self.first is None:
                    self.first = now
                self.added += added
                self.last = now
                for part in complete.split(b"event: lagged\ndata: ")[1:]:
                    body = json.loads(part.split(b"\n", 1)[0])
                    self.lagged += 1
                    self.dropped += body.get("dropped") or 0
        finally:
            writer.close()


async def sse_step(port: int, broker_url: str, jobs: int, streams: int,
                   rate: int) -> dict[str, Any]:
    """``streams`` SSE readers of one queue while ``jobs`` jobs are enqueued over TCP at
    ``rate`` jobs/s (batches of 100; 0: flat out, batches of 1,000)."""
    from client import Client

    queue = f"sse-{streams}-{rate}"
    readers = [SseReader() for _ in range(streams)]
    tasks = [asyncio.create_task(r.run(port, queue, jobs)) for r in readers]
    await asyncio.sleep(0.5)  # every stream subscribed (the hub subscribes on the first)
    async with Client(broker_url) as producer:
        target = producer.queue(queue)
        step = 100 if rate else 1000
        started = time.perf_counter()
        for start in range(0, jobs, step):
            await target.add_bulk([("send", DATA)] * min(step, jobs - start))
            if rate:
                ahead = started + (start + step) / rate - time.perf_counter()
                if ahead > 0:
                    await asyncio.sleep(ahead)
        enqueued = time.perf_counter() - started
    await asyncio.wait_for(asyncio.gather(*tasks), 600)
    spans = [r.last - (r.first or r.last) for r in readers]
    received = sum(r.added for r in readers)
    seconds = max(spans) if spans else 0.0
    return {
        "step": f"sse-{streams}-streams-{rate or 'max'}", "jobs": jobs, "streams": streams,
        "rate": rate,
        "enqueue_jobs_per_s": round(jobs / enqueued),
        "events_received": received, "events_dropped": sum(r.dropped for r in readers),
        "lagged_events": sum(r.lagged for r in readers),
        "seconds": round(seconds, 3),
        "events_per_s_per_stream": round(received / streams / seconds) if seconds else None,
        "events_per_s_total": round(received / seconds) if seconds else None,
    }


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used so far."""
    times = psutil.Process(pid).cpu_times()
    return float(times.user + times.system)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.bench_http", description=__doc__)
    parser.add_argument("--jobs", type=int, default=20_000, help="jobs per step")
    parser.add_argument("--concurrency", type=int, default=32,
                        help="requests in flight, one job each (default 32)")
    parser.add_argument("--batch-concurrency", type=int, default=4,
                        help="requests in flight in the batch steps (default 4)")
    parser.add_argument("--batches", default="1,100,1000", help="jobs per request, per step")
    parser.add_argument("--sse-jobs", type=int, default=100_000,
                        help="jobs enqueued per SSE step (0: no SSE steps)")
    parser.add_argument("--sse-streams", default="1,10", help="SSE streams open, per step")
    parser.add_argument("--sse-rates", default="2000,5000,10000,0",
                        help="producer jobs/s per SSE step (0: flat out)")
    parser.add_argument("--sync", default="full", choices=["full", "normal", "off"])
    parser.add_argument("--port", type=int, default=7481, help="the gateway's port")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()

    broker = BrokerProcess(sync=args.sync)
    broker.start()
    gateway = None
    results: list[dict[str, Any]] = []
    try:
        gateway = start_gateway(broker, args.port, broker.data_dir / "gateway.log")
        for batch in (int(b) for b in args.batches.split(",") if b):
            jobs = args.jobs if batch == 1 else args.jobs * 5
            in_flight = args.concurrency if batch == 1 else args.batch_concurrency
            before = {"gateway": cpu_seconds(gateway.pid), "broker": cpu_seconds(broker.pid)}
            result = asyncio.run(enqueue_step(args.port, f"http-{batch}", jobs, batch, in_flight))
            for name, pid in (("gateway", gateway.pid), ("broker", broker.pid)):
                used = cpu_seconds(pid) - before[name]
                result[f"{name}_cpu_us_per_job"] = round(used / jobs * 1e6, 1)
            results.append(result)
            print(f"{result['step']:<24} {result['jobs_per_s']:>8,} jobs/s  "
                  f"{result['requests_per_s']:>7,} req/s  p50 {result['p50_ms']} ms  "
                  f"p99 {result['p99_ms']} ms  CPU/job: gateway "
                  f"{result['gateway_cpu_us_per_job']} us, "
                  f"broker {result['broker_cpu_us_per_job']} us  "
                  f"({jobs:,} jobs, {in_flight} in flight)")
        sse_steps = [(int(n), int(r)) for n in args.sse_streams.split(",")
                     for r in args.sse_rates.split(",") if args.sse_jobs]
        for streams, rate in sse_steps:
            before = {"gateway": cpu_seconds(gateway.pid), "broker": cpu_seconds(broker.pid)}
            result = asyncio.run(sse_step(args.port, f"jobwire://{broker.address}",
                                          args.sse_jobs, streams, rate))
            events = max(1, result["events_received"] + result["events_dropped"])
            result["gateway_cpu_us_per_event"] = round(
                (cpu_seconds(gateway.pid) - before["gateway"]) / events * 1e6, 1)
            results.append(result)
            print(f"{result['step']:<26} {result['events_per_s_total'] or 0:>8,} events/s "
                  f"({result['events_per_s_per_stream'] or 0:,}/s per stream)  received "
                  f"{result['events_received']:,}, dropped {result['events_dropped']:,} in "
                  f"{result['lagged_events']} lagged  gateway CPU/event "
                  f"{result['gateway_cpu_us_per_event']} us  (producer "
                  f"{result['enqueue_jobs_per_s']:,} jobs/s over TCP)")
    finally:
        if gateway is not None and gateway.poll() is None:
            gateway.send_signal(signal.SIGTERM)
            gateway.wait(30)
        broker.stop()
    if args.json is not None:
        args.json.write_text(json.dumps({"sync": args.sync, "results": results}, indent=2))


if __name__ == "__main__":
    main()
