"""A raw-socket load generator: one-job ``enqueue`` requests with K in flight, no client library.

It stands for a client written from ``protocol/SPEC.md`` in another language (Node, Go...):
a blocking socket, no write coalescing. Two ways of writing:

- ``split``: every request in its own ``send()`` (one frame per write, as a naive client writes),
  so the broker may get one request per read and pay its per-read cost per request;
- ``joined``: the requests made after one ``recv()`` go out in one ``send()`` (what the Python
  client's per-loop-turn coalescing does).

Each reply is answered at once by a new request, so ``--in-flight`` stay outstanding (spread
over ``--connections`` sockets: many connections each sending a little is where the broker's
per-read work adds up). The run
reports jobs/s (wall clock: noise on a loaded machine), the broker's CPU time per job (psutil,
user + system: the figure to compare), the generator's own, and its ``send``/``recv`` counts.

::

    python -m bench.rawload --jobs 50000 --rounds 3           # its own broker, --sync full
    python -m bench.rawload --connect 127.0.0.1:7400 --broker-pid PID --mode split
"""

from __future__ import annotations

import argparse
import json
import selectors
import socket
import statistics
import sys
import time
from typing import Any, Final

import psutil

from bench.broker_proc import BrokerProcess
from protocol.codec import FrameDecoder, FrameEncoder
from protocol.messages import PROTOCOL_VERSION, Kind, request_message
from protocol.model import JobSpec
from protocol.operations import Enqueue, Hello

MODES: Final = ("split", "joined")
JOB_NAME: Final = "raw"


class RawClient:
    """One blocking socket speaking the protocol by hand."""

    def __init__(self, address: str, token: str | None) -> None:
        host, _, port = address.rpartition(":")
        self.sock = socket.create_connection((host, int(port)))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.encoder = FrameEncoder()
        self.decoder = FrameDecoder(1 << 30)
        self.sends = 0
        self.recvs = 0
        self.next_id = 1
        self.send(self.frame(Hello(PROTOCOL_VERSION, "jobwire-rawload", token)))
        self.replies()  # the hello reply

    def frame(self, request: Any) -> bytes:
        request_id, self.next_id = self.next_id, self.next_id + 1
        return self.encoder.frame(request_message(request_id, request))

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)
        self.sends += 1

    def replies(self) -> int:
        """Block for at least one message; return how many replies the read brought.

        Raises:
            RuntimeError: the broker answered with an error or closed the connection.
        """
        while True:
            data = self.sock.recv(1 << 20)
            if not data:
                raise RuntimeError("the broker closed the connection")
            self.recvs += 1
            self.decoder.feed(data)
            count = 0
            while (message := self.decoder.next_message()) is not None:
                if message[0] != Kind.REPLY:
                    raise RuntimeError(f"broker answered {message!r}")
                count += 1
            if count:
                return count

    def close(self) -> None:
        self.sock.close()


def run(address: str, broker_pid: int | None, *, mode: str, jobs: int, in_flight: int,
        payload_bytes: int, queue: str, token: str | None, connections: int = 1,
        ) -> dict[str, Any]:
    """One measured run (``in_flight`` requests spread over ``connections`` sockets)."""
    clients = [RawClient(address, token) for _ in range(connections)]
    broker = psutil.Process(broker_pid) if broker_pid else None
    request = Enqueue(queue, (JobSpec(None, JOB_NAME, b"x" * payload_bytes),))
    joined = mode == "joined"

    def send(client: RawClient, count: int) -> None:
        if joined:
            client.send(b"".join(client.frame(request) for _ in range(count)))
        else:
            for _ in range(count):
                client.send(client.frame(request))

    selector = selectors.DefaultSelector()
    for client in clients:
        selector.register(client.sock, selectors.EVENT_READ, client)
    cpu0 = _cpu(broker)
    own0 = time.process_time()
    started = time.perf_counter()
    sent = done = 0
    for index, client in enumerate(clients):
        share = min(in_flight // connections + (index < in_flight % connections), jobs - sent)
        if share > 0:
            send(client, share)
            sent += share
    while done < jobs:
        for key, _ in selector.select():
            client = key.data
            answered = client.replies()
            done += answered
            more = min(answered, jobs - sent)
            if more > 0:
                sent += more
                send(client, more)
    seconds = time.perf_counter() - started
    own = time.process_time() - own0
    cpu = _cpu(broker) - cpu0 if broker is not None else None
    selector.close()
    for client in clients:
        client.close()
    return {
        "mode": mode, "jobs": jobs, "in_flight": in_flight, "connections": connections,
        "seconds": round(seconds, 3),
        "jobs_per_s": round(jobs / seconds, 1),
        "broker_cpu_s": None if cpu is None else round(cpu, 3),
        "broker_us_per_job": None if cpu is None else round(cpu / jobs * 1e6, 2),
        "load_us_per_job": round(own / jobs * 1e6, 2),
        "sends": sum(c.sends for c in clients), "recvs": sum(c.recvs for c in clients),
    }


def _cpu(process: psutil.Process | None) -> float:
    if process is None:
        return 0.0
    times = process.cpu_times()
    return float(times.user + times.system)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.rawload", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=50_000, help="jobs per run (default 50,000)")
    parser.add_argument("--in-flight", type=int, default=100,
                        help="requests outstanding, over all connections (default 100)")
    parser.add_argument("--connections", type=int, default=1,
                        help="sockets sharing the in-flight requests (default 1)")
    parser.add_argument("--payload-bytes", type=int, default=100)
    parser.add_argument("--mode", choices=(*MODES, "both"), default="both",
                        help="split: one send per request; joined: one send per batch of "
                             "replies; both (default): alternate them")
    parser.add_argument("--rounds", type=int, default=3,
                        help="runs per mode, alternating modes (default 3); medians reported")
    parser.add_argument("--sync", default="full", help="--sync of the own broker")
    parser.add_argument("--connect", metavar="HOST:PORT", help="use a running broker")
    parser.add_argument("--broker-pid", type=int, help="with --connect: its pid, for CPU time")
    parser.add_argument("--token")
    parser.add_argument("--json", metavar="PATH", help="write every run as JSON (- for stdout)")
    args = parser.parse_args(argv)
    modes = MODES if args.mode == "both" else (args.mode,)
    own: BrokerProcess | None = None
    if args.connect:
        address, pid = args.connect, args.broker_pid
    else:
        own = BrokerProcess(sync=args.sync)
        own.start()
        address, pid = own.address, own.pid
    runs: list[dict[str, Any]] = []
    try:
        for round_ in range(args.rounds):
            for mode in modes:
                result = run(address, pid, mode=mode, jobs=args.jobs, in_flight=args.in_flight,
                             payload_bytes=args.payload_bytes, token=args.token,
                             connections=args.connections,
                             queue=f"rawload-{mode}-{round_}-{time.time_ns()}")
                runs.append(result)
                sys.stderr.write(json.dumps(result) + "\n")
    finally:
        if own is not None:
            own.stop()
            own.close()
    for mode in modes:
        mine = [r for r in runs if r["mode"] == mode]
        rate = statistics.median(r["jobs_per_s"] for r in mine)
        line = f"{mode:6} median of {len(mine)}: {rate:>9,.0f} jobs/s"
        if pid:
            cpu = statistics.median(r["broker_us_per_job"] for r in mine)
            line += f", broker {cpu:.1f} µs/job"
        load = statistics.median(r["load_us_per_job"] for r in mine)
        sys.stdout.write(line + f", load {load:.1f} µs/job\n")
    if args.json:
        text = json.dumps(runs, indent=2)
        if args.json == "-":
            sys.stdout.write(text + "\n")
        else:
            with open(args.json, "w", encoding="utf-8") as out:
                out.write(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
